package bridge

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// rvRun starts the core's workers and returns a function that stops them
// and waits for Run to return.
func rvRun(t *testing.T, e *env) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.core.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// rvWrite runs fn in one journal write or fails the test.
func rvWrite(t *testing.T, e *env, fn func(tx *store.Tx) error) {
	t.Helper()
	if err := e.db.Write(t.Context(), fn); err != nil {
		t.Fatal(err)
	}
}

// TestInvariantFailureHandoffAfterTakeover: a human takes over while Dify is
// still working, and then Dify fails. The bot must stay quiet: no
// handoff.message to the customer after the agent already spoke.
func TestInvariantFailureHandoffAfterTakeover(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := t.Context()
	e.dify.Fail(testDifyKey, simulate.DifyFault{Delay: 1500 * time.Millisecond, Status: http.StatusBadRequest,
		Code: "provider_quota_exceeded", Message: "quota exhausted"})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	id := e.say(conv, "where is my parcel?").EventID
	if err := e.dify.WaitFor(ctx, func() bool { return len(e.dify.Requests()) == 1 }); err != nil {
		t.Fatal(err)
	}
	d, err := e.cw.AgentSays(ctx, conv, "Hi, Smith here, I'll help you.", false)
	if err != nil {
		t.Fatal(err)
	}
	if a := ackOf(t, d); a.Status != "accepted" {
		t.Fatalf("takeover ack = %+v", a)
	}
	ev := e.waitFinal(id)
	if got := e.botReplies(conv); len(got) != 0 {
		t.Errorf("after a human took over, the bot still told the customer %q (event %s: %s)", got, ev.Status, ev.Reason)
	}
}

// TestInvariantRedriveInFlightEvent: `bridge replay ID` of an event that a
// running server is still working on must not drive it a second time.
func TestInvariantRedriveInFlightEvent(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := t.Context()
	e.dify.Hold()
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	id := e.say(conv, "hello").EventID
	if err := e.dify.WaitFor(ctx, func() bool { return e.dify.Held() == 1 }); err != nil {
		t.Fatal(err)
	}
	if ev := e.event(id); ev.Status != store.StatusWorking {
		t.Fatalf("event is %s, want working", ev.Status)
	}
	// Posting is slow, so both drives are past the "already posted?" check
	// before either has posted.
	e.cw.Fail("messages", simulate.ChatwootFault{Delay: 300 * time.Millisecond}, simulate.ChatwootFault{Delay: 300 * time.Millisecond})
	replayed := make(chan struct{})
	if err := e.core.Redrive(ctx, id, false); err == nil {
		go func() {
			defer close(replayed)
			_, _ = e.core.ProcessNow(ctx, id)
		}()
		_ = e.dify.WaitFor(ctx, func() bool { return e.dify.Held() == 2 })
	} else {
		close(replayed)
	}
	e.dify.Release()
	<-replayed
	e.waitFinal(id)
	if got := e.botReplies(conv); len(got) != 1 {
		t.Errorf("replies = %q, want exactly one (dify calls: %d)", got, len(e.dify.Requests()))
	}
}

// TestInvariantMarkerHandoffSurvivesRestart: the AI answers with the handoff
// marker; the answer is posted, then the process is interrupted while the
// handoff is under way. After the restart the handoff must be completed,
// not dropped because "the answer was already posted".
func TestInvariantMarkerHandoffSurvivesRestart(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true, tune: func(o *Options) { o.ShutdownGrace = 20 * time.Millisecond }})
	// The first post (the answer) goes through; the second (the handoff
	// message) hangs until the client gives up.
	e.cw.Fail("messages", simulate.ChatwootFault{}, simulate.ChatwootFault{Delay: 3 * time.Second})
	stop := rvRun(t, e)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	id := e.say(conv, "this is complicated").EventID
	e.wait("answer posted", func() bool { ev := e.event(id); return ev.HasStep(StepAnswer) })
	stop()
	if ev := e.event(id); ev.Finished() {
		t.Skipf("the handoff finished before the interruption (%s)", ev.Status)
	}
	rvRun(t, e)
	ev := e.waitFinal(id)
	if ev.Status != store.StatusHandedOff {
		t.Errorf("after restart: event %s %q, want handed_off", ev.Status, ev.Reason)
	}
	if s := e.cw.Status(conv); s != "open" {
		t.Errorf("chatwoot status = %s, want open: the AI asked for a human", s)
	}
	if c, _ := e.db.Conversation(t.Context(), 1, conv); c.State != store.StateHuman {
		t.Errorf("conversation state = %s, want human", c.State)
	}
}

// rvDebounced journals three customer messages of one conversation with the
// workers stopped and returns the conversation and the event ids.
func rvDebounced(t *testing.T, e *env, texts ...string) (int64, []int64) {
	t.Helper()
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	var ids []int64
	for _, s := range texts {
		a := e.say(conv, s)
		if a.Status != "accepted" {
			t.Fatalf("ack = %+v", a)
		}
		ids = append(ids, a.EventID)
	}
	return conv, ids
}

// TestInvariantMergedEventsNotAnsweredTwiceAfterRestart: the process stopped
// after the event that answered a debounced batch finished, before the
// merged events were closed. On restart the merged events must not be
// answered a second time.
func TestInvariantMergedEventsNotAnsweredTwiceAfterRestart(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true, tune: func(o *Options) { o.Debounce = 10 * time.Millisecond }})
	_, ids := rvDebounced(t, e, "hi", "my order", "is late")
	// The journal as the crash left it: the first event answered all three.
	rvWrite(t, e, func(tx *store.Tx) error {
		if err := tx.UpdateEvent(ids[0], store.EventUpdate{Status: store.StatusAnswered, AddStep: StepAnswer, PostedMessageID: 99999}); err != nil {
			return err
		}
		for _, id := range ids[1:] {
			if err := tx.UpdateEvent(id, store.EventUpdate{Status: store.StatusWorking, MergedInto: ids[0]}); err != nil {
				return err
			}
		}
		return nil
	})
	rvRun(t, e)
	for _, id := range ids {
		e.waitFinal(id)
	}
	if reqs := e.dify.Requests(); len(reqs) != 0 {
		t.Errorf("messages already answered together were sent to Dify again: %q", reqs[0].Query)
	}
}

// TestInvariantLaterMessageNotSwallowedByResumedMerge: a batch was answered
// (the answer step is recorded) but the process stopped before the event
// finished; meanwhile the customer wrote again. On restart the new message
// must get its own answer, not be marked answered as part of the old batch.
func TestInvariantLaterMessageNotSwallowedByResumedMerge(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true, tune: func(o *Options) { o.Debounce = 10 * time.Millisecond }})
	_, ids := rvDebounced(t, e, "hi", "my order", "and where is my refund?")
	rvWrite(t, e, func(tx *store.Tx) error {
		if err := tx.UpdateEvent(ids[0], store.EventUpdate{Status: store.StatusWorking, AddStep: StepAnswer, PostedMessageID: 99999}); err != nil {
			return err
		}
		return tx.UpdateEvent(ids[1], store.EventUpdate{Status: store.StatusWorking, MergedInto: ids[0]})
	})
	rvRun(t, e)
	for _, id := range ids {
		e.waitFinal(id)
	}
	asked := false
	for _, r := range e.dify.Requests() {
		if strings.Contains(r.Query, "refund") {
			asked = true
		}
	}
	if !asked {
		ev := e.event(ids[2])
		t.Errorf("the later message was never sent to Dify; it ended %s (%s), merged into %d", ev.Status, ev.Reason, ev.MergedInto)
	}
}

// rvLoseFirstPost forwards every Chatwoot call to the fake, except that
// the first message post, once Chatwoot has created the message, is
// answered 502 (a proxy that timed out on a slow Chatwoot).
type rvLoseFirstPost struct {
	h    atomic.Pointer[http.Handler]
	lost atomic.Bool
}

func (p *rvLoseFirstPost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := *p.h.Load()
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/messages") && p.lost.CompareAndSwap(false, true) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		_, _ = io.Copy(io.Discard, rec.Result().Body)
		http.Error(w, "<html>502 Bad Gateway</html>", http.StatusBadGateway)
		return
	}
	h.ServeHTTP(w, r)
}

// TestInvariantPostRetryAfterLostResponse: Chatwoot created the answer but the
// response was lost; its webhook (source_id bridge:<id>:answer) already told
// bridge the answer is there. The retry must not post it a second time.
func TestInvariantPostRetryAfterLostResponse(t *testing.T) {
	proxy := &rvLoseFirstPost{}
	proxySrv := httptest.NewServer(proxy)
	t.Cleanup(proxySrv.Close)
	e := newEnv(t, envOptions{
		cwOpts: func(o *simulate.ChatwootOptions) { o.EchoSync = true },
		tune: func(o *Options) {
			o.Chatwoot = chatwoot.NewClient(chatwoot.Options{BaseURL: proxySrv.URL, Token: testBotToken})
		},
	})
	var h http.Handler = e.cw
	proxy.h.Store(&h)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	ev := e.waitFinal(e.say(conv, "where is my order?").EventID)
	if !proxy.lost.Load() {
		t.Fatal("the lost response was not simulated")
	}
	if got := e.botReplies(conv); len(got) != 1 {
		t.Errorf("the customer got the answer %d times: %q (event %s)", len(got), got, ev.Status)
	}
}

// TestInvariantDispatcherIdleWhileAnotherProcessWorks: an event that another
// process (a `bridge replay`) has claimed is `working` in the journal. The
// server must wait for it, not retry claiming it in a tight loop.
func TestInvariantDispatcherIdleWhileAnotherProcessWorks(t *testing.T) {
	e := newEnv(t, envOptions{})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	for deadline := time.Now().Add(5 * time.Second); !e.core.workersUp(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("workers did not start")
		}
	}
	// The other process has claimed an accepted event of the conversation.
	rvWrite(t, e, func(tx *store.Tx) error {
		return tx.InsertEvent(&store.Event{Event: "message_created", Kind: store.KindMessage, Status: store.StatusWorking,
			AccountID: 1, InboxID: 1, ConversationID: conv, MessageID: 777777, RouteID: e.route.ID, Text: "hello"})
	})
	before, _ := e.db.Commits()
	time.Sleep(2500 * time.Millisecond) // two safety polls
	after, _ := e.db.Commits()
	if n := after - before; n > 20 {
		t.Errorf("%d journal commits in 2.5s with nothing to do: the dispatcher spins on an event it cannot claim", n)
	}
}

// TestInvariantLateEchoDoesNotWedgeHuman: Chatwoot guarantees no order across
// webhooks. The echo of bridge's own answer (built while the conversation
// was still pending) arrives after a handoff opened it. When an agent later
// puts the conversation back to pending, the bot must own it again.
func TestInvariantLateEchoDoesNotWedgeHuman(t *testing.T) {
	e := newEnv(t, envOptions{cwOpts: func(o *simulate.ChatwootOptions) { o.EchoSync = true }})
	ctx := t.Context()
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	if ev := e.waitFinal(e.say(conv, "hello").EventID); ev.Status != store.StatusAnswered {
		t.Fatalf("answer: %s %q", ev.Status, ev.Reason)
	}
	if ev := e.waitFinal(e.say(conv, "I want a human").EventID); ev.Status != store.StatusHandedOff {
		t.Fatalf("handoff: %s %q", ev.Status, ev.Reason)
	}
	var late []byte
	for _, d := range e.cw.Deliveries() {
		if d.Event == "message_created" && strings.Contains(string(d.Body), `"type":"agent_bot"`) &&
			strings.Contains(string(d.Body), `"status":"pending"`) {
			late = d.Body
		}
	}
	if late == nil {
		t.Fatal("no echo of the answer built while pending")
	}
	if _, err := e.cw.Deliver(ctx, late); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cw.SetStatus(ctx, conv, "pending"); err != nil {
		t.Fatal(err)
	}
	if a := e.say(conv, "one more question"); a.Status != "accepted" {
		c, _ := e.db.Conversation(ctx, 1, conv)
		t.Errorf("after an agent put the conversation back to pending: %+v (bridge state %s, status %s)", a, c.State, c.Status)
	}
}
