package bridge

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
	"github.com/bridge-dev/bridge/pkg/store/pgtest"
)

// replica is one more bridge process (in this test process) on the
// database of an env.
type replica struct {
	core *Bridge
	db   *store.DB
	srv  *httptest.Server
}

// replicate starts n-1 more replicas of e's bridge on e's PostgreSQL
// database, each with a store (and a lease owner) of its own, and points
// Chatwoot's webhooks at a round-robin front over all n. replicas[0] is e's
// own.
func replicate(t *testing.T, e *env, n int) []*replica {
	t.Helper()
	reps := []*replica{{core: e.core, db: e.db, srv: e.srv}}
	for range n - 1 {
		db, err := store.Open(t.Context(), e.database, store.WithLease(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		o := e.core.o
		o.Store, o.Metrics = db, nil
		core := New(o)
		srv := httptest.NewServer(core.Handler())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- core.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
			srv.Close()
			_ = db.Close()
		})
		reps = append(reps, &replica{core: core, db: db, srv: srv})
	}
	var next atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := reps[int(next.Add(1))%len(reps)]
		forward(w, r, rep.srv.URL)
	}))
	t.Cleanup(front.Close)
	hook := front.URL + "/webhooks/chatwoot"
	e.cw.SetWebhook(hook, "")
	e.cw.AddInbox(1, "Website", hook)
	return reps
}

// forward relays a request to base, as a load balancer does.
func forward(w http.ResponseWriter, r *http.Request, base string) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, base+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// TestReplicasAnswerEveryMessageOnceInOrder: three replicas on one
// PostgreSQL database behind a round-robin front. Every message of many
// conversations is answered exactly once, each conversation's answers in
// the order its messages came, and every replica drives a share.
func TestReplicasAnswerEveryMessageOnceInOrder(t *testing.T) {
	e := newEnv(t, envOptions{database: pgtest.URL(t), storeOpts: []store.Option{store.WithLease(2 * time.Second)}})
	e.dify.SetLatency(5 * time.Millisecond)
	reps := replicate(t, e, 3)
	const convs, perConv = 12, 5
	ids := make([]int64, convs)
	for i := range ids {
		ids[i] = e.cw.NewConversation(1, simulate.Contact{ID: int64(i + 1), Name: "C"}, "pending")
	}
	var wg sync.WaitGroup
	for i, conv := range ids {
		wg.Go(func() {
			for m := range perConv {
				if a := e.say(conv, fmt.Sprintf("c%d m%d", i, m)); a.Status != "accepted" {
					t.Errorf("conversation %d message %d: %+v", conv, m, a)
				}
			}
		})
	}
	wg.Wait()
	e.wait("every message answered", func() bool {
		for _, conv := range ids {
			if len(e.botReplies(conv)) < perConv {
				return false
			}
		}
		return true
	})
	for i, conv := range ids {
		var want []string
		for m := range perConv {
			want = append(want, fmt.Sprintf("Answer to: c%d m%d", i, m))
		}
		if got := e.botReplies(conv); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("conversation %d: replies %q, want %q", conv, got, want)
		}
	}
	for i, r := range reps {
		if n := scrape(t, r.srv.URL)[`bridge_events_finished_total{state="answered"}`]; n == 0 {
			t.Errorf("replica %d answered nothing: the work is not shared", i)
		}
	}
}

// TestReplicaTakeoverStopsStreamElsewhere: a human's reply journaled by one
// replica stops the Dify stream another replica runs for the conversation;
// the answer becomes a private draft, never a reply. Once through the
// signal, once (the signal lost) through the poll of streamed
// conversations.
func TestReplicaTakeoverStopsStreamElsewhere(t *testing.T) {
	for _, viaPoll := range []bool{false, true} {
		name := "Signal"
		if viaPoll {
			name = "Poll"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{database: pgtest.URL(t)})
			// A slow stream: its task id comes with the first delta.
			e.dify.SetLatency(4 * time.Second)
			reps := replicate(t, e, 2)
			conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
			id := e.say(conv, "a slow question").EventID
			if err := e.dify.WaitFor(t.Context(), func() bool { return len(e.dify.Requests()) == 1 }); err != nil {
				t.Fatal(err)
			}
			var streaming, other *replica
			e.wait("a replica streams the answer", func() bool {
				for i, r := range reps {
					if _, ok := r.core.running.Load(convKey{1, conv}); ok {
						streaming, other = r, reps[1-i]
						return true
					}
				}
				return false
			})
			if viaPoll {
				// Another process took the conversation over and its signal
				// was lost: only the journal says so.
				if err := other.db.Write(t.Context(), func(tx *store.Tx) error {
					return tx.SetConversationState(1, conv, store.StateHuman, "agent replied")
				}); err != nil {
					t.Fatal(err)
				}
			} else {
				e.cw.SetWebhook(other.srv.URL+"/webhooks/chatwoot", "")
				d, err := e.cw.AgentSays(t.Context(), conv, "I've got this one.", false)
				if err != nil {
					t.Fatal(err)
				}
				if a := ackOf(t, d); a.Status != "accepted" {
					t.Fatalf("takeover ack = %+v", a)
				}
			}
			ev := e.waitFinal(id)
			if ev.Status != store.StatusSuperseded {
				t.Fatalf("event = %s %q", ev.Status, ev.Reason)
			}
			if got := e.botReplies(conv); len(got) != 0 {
				t.Errorf("a superseded answer reached the customer: %q", got)
			}
			e.wait("the stop call", func() bool { return len(e.dify.Stops()) == 1 })
			if got, want := e.dify.Stops()[0], e.dify.Requests()[0].TaskID; got != want {
				t.Errorf("stopped task %q, want %q", got, want)
			}
			if _, ok := streaming.core.running.Load(convKey{1, conv}); ok {
				t.Error("the stream is still registered as running")
			}
		})
	}
}

// TestReplicaDiesMidEventAnotherResumes: the replica driving an event
// dies while Dify answers (its store stops: no renewal, no release); a live
// replica reclaims the event once the lease is over and answers it, once.
func TestReplicaDiesMidEventAnotherResumes(t *testing.T) {
	e := newEnv(t, envOptions{database: pgtest.URL(t), noRun: true})
	e.dify.Hold()
	dying, err := store.Open(t.Context(), e.database, store.WithLease(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	o := e.core.o
	o.Store, o.Metrics = dying, nil
	doomed := New(o)
	dctx, kill := context.WithCancel(context.Background())
	ddone := make(chan error, 1)
	go func() { ddone <- doomed.Run(dctx) }()
	front := httptest.NewServer(doomed.Handler())
	defer front.Close()
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	e.cw.SetWebhook(front.URL+"/webhooks/chatwoot", "")
	id := e.say(conv, "are you there?").EventID
	if err := e.dify.WaitFor(t.Context(), func() bool { return len(e.dify.Requests()) == 1 }); err != nil {
		t.Fatal(err)
	}
	// The live replica starts while the doomed one holds the event: its
	// start leaves a live lease alone.
	stop := rvRun(t, e)
	defer stop()
	_ = dying.Close()
	kill()
	e.dify.Release()
	<-ddone
	ev := e.waitFinal(id)
	if ev.Status != store.StatusAnswered {
		t.Fatalf("event = %s %q", ev.Status, ev.LastError)
	}
	if got := e.botReplies(conv); len(got) != 1 {
		t.Errorf("replies %q, want one", got)
	}
	hops, err := e.db.Hops(t.Context(), id)
	if err != nil || !strings.Contains(fmt.Sprint(hops), "lease of "+dying.Owner()+" ran out") {
		t.Errorf("trace does not say whose lease ran out: %v, %v", hops, err)
	}
}
