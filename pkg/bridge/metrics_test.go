package bridge

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// runCore runs e.core's workers (the env must be built with noRun) until
// the returned stop is called; stop waits for Run to return, so everything
// the workers did happens before it returns.
func runCore(t *testing.T, e *env) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.core.Run(ctx) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// scrape GETs /metrics and returns every sample by its series as printed,
// e.g. `bridge_handoffs_total{reason="customer_asked"}`.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q", ct)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad sample line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// family returns the samples of one metric name (without _bucket lines).
func family(samples map[string]float64, name string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range samples {
		if k == name || strings.HasPrefix(k, name+"{") {
			out[k] = v
		}
	}
	return out
}

func wantSamples(t *testing.T, samples map[string]float64, name string, want map[string]float64) {
	t.Helper()
	got := family(samples, name)
	if !maps.Equal(got, want) {
		t.Errorf("%s:\n got  %s\n want %s", name, fmtSamples(got), fmtSamples(want))
	}
}

func fmtSamples(m map[string]float64) string {
	keys := slices.Sorted(maps.Keys(m))
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "\n   %s %g", k, m[k])
	}
	return sb.String()
}

func signedPost(t *testing.T, url, secret string, ts time.Time, body []byte) response {
	t.Helper()
	unix := ts.Unix()
	return post(t, url, body, map[string]string{
		"X-Chatwoot-Timestamp": strconv.FormatInt(unix, 10),
		"X-Chatwoot-Signature": chatwoot.Sign(secret, unix, body),
	})
}

// TestMetricsAfterConversation scrapes /metrics after a scripted
// conversation (an answered question, a request for a human, a message in
// an inbox without a route, a forged and a malformed delivery) and checks
// that every series has the value that conversation implies.
func TestMetricsAfterConversation(t *testing.T) {
	e := newEnv(t, envOptions{secret: true, noRun: true, cwOpts: func(o *simulate.ChatwootOptions) { o.EchoSync = true }})
	stop := runCore(t, e)
	route := strconv.FormatInt(e.route.ID, 10)

	conv := e.cw.NewConversation(1, simulate.Contact{ID: 7, Name: "Jane"}, "pending")
	if ev := e.waitFinal(e.say(conv, "Where is my order?").EventID); ev.Status != store.StatusAnswered {
		t.Fatalf("first message: %s %s", ev.Status, ev.LastError)
	}
	if ev := e.waitFinal(e.say(conv, "I want to talk to a human").EventID); ev.Status != store.StatusHandedOff {
		t.Fatalf("second message: %s %s", ev.Status, ev.LastError)
	}
	unrouted := e.cw.NewConversation(2, simulate.Contact{ID: 8, Name: "Bob"}, "pending")
	if a := e.say(unrouted, "hello?"); a.Reason != ReasonNoRoute {
		t.Fatalf("unrouted: %+v", a)
	}
	hook := e.srv.URL + "/webhooks/chatwoot"
	if r := signedPost(t, hook, "not-the-secret", time.Now(), []byte(`{"event":"message_created"}`)); r.code != http.StatusUnauthorized {
		t.Fatalf("forged delivery: %d %s", r.code, r.body)
	}
	if r := signedPost(t, hook, testSecret, time.Now(), []byte(`{"event":`)); r.code != http.StatusBadRequest {
		t.Fatalf("malformed delivery: %d %s", r.code, r.body)
	}
	// Everything the workers did is done once Run has returned.
	stop()

	// The webhooks bridge saw, as its acks told the simulated Chatwoot:
	// besides the two questions and the unrouted message, the echoes of
	// bridge's own posts (answer, handoff message, handoff note) and of the
	// status change to open.
	ignored := map[string]int{}
	for _, d := range e.cw.Deliveries() {
		if a := ackOf(t, d); a.Status == "ignored" {
			ignored[a.Reason]++
		}
	}
	wantIgnored := map[string]int{ReasonOwnMessage: 3, ReasonNoRoute: 1, ReasonNotMessageCreated: 1}
	if !maps.Equal(ignored, wantIgnored) {
		t.Fatalf("ignored deliveries = %v, want %v", ignored, wantIgnored)
	}

	m := scrape(t, e.srv.URL)
	wantSamples(t, m, "bridge_webhooks_total", map[string]float64{
		`bridge_webhooks_total{outcome="accepted",reason="",status="200"}`:                   2,
		`bridge_webhooks_total{outcome="ignored",reason="own_message",status="200"}`:         3,
		`bridge_webhooks_total{outcome="ignored",reason="no_route",status="200"}`:            1,
		`bridge_webhooks_total{outcome="ignored",reason="not_message_created",status="200"}`: 1,
		`bridge_webhooks_total{outcome="rejected",reason="",status="401"}`:                   1,
		`bridge_webhooks_total{outcome="rejected",reason="",status="400"}`:                   1,
	})
	wantSamples(t, m, "bridge_events_finished_total", map[string]float64{
		`bridge_events_finished_total{state="answered"}`:   1,
		`bridge_events_finished_total{state="handed_off"}`: 1,
	})
	wantSamples(t, m, "bridge_handoffs_total", map[string]float64{
		`bridge_handoffs_total{reason="customer_asked"}`: 1,
	})
	// One Dify exchange: the request for a human never reached Dify.
	wantSamples(t, m, "bridge_dify_request_seconds_count", map[string]float64{
		`bridge_dify_request_seconds_count{outcome="ok",route="` + route + `"}`: 1,
	})
	wantSamples(t, m, "bridge_dify_first_token_seconds_count", map[string]float64{
		`bridge_dify_first_token_seconds_count{route="` + route + `"}`: 1,
	})
	// The answer, the handoff message and the handoff note; the status set
	// open; typing on and off around the one Dify exchange.
	wantSamples(t, m, "bridge_chatwoot_request_seconds_count", map[string]float64{
		`bridge_chatwoot_request_seconds_count{call="messages",status="200"}`:             3,
		`bridge_chatwoot_request_seconds_count{call="toggle_status",status="200"}`:        1,
		`bridge_chatwoot_request_seconds_count{call="toggle_typing_status",status="200"}`: 2,
	})
	wantSamples(t, m, "bridge_retries_total", map[string]float64{})
	wantSamples(t, m, "bridge_queue_depth", map[string]float64{"bridge_queue_depth": 0})
	// The two questions and the four ignored webhooks were acknowledged.
	if got := m["bridge_webhook_ack_seconds_count"]; got < 6 {
		t.Errorf("bridge_webhook_ack_seconds_count = %g, want at least 6", got)
	}
	// The Go and process collectors.
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_resident_memory_bytes", "process_open_fds"} {
		if _, ok := m[name]; !ok {
			t.Errorf("%s missing from /metrics", name)
		}
	}
	for k := range m {
		if !strings.HasPrefix(k, "bridge_") && !strings.HasPrefix(k, "go_") && !strings.HasPrefix(k, "process_") &&
			!strings.HasPrefix(k, "promhttp_") {
			t.Errorf("series %s has no bridge_, go_ or process_ prefix", k)
		}
	}
}

// TestMetricsRetriesAndFailures: a Dify outage retried then failed, and a
// Chatwoot 500 retried, show up as retries, error latencies and an ai_failed
// handoff.
func TestMetricsRetriesAndFailures(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true, cwOpts: func(o *simulate.ChatwootOptions) { o.EchoSync = true }})
	e.dify.Fail(testDifyKey, simulate.DifyFault{Status: 503}, simulate.DifyFault{Status: 503}, simulate.DifyFault{Status: 503})
	e.cw.Fail("messages", simulate.ChatwootFault{Status: 500})
	stop := runCore(t, e)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 3, Name: "Ann"}, "pending")
	if ev := e.waitFinal(e.say(conv, "hello").EventID); ev.Status != store.StatusHandedOff {
		t.Fatalf("event: %s %s", ev.Status, ev.LastError)
	}
	stop()
	m := scrape(t, e.srv.URL)
	route := strconv.FormatInt(e.route.ID, 10)
	wantSamples(t, m, "bridge_retries_total", map[string]float64{
		`bridge_retries_total{upstream="dify"}`:     2, // dify.max_retries
		`bridge_retries_total{upstream="chatwoot"}`: 1,
	})
	wantSamples(t, m, "bridge_dify_request_seconds_count", map[string]float64{
		`bridge_dify_request_seconds_count{outcome="error",route="` + route + `"}`: 3,
	})
	wantSamples(t, m, "bridge_handoffs_total", map[string]float64{`bridge_handoffs_total{reason="ai_failed"}`: 1})
	wantSamples(t, m, "bridge_events_finished_total", map[string]float64{`bridge_events_finished_total{state="handed_off"}`: 1})
	if got := m[`bridge_chatwoot_request_seconds_count{call="messages",status="500"}`]; got != 1 {
		t.Errorf("messages answered 500: count %g, want 1", got)
	}
}

// TestMetricsQueueDepth: the queue depth counts accepted events until they
// finish.
func TestMetricsQueueDepth(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true})
	e.dify.Hold()
	runCore(t, e)
	a := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	b := e.cw.NewConversation(1, simulate.Contact{ID: 2, Name: "B"}, "pending")
	first := e.say(a, "one")
	e.say(a, "two") // waits behind "one": one at a time per conversation
	third := e.say(b, "three")
	if err := e.dify.WaitFor(t.Context(), func() bool { return e.dify.Held() == 2 }); err != nil {
		t.Fatal(err)
	}
	if got := scrape(t, e.srv.URL)["bridge_queue_depth"]; got != 3 {
		t.Errorf("queue depth with three open events = %g, want 3", got)
	}
	e.dify.Release()
	e.waitFinal(first.EventID)
	e.waitFinal(third.EventID)
	e.wait("all answered", func() bool {
		n, err := e.db.CountOpen(t.Context())
		return err == nil && n == 0
	})
	if got := scrape(t, e.srv.URL)["bridge_queue_depth"]; got != 0 {
		t.Errorf("queue depth after the answers = %g, want 0", got)
	}
}

// TestMetricsWithoutDatabase: /metrics still answers when the journal
// cannot be read; only the queue depth is missing.
func TestMetricsWithoutDatabase(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true})
	e.core.watchQueue()
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	m := scrape(t, e.srv.URL)
	if _, ok := m["bridge_queue_depth"]; ok {
		t.Errorf("queue depth reported without a database: %v", m["bridge_queue_depth"])
	}
	if _, ok := m["go_goroutines"]; !ok {
		t.Error("go_goroutines missing")
	}
}

func TestIgnoredLabelIsBounded(t *testing.T) {
	cases := map[string]string{
		ReasonNoRoute:                  ReasonNoRoute,
		ReasonOwnMessage:               ReasonOwnMessage,
		ReasonStatusPrefix + "open":    "conversation_status",
		ReasonStatusPrefix + "x\"y\nz": "conversation_status",
		"something new":                "other",
		"":                             "other",
	}
	for in, want := range cases {
		if got := ignoredLabel(in); got != want {
			t.Errorf("ignoredLabel(%q) = %q, want %q", in, got, want)
		}
	}
}
