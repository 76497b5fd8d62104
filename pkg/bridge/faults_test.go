package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// Fault tests: each reproduces a failure seen against a real `bridge serve`
// (a lock held by another connection, an unwritable journal, a killed
// process, hostile or slow clients) and checks what bridge promises then.

// pollUntil re-checks cond until it holds, for conditions nothing signals
// (log lines, counters of the store).
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logLines returns the JSON log lines whose msg starts with prefix.
func logLines(logs *syncBuffer, prefix string) []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			if msg, _ := m["msg"].(string); strings.HasPrefix(msg, prefix) {
				out = append(out, m)
			}
		}
	}
	return out
}

// TestFaultStartWhileLocked: serve starting while another process holds the
// journal locked. Start-up keeps trying while the probes say so (alive, not
// ready), and goes on once the lock goes; a lock that outlasts the start-up
// window ends Run with an error, which /healthz reports, instead of workers
// silently never starting.
func TestFaultStartWhileLocked(t *testing.T) {
	fast := []store.Option{store.WithBusyTimeout(20 * time.Millisecond), store.WithRetry(50 * time.Millisecond)}

	t.Run("OKLockGoes", func(t *testing.T) {
		e := newEnv(t, envOptions{noRun: true, storeOpts: fast})
		unlock := lockDatabase(t, e.db.Path)
		stop := runCore(t, e)
		defer stop()
		pollUntil(t, "start-up met the lock", func() bool { return len(logLines(e.logs, "cannot resume events yet")) > 0 })
		if r := get(t, e.srv.URL+"/readyz"); r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "starting") {
			t.Errorf("readyz while start-up waits: %d %q", r.code, r.body)
		}
		if r := get(t, e.srv.URL+"/healthz"); r.code != http.StatusOK {
			t.Errorf("healthz while start-up waits: %d %q", r.code, r.body)
		}
		unlock()
		conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
		if ev := e.waitFinal(e.say(conv, "hello").EventID); ev.Status != store.StatusAnswered {
			t.Fatalf("after the lock went: event %s (%s)", ev.Status, ev.LastError)
		}
		if r := get(t, e.srv.URL+"/readyz"); r.code != http.StatusOK {
			t.Errorf("readyz once running: %d %q", r.code, r.body)
		}
	})

	t.Run("ErrLockOutlastsStart", func(t *testing.T) {
		e := newEnv(t, envOptions{noRun: true, storeOpts: fast,
			tune: func(o *Options) { o.StartupRetryFor = 300 * time.Millisecond }})
		lockDatabase(t, e.db.Path)
		done := make(chan error, 1)
		go func() { done <- e.core.Run(context.Background()) }()
		var err error
		select {
		case err = <-done:
		case <-time.After(15 * time.Second):
			t.Fatal("Run kept trying past its start-up window")
		}
		if err == nil || !strings.Contains(err.Error(), "resume events") || !store.IsStorage(err) {
			t.Fatalf("Run = %v; want the resume failure", err)
		}
		r := get(t, e.srv.URL+"/healthz")
		if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "workers stopped") || !strings.Contains(r.body, "locked") {
			t.Errorf("healthz after the workers failed: %d %q", r.code, r.body)
		}
		if r := get(t, e.srv.URL+"/readyz"); r.code != http.StatusServiceUnavailable {
			t.Errorf("readyz after the workers failed: %d %q", r.code, r.body)
		}
	})
}

// TestFaultJournalUnwritableInFlight: the disk fills for a while when four
// answers are in flight. Their bookkeeping fails; each event goes back in
// the queue once the journal takes writes, is answered once, and a later
// message in each conversation is answered too. No event stays `working`,
// and nobody is told the AI failed.
func TestFaultJournalUnwritableInFlight(t *testing.T) {
	e := newEnv(t, envOptions{storeOpts: []store.Option{store.WithRetry(100 * time.Millisecond)}})
	convs := make([]int64, 4)
	ids := make([]int64, 4)
	e.dify.Hold()
	for i := range convs {
		convs[i] = e.cw.NewConversation(1, simulate.Contact{ID: int64(i + 1), Name: fmt.Sprint("C", i)}, "pending")
		ids[i] = e.say(convs[i], fmt.Sprintf("question %d", i)).EventID
	}
	pollUntil(t, "four questions at Dify", func() bool { return e.dify.Held() == 4 })

	full := errors.New("no space left on device (injected)")
	e.db.SetCommitFault(func() error { return full })
	e.dify.Release()
	pollUntil(t, "all four workers found the journal unwritable", func() bool {
		seen := map[float64]bool{}
		for _, l := range logLines(e.logs, "event failed") {
			if id, ok := l["event_id"].(float64); ok {
				seen[id] = true
			}
		}
		return len(seen) == 4
	})
	for _, id := range ids {
		if ev := e.event(id); ev.Status != store.StatusWorking {
			t.Fatalf("event %d is %s while the journal is unwritable; want working (held by its worker)", id, ev.Status)
		}
	}
	if n, _, _ := e.db.CountStaleWorking(t.Context(), time.Now().Add(time.Hour)); n != 4 {
		t.Fatalf("%d events working, want the 4 in flight", n)
	}
	e.db.SetCommitFault(nil)

	for i, id := range ids {
		ev := e.waitFinal(id)
		if ev.Status != store.StatusAnswered {
			t.Errorf("event %d ended %s (%s), want answered", id, ev.Status, ev.LastError)
		}
		later := e.waitFinal(e.say(convs[i], "and another thing").EventID)
		if later.Status != store.StatusAnswered {
			t.Errorf("later message in conversation %d ended %s", convs[i], later.Status)
		}
		if got := e.botReplies(convs[i]); len(got) != 2 {
			t.Errorf("conversation %d got %d answers, want 2 (one per message): %q", convs[i], len(got), got)
		}
		if notes := e.notes(convs[i]); len(notes) != 0 {
			t.Errorf("conversation %d got private notes: %q", convs[i], notes)
		}
	}
	m := scrape(t, e.srv.URL)
	if m[`bridge_events_requeued_total{reason="error"}`] < 4 {
		t.Errorf("requeued = %v, want at least 4", m[`bridge_events_requeued_total{reason="error"}`])
	}
	if n, _, _ := e.db.CountStaleWorking(t.Context(), time.Now().Add(time.Hour)); n != 0 {
		t.Errorf("%d events still working", n)
	}
}

// TestFaultLockWhileDifyAnswers: another process holds the journal while
// Dify's answer comes back. A lock shorter than the store's retry window
// costs nothing; a longer one puts the event back in the queue. Either way
// the customer is answered, and no note blames the AI for bridge's storage.
func TestFaultLockWhileDifyAnswers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		retry time.Duration
	}{
		{"ShortLockAbsorbed", 10 * time.Second},
		{"LongLockRequeued", 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{storeOpts: []store.Option{store.WithBusyTimeout(30 * time.Millisecond), store.WithRetry(tc.retry)}})
			conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
			e.dify.Hold()
			id := e.say(conv, "where is my parcel?").EventID
			pollUntil(t, "the question at Dify", func() bool { return e.dify.Held() == 1 })
			unlock := lockDatabase(t, e.db.Path)
			e.dify.Release()
			if tc.retry > time.Second {
				// The lock lasts until the answer's write has met it, or 2s.
				deadline := time.Now().Add(2 * time.Second)
				pollUntil(t, "the answer's write met the lock", func() bool {
					return e.db.Retries() > 0 || time.Now().After(deadline)
				})
			} else {
				pollUntil(t, "the answer's bookkeeping failed", func() bool { return len(logLines(e.logs, "event failed")) > 0 })
			}
			unlock()
			ev := e.waitFinal(id)
			if ev.Status != store.StatusAnswered {
				t.Errorf("event ended %s (%s), want answered", ev.Status, ev.LastError)
			}
			if got := e.botReplies(conv); len(got) != 1 {
				t.Errorf("answers posted: %q, want one", got)
			}
			for _, n := range e.notes(conv) {
				t.Errorf("private note %q: a lock of bridge's journal is not the AI's failure", n)
			}
			if hops, _ := e.db.Hops(t.Context(), id); strings.Contains(fmt.Sprint(hops), "AI failed") {
				t.Errorf("trace blames the AI: %v", hops)
			}
			if asked := len(e.dify.Requests()); tc.retry > time.Second && asked != 1 {
				t.Errorf("Dify was asked %d times: the answer given during the lock was thrown away", asked)
			}
		})
	}
}

// TestFaultStorageErrorIsNotTheAIs: the write that records Dify's answer
// fails once (the journal was locked or full at that instant) and the
// journal is fine again right after. The event is driven again and
// answered; the customer is not handed off with "AI failed: ..." for a
// failure of bridge's own storage.
func TestFaultStorageErrorIsNotTheAIs(t *testing.T) {
	// No retries in the store: the first failure reaches the worker.
	e := newEnv(t, envOptions{storeOpts: []store.Option{store.WithRetry(0)}})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	e.dify.Hold()
	id := e.say(conv, "where is my parcel?").EventID
	pollUntil(t, "the question at Dify", func() bool { return e.dify.Held() == 1 })
	var failed atomic.Bool
	e.db.SetCommitFault(func() error {
		if failed.CompareAndSwap(false, true) {
			return errors.New("database is locked (injected)")
		}
		return nil
	})
	e.dify.Release()
	ev := e.waitFinal(id)
	if !failed.Load() {
		t.Fatal("the fault never fired")
	}
	if ev.Status != store.StatusAnswered {
		t.Errorf("event ended %s (%s), want answered", ev.Status, ev.LastError)
	}
	for _, n := range e.notes(conv) {
		t.Errorf("private note %q: a failure of bridge's journal is not the AI's", n)
	}
	if got := e.botReplies(conv); len(got) != 1 {
		t.Errorf("answers posted: %q, want one", got)
	}
}

// TestFaultHelperClaim is not a test: it is the child process of
// TestFaultOrphanedWorkingEvent, a second bridge process (a replay, say)
// that claims an event and is then killed.
func TestFaultHelperClaim(t *testing.T) {
	path, idText := os.Getenv("BRIDGE_TEST_CLAIM_DB"), os.Getenv("BRIDGE_TEST_CLAIM_ID")
	if path == "" {
		t.Skip("child process of TestFaultOrphanedWorkingEvent")
	}
	id, _ := strconv.ParseInt(idText, 10, 64)
	db, err := store.Open(context.Background(), path, store.WithLease(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Time{}
	err = db.Write(context.Background(), func(tx *store.Tx) error {
		if err := tx.Claim(id); err != nil {
			return err
		}
		if err := tx.UpdateEvent(id, store.EventUpdate{NotBefore: &now}); err != nil {
			return err
		}
		return tx.AddHop(store.Hop{EventID: id, Stage: StageWorker, Outcome: "started", Detail: "another process"})
	})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("claimed")
	select {} // until killed
}

// TestFaultOrphanedWorkingEvent: another process claims an event and is
// killed with SIGKILL. The running server finds the event `working` with no
// worker and no progress for longer than a Dify exchange can take, puts it
// back in the queue and answers it.
func TestFaultOrphanedWorkingEvent(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) {
		o.Debounce = time.Hour // the server leaves the message to the other process
		o.DifyTimeout = 300 * time.Millisecond
		o.OrphanGrace = 200 * time.Millisecond
	}, storeOpts: []store.Option{store.WithLease(time.Second)}}) // PostgreSQL: the killed process's lease ends
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	id := e.say(conv, "hello?").EventID

	child := exec.Command(os.Args[0], "-test.run=^TestFaultHelperClaim$", "-test.v")
	child.Env = append(os.Environ(), "BRIDGE_TEST_CLAIM_DB="+e.db.Path, "BRIDGE_TEST_CLAIM_ID="+strconv.FormatInt(id, 10))
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = t.Output()
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "claimed" {
	}
	if ev := e.event(id); ev.Status != store.StatusWorking {
		t.Fatalf("the other process did not claim event %d: %s", id, ev.Status)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait() // killed: its exit status says so

	ev := e.waitFinal(id)
	if ev.Status != store.StatusAnswered {
		t.Fatalf("orphaned event ended %s (%s), want answered", ev.Status, ev.LastError)
	}
	hops, err := e.db.Hops(t.Context(), id)
	if err != nil || !strings.Contains(fmt.Sprint(hops), "reclaimed") {
		t.Errorf("trace does not say the event was reclaimed: %v, %v", hops, err)
	}
	if got := e.botReplies(conv); len(got) != 1 {
		t.Errorf("answers posted: %q, want one", got)
	}
	reason := "orphaned"
	if e.db.Shared() {
		reason = "lease_expired" // replicas: found by its lease, not by its progress
	}
	if m := scrape(t, e.srv.URL); m[`bridge_events_requeued_total{reason="`+reason+`"}`] != 1 {
		t.Errorf("requeued %s = %v, want 1", reason, m[`bridge_events_requeued_total{reason="`+reason+`"}`])
	}
}

// TestFaultStaleWorkingMetric: an event working without progress for longer
// than dify.timeout shows on /metrics.
func TestFaultStaleWorkingMetric(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.OrphanGrace = time.Hour }})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	e.waitFinal(e.say(conv, "hello").EventID) // the workers run
	if m := scrape(t, e.srv.URL); m["bridge_events_working_stale"] != 0 {
		t.Fatalf("stale working = %v before any", m["bridge_events_working_stale"])
	}
	old := time.Now().Add(-time.Hour).UnixMilli()
	rvWrite(t, e, func(tx *store.Tx) error {
		ev := &store.Event{Event: "message_created", Kind: store.KindMessage, Status: store.StatusWorking,
			AccountID: 1, InboxID: 1, ConversationID: conv + 100, MessageID: 424242, RouteID: e.route.ID, Text: "stuck"}
		if err := tx.InsertEvent(ev); err != nil {
			return err
		}
		_, err := tx.Exec("UPDATE events SET updated_at = ? WHERE id = ?", old, ev.ID)
		return err
	})
	if m := scrape(t, e.srv.URL); m["bridge_events_working_stale"] != 1 {
		t.Errorf("stale working = %v, want 1", m["bridge_events_working_stale"])
	}
}

// TestFaultRejectionsBounded: strangers posting junk with huge headers. The
// server refuses headers beyond what a webhook needs before anything is
// read, caps what the journal keeps of a refusal, and journals only a share
// of each source's refusals (the rest are counted and summed up in the log).
func TestFaultRejectionsBounded(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true})
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = e.core.Server()
	srv.Start()
	defer srv.Close()
	url := srv.URL + "/webhooks/chatwoot"
	size := func() int64 {
		var n int64
		for _, p := range []string{e.db.Path, e.db.Path + "-wal"} {
			if fi, err := os.Stat(p); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	before := size()

	huge := strings.Repeat("d", 1<<20)
	for range 5 {
		r := post(t, url, []byte(`{}`), map[string]string{"X-Chatwoot-Delivery": huge})
		if r.code != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("1 MiB header: %d, want 431", r.code)
		}
	}
	big := strings.Repeat("d", 60<<10)
	const n = 50
	for i := range n {
		r := post(t, url, bytes.Repeat([]byte("{"), 4096), map[string]string{"X-Chatwoot-Delivery": big})
		if r.code != http.StatusBadRequest {
			t.Fatalf("junk %d: %d %s, want 400", i, r.code, r.body)
		}
	}
	evs, err := e.db.ListEvents(t.Context(), store.EventFilter{Status: store.StatusRejected, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 || len(evs) > rejectBurst+1 {
		t.Errorf("%d of %d refusals journaled, want at most %d", len(evs), n, rejectBurst+1)
	}
	for _, ev := range evs {
		if len(ev.DeliveryID) > maxDelivery+len("…") || len(ev.Payload) > rejectedPrefix || len(ev.Reason) > maxReason+len("…") {
			t.Fatalf("event %d keeps delivery %d, payload %d, reason %d bytes", ev.ID, len(ev.DeliveryID), len(ev.Payload), len(ev.Reason))
		}
	}
	m := scrape(t, e.srv.URL)
	if got := m["bridge_webhook_rejections_unjournaled_total"]; int(got) != n-len(evs) {
		t.Errorf("unjournaled = %v, want %d", got, n-len(evs))
	}
	if len(logLines(e.logs, "refused requests not journaled")) == 0 {
		t.Error("no summary of the refusals left out of the journal")
	}
	// Close folds the WAL into the file: what is left is what was kept.
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	if grew := size() - before; grew > 256<<10 {
		t.Errorf("the journal grew by %d bytes for %d refusals", grew, n)
	}
}

// TestFaultSlowUpload: the journal's budget starts once the body is in. A
// valid webhook whose body takes longer than that budget to arrive is
// acknowledged; a client slower than BodyTimeout gets 408 with its own
// reason, not "journal unavailable".
func TestFaultSlowUpload(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true, tune: func(o *Options) {
		o.JournalBudget = 150 * time.Millisecond
		o.BodyTimeout = 2 * time.Second
	}})
	body := readFile(t, "../../testdata/corpus/chatwoot/captured_message_created_incoming_contact_webwidget.json")
	slowPost := func(pause time.Duration) response {
		pr, pw := io.Pipe()
		go func() {
			_, _ = pw.Write(body[:len(body)/2])
			time.Sleep(pause) // the fault: a client that uploads slowly
			_, _ = pw.Write(body[len(body)/2:])
			_ = pw.Close()
		}()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.srv.URL+"/webhooks/chatwoot", pr)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return response{resp.StatusCode, string(b)}
	}
	if r := slowPost(400 * time.Millisecond); r.code != http.StatusOK {
		t.Errorf("body uploaded in 400ms with a 150ms journal budget: %d %s, want 200", r.code, r.body)
	}

	e2 := newEnv(t, envOptions{noRun: true, tune: func(o *Options) { o.BodyTimeout = 100 * time.Millisecond }})
	e = e2
	r := slowPost(time.Second)
	if r.code != http.StatusRequestTimeout || !strings.Contains(r.body, "body not received within") {
		t.Fatalf("body slower than BodyTimeout: %d %s, want 408 with the reason", r.code, r.body)
	}
	var a Ack
	if err := json.Unmarshal([]byte(r.body), &a); err != nil || a.EventID == 0 {
		t.Fatalf("408 not journaled: %s", r.body)
	}
	if ev := e.event(a.EventID); ev.Status != store.StatusRejected || ev.HTTPStatus != http.StatusRequestTimeout {
		t.Errorf("journal = %s %d", ev.Status, ev.HTTPStatus)
	}
	if m := scrape(t, e.srv.URL); m[`bridge_webhooks_total{outcome="error",reason="",status="500"}`] != 0 {
		t.Error("a slow client was counted as a journal error")
	}
}

// TestFaultReadyzBounded: /readyz answers within ReadyTimeout while another
// process holds the journal, with the reason, and recovers when it goes.
func TestFaultReadyzBounded(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.ReadyTimeout = 100 * time.Millisecond }})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	e.waitFinal(e.say(conv, "hello").EventID)
	unlock := lockDatabase(t, e.db.Path)
	// The busy timeout is 2s; the probe must not wait for it.
	client := &http.Client{Timeout: 1500 * time.Millisecond}
	for range 3 {
		resp, err := client.Get(e.srv.URL + "/readyz")
		if err != nil {
			t.Fatalf("readyz during a lock: %v (it must answer within its bound)", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "database not writable") {
			t.Fatalf("readyz during a lock: %d %q", resp.StatusCode, b)
		}
	}
	unlock()
	pollUntil(t, "readyz recovers", func() bool { return get(t, e.srv.URL+"/readyz").code == http.StatusOK })
}

// TestFaultWebhookEdges: a message id of 0 or below (which would slip past
// duplicate detection), data after the JSON document, and a wrong method are
// refused and journaled.
func TestFaultWebhookEdges(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true})
	url := e.srv.URL + "/webhooks/chatwoot"
	msg := func(id string) []byte {
		return []byte(`{"event":"message_created","id":` + id + `,"message_type":"incoming","content":"hi",` +
			`"account":{"id":1},"inbox":{"id":1},"conversation":{"id":9,"status":"pending"},"sender":{"id":1,"name":"A"}}`)
	}
	cases := []struct {
		name   string
		method string
		body   []byte
		status int
		reason string
	}{
		{"ZeroID", http.MethodPost, msg("0"), 400, "positive message id"},
		{"NegativeID", http.MethodPost, msg("-3"), 400, "positive message id"},
		{"TrailingData", http.MethodPost, append(msg("77"), []byte(` {"event":"x"}`)...), 400, "after the JSON document"},
		{"WrongMethod", http.MethodPut, msg("78"), 405, "not allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), c.method, url, bytes.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var a Ack
			if resp.StatusCode != c.status || json.Unmarshal(b, &a) != nil || !strings.Contains(a.Error, c.reason) {
				t.Fatalf("%d %s, want %d with %q", resp.StatusCode, b, c.status, c.reason)
			}
			if a.EventID == 0 {
				t.Fatalf("refusal not journaled: %s", b)
			}
			if ev := e.event(a.EventID); ev.Status != store.StatusRejected || ev.HTTPStatus != c.status {
				t.Errorf("journal = %s %d", ev.Status, ev.HTTPStatus)
			}
		})
	}
}
