package cmd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
	"github.com/bridge-dev/bridge/pkg/store/pgtest"
)

// roundRobin is the load balancer in front of the replicas: each request
// goes to the next backend; one that refuses or drops the connection is
// skipped and the request tried on the next (the body is kept for that),
// as an ingress with retries on connection errors does. A request that
// every backend failed is answered 502.
type roundRobin struct {
	// gate lets set wait for the requests already sent to the old
	// backends, as a Service's endpoints change before the old pod's
	// connections drain: no request is sent to a backend after set.
	gate     sync.RWMutex
	mu       sync.Mutex
	backends []string
	next     int
	retried  atomic.Int64
}

func (rr *roundRobin) set(i int, addr string) {
	rr.gate.Lock()
	defer rr.gate.Unlock()
	rr.mu.Lock()
	defer rr.mu.Unlock()
	rr.backends[i] = addr
}

func (rr *roundRobin) pick() []string {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	rr.next++
	out := make([]string, 0, len(rr.backends))
	for i := range rr.backends {
		if b := rr.backends[(rr.next+i)%len(rr.backends)]; b != "" {
			out = append(out, b)
		}
	}
	return out
}

func (rr *roundRobin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rr.gate.RLock()
	defer rr.gate.RUnlock()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for i, addr := range rr.pick() {
		if i > 0 {
			rr.retried.Add(1)
		}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+addr+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			continue
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			continue // refused, or the replica died with the request: the next one gets it
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		_ = resp.Body.Close()
		return
	}
	http.Error(w, "no replica answered", http.StatusBadGateway)
}

// TestReplicasSurviveKill: three `bridge serve` processes on one PostgreSQL
// database behind a round-robin balancer take a burst of messages over many
// conversations; one of them is killed (SIGKILL) in the middle of it. Every
// message is answered exactly once (the user token resolves every post the
// dead replica left in doubt), each conversation's answers in the order of
// its messages.
func TestReplicasSurviveKill(t *testing.T) {
	database := pgtest.URL(t)
	bin := buildBridge(t)
	dir := t.TempDir()
	const key = "app-replicas0000000000000001"
	dify := simulate.NewDify(simulate.DifyApp{Key: key, Name: "Support", Mode: "chat"})
	// Slow enough that the killed replica dies holding events mid-answer.
	dify.SetLatency(40 * time.Millisecond)
	difySrv := httptest.NewServer(dify)
	defer difySrv.Close()
	defer dify.Close()
	cw := simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: "bot-replicas", UserToken: "user-replicas",
		RetryDelay: 200 * time.Millisecond})
	cwSrv := httptest.NewServer(cw)
	defer cwSrv.Close()
	defer cw.Close()

	s, err := store.Open(t.Context(), database)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddRoute(t.Context(), &store.Route{InboxID: 1, DifyKey: key, Mode: store.ModeAuto, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"BRIDGE_DATABASE=" + database,
		"BRIDGE_CHATWOOT_BASE_URL=" + cwSrv.URL,
		"BRIDGE_CHATWOOT_API_TOKEN=bot-replicas",
		"BRIDGE_CHATWOOT_USER_TOKEN=user-replicas",
		"BRIDGE_CHATWOOT_WEBHOOK_SECRET=replicas-secret",
		"BRIDGE_CHATWOOT_ECHO_WAIT=300ms",
		"BRIDGE_DIFY_BASE_URL=" + difySrv.URL + "/v1",
		"BRIDGE_WORKER_LEASE=2s",
		"BRIDGE_LOG_FORMAT=json",
		"XDG_CONFIG_HOME=" + dir,
	}
	rr := &roundRobin{backends: make([]string, 3)}
	procs := make([]*proc, 3)
	for i := range procs {
		procs[i] = startServe(t, bin, env)
		rr.set(i, procs[i].addr)
	}
	front := httptest.NewServer(rr)
	defer front.Close()
	hook := front.URL + "/webhooks/chatwoot"
	cw.SetWebhook(hook, "replicas-secret")
	cw.AddInbox(1, "Website", hook) // an agent bot inbox: Chatwoot retries a 500

	const convs, perConv = 30, 6
	ids := make([]int64, convs)
	for i := range ids {
		ids[i] = cw.NewConversation(1, simulate.Contact{ID: int64(100 + i), Name: "C"}, "pending")
	}
	var sent atomic.Int64
	killAt := int64(convs * perConv / 3)
	// The kill lands while replica 1 holds an event: which replica wins a
	// claim is a race, so a count of messages sent alone cannot promise it.
	watch, err := store.Open(t.Context(), database)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	holder := fmt.Sprintf("%%:%d:%%", procs[1].cmd.Process.Pid)
	holds := func() bool {
		var n int
		err := watch.Reader().QueryRow(`SELECT count(*) FROM events WHERE status = 'working' AND lease_owner LIKE $1`, holder).Scan(&n)
		return err == nil && n > 0
	}
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		for sent.Load() < killAt || !holds() {
			if sent.Load() == convs*perConv {
				break // every message sent and replica 1 never held one: the assertion below reports it
			}
			time.Sleep(time.Millisecond) // polling a condition, not timing behaviour
		}
		procs[1].signal(syscall.SIGKILL)
		procs[1].exit(10 * time.Second)
		rr.set(1, "") // the balancer notices the dead backend
	}()
	var wg sync.WaitGroup
	for i, conv := range ids {
		wg.Go(func() {
			for m := range perConv {
				d, err := cw.CustomerSays(context.Background(), conv, fmt.Sprintf("c%d m%d", i, m))
				if err != nil || d.Status != http.StatusOK {
					t.Errorf("conversation %d message %d: %d %s %v", conv, m, d.Status, d.Response, err)
				}
				sent.Add(1)
			}
		})
	}
	wg.Wait()
	<-killed

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := cw.WaitFor(ctx, func() bool {
		for _, c := range ids {
			if countBot(cw, c) < perConv {
				return false
			}
		}
		return true
	}); err != nil {
		for _, i := range []int{0, 2} {
			t.Logf("replica %d:\n%s", i, procs[i].stderr.String())
		}
		t.Fatal("not every message was answered")
	}
	// Whatever is still in flight lands before the count.
	for _, i := range []int{0, 2} {
		procs[i].signal(syscall.SIGTERM)
		if code := procs[i].exit(15 * time.Second); code != 0 {
			t.Errorf("replica %d exit code %d\n%s", i, code, procs[i].stderr.String())
		}
	}
	for i, c := range ids {
		var got []string
		for _, m := range cw.Messages(c) {
			if m.MessageType == "outgoing" && !m.Private && m.SenderType == "agent_bot" {
				got = append(got, m.Content)
			}
		}
		var want []string
		for m := range perConv {
			want = append(want, fmt.Sprintf("Answer to: c%d m%d", i, m))
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("conversation %d: answers %q, want %q", c, got, want)
		}
	}
	s, err = store.Open(t.Context(), database)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, err := s.CountOpen(t.Context()); err != nil || n != 0 {
		t.Errorf("%d events still open, %v", n, err)
	}
	// The kill landed mid-event: the dead replica's leases ran out and the
	// others resumed what it held.
	var reclaimed int
	if err := s.Reader().QueryRow(`SELECT count(*) FROM hops WHERE stage = 'worker' AND outcome = 'reclaimed'`).Scan(&reclaimed); err != nil {
		t.Fatal(err)
	}
	if reclaimed == 0 {
		t.Errorf("no event was reclaimed from the killed replica:\n%s", procs[1].stderr.String())
	}
	t.Logf("events resumed from the killed replica: %d; requests the balancer moved to another replica: %d", reclaimed, rr.retried.Load())
}

// TestReplicasRollingRestart: a rolling upgrade of two replicas under a
// continuous stream of webhooks, as Kubernetes does it with
// contrib/kubernetes: a new replica starts and is ready, the balancer stops
// sending to an old one (its endpoint leaves the Service during preStop),
// which then gets SIGTERM and drains. No request fails at the balancer, the
// old replicas exit 0 having handed back what they could not finish, and
// every message is answered once, in order.
func TestReplicasRollingRestart(t *testing.T) {
	database := pgtest.URL(t)
	bin := buildBridge(t)
	dir := t.TempDir()
	const key = "app-rolling00000000000000001"
	dify := simulate.NewDify(simulate.DifyApp{Key: key, Name: "Support", Mode: "chat"})
	dify.SetLatency(20 * time.Millisecond)
	difySrv := httptest.NewServer(dify)
	defer difySrv.Close()
	defer dify.Close()
	cw := simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: "bot-rolling", UserToken: "user-rolling"})
	cwSrv := httptest.NewServer(cw)
	defer cwSrv.Close()
	defer cw.Close()
	s, err := store.Open(t.Context(), database)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddRoute(t.Context(), &store.Route{InboxID: 1, DifyKey: key, Mode: store.ModeAuto, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"BRIDGE_DATABASE=" + database,
		"BRIDGE_CHATWOOT_BASE_URL=" + cwSrv.URL,
		"BRIDGE_CHATWOOT_API_TOKEN=bot-rolling",
		"BRIDGE_CHATWOOT_USER_TOKEN=user-rolling",
		"BRIDGE_CHATWOOT_WEBHOOK_SECRET=rolling-secret",
		"BRIDGE_DIFY_BASE_URL=" + difySrv.URL + "/v1",
		"BRIDGE_LOG_FORMAT=json",
		"XDG_CONFIG_HOME=" + dir,
	}
	rr := &roundRobin{backends: make([]string, 2)}
	old := []*proc{startServe(t, bin, env), startServe(t, bin, env)}
	rr.set(0, old[0].addr)
	rr.set(1, old[1].addr)
	front := httptest.NewServer(rr)
	defer front.Close()
	cw.AddInbox(1, "Website", "")
	cw.SetWebhook(front.URL+"/webhooks/chatwoot", "rolling-secret")

	const convs = 10
	ids := make([]int64, convs)
	for i := range ids {
		ids[i] = cw.NewConversation(1, simulate.Contact{ID: int64(100 + i), Name: "C"}, "pending")
	}
	var sent atomic.Int64
	stop := make(chan struct{})
	perConv := make([]int, convs)
	var wg sync.WaitGroup
	for i, conv := range ids {
		wg.Go(func() {
			for m := 0; ; m++ {
				select {
				case <-stop:
					perConv[i] = m
					return
				default:
				}
				d, err := cw.CustomerSays(context.Background(), conv, fmt.Sprintf("c%d m%d", i, m))
				if err != nil || d.Status != http.StatusOK {
					t.Errorf("conversation %d message %d: %d %s %v", conv, m, d.Status, d.Response, err)
				}
				sent.Add(1)
			}
		})
	}
	waitSent := func(n int64) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); sent.Load() < n; {
			if time.Now().After(deadline) {
				t.Fatalf("only %d webhooks sent, want %d", sent.Load(), n)
			}
			time.Sleep(time.Millisecond) // polling a counter, not timing behaviour
		}
	}
	waitSent(60)
	for i := range old {
		fresh := startServe(t, bin, env) // maxSurge 1: the new pod first
		rr.set(i, fresh.addr)            // preStop: the old endpoint leaves the Service
		old[i].signal(syscall.SIGTERM)   // then SIGTERM: drain
		if code := old[i].exit(20 * time.Second); code != 0 {
			t.Errorf("old replica %d exit code %d\n%s", i, code, old[i].stderr.String())
		}
		waitSent(sent.Load() + 60)
	}
	close(stop)
	wg.Wait()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := cw.WaitFor(ctx, func() bool {
		for i, c := range ids {
			if countBot(cw, c) < perConv[i] {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal("not every message was answered")
	}
	if n := rr.retried.Load(); n != 0 {
		t.Errorf("%d requests failed on a replica and were sent to another", n)
	}
	for i, c := range ids {
		var got []string
		for _, m := range cw.Messages(c) {
			if m.MessageType == "outgoing" && !m.Private && m.SenderType == "agent_bot" {
				got = append(got, m.Content)
			}
		}
		var want []string
		for m := range perConv[i] {
			want = append(want, fmt.Sprintf("Answer to: c%d m%d", i, m))
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("conversation %d: answers %q, want %q", c, got, want)
		}
	}
}
