package bridge

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

const testSalesKey = "app-salesSECRET00000000005"

// addSalesRoute routes inbox 3 to a second Dify app, "Sales", served by the
// same simulated Dify.
func (e *env) addSalesRoute(tune func(*store.Route)) *store.Route {
	e.t.Helper()
	e.dify.AddApp(simulate.DifyApp{Key: testSalesKey, Name: "Sales", Mode: simulate.ModeChat})
	e.cw.AddInbox(3, "Sales", "")
	r := &store.Route{InboxID: 3, Name: "sales", DifyKey: testSalesKey, Mode: store.ModeAuto, Enabled: true}
	if tune != nil {
		tune(r)
	}
	if err := e.db.AddRoute(e.t.Context(), r); err != nil {
		e.t.Fatal(err)
	}
	e.core.InvalidateRoutes()
	return r
}

// difyQueries returns the queries the simulated Dify received from one
// app and one contact, in the order they arrived.
func (e *env) difyQueries(app string, contact int64) []string {
	var out []string
	for _, r := range e.dify.Requests() {
		if r.AppName == app && r.User == fmt.Sprintf("chatwoot-1-%d", contact) {
			out = append(out, r.Query)
		}
	}
	return out
}

func (e *env) difyCalls(app string) int {
	n := 0
	for _, r := range e.dify.Requests() {
		if r.AppName == app {
			n++
		}
	}
	return n
}

// TestFairDispatchSecondRouteNotBehindBacklog: with one worker busy on a
// route whose backlog spans several conversations, a customer of another
// route is the very next to be served, not the last; the backlog is then
// answered in order, conversation by conversation.
func TestFairDispatchSecondRouteNotBehindBacklog(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.Concurrency = 1 }})
	e.addSalesRoute(nil)
	e.dify.Hold()
	const convs, perConv = 4, 3
	conv := make([]int64, convs)
	var ids []int64
	for i := range convs {
		conv[i] = e.cw.NewConversation(1, simulate.Contact{ID: int64(100 + i), Name: "Support customer"}, "pending")
	}
	for m := range perConv {
		for i := range convs {
			ids = append(ids, e.say(conv[i], fmt.Sprintf("support %d.%d", i, m)).EventID)
		}
	}
	ctx := t.Context()
	if err := e.dify.WaitFor(ctx, func() bool { return e.dify.Held() == 1 }); err != nil {
		t.Fatal(err)
	}
	sales := e.cw.NewConversation(3, simulate.Contact{ID: 300, Name: "Sales customer"}, "pending")
	b := e.say(sales, "a sales question")
	if b.Status != "accepted" {
		t.Fatalf("sales ack = %+v", b)
	}
	e.dify.Release()
	if ev := e.waitFinal(b.EventID); ev.Status != store.StatusAnswered {
		t.Fatalf("sales event = %s (%s)", ev.Status, ev.Reason)
	}
	reqs := e.dify.Requests()
	if len(reqs) < 2 || reqs[0].AppName != "Support" || reqs[1].AppName != "Sales" {
		var got []string
		for _, r := range reqs {
			got = append(got, r.AppName+": "+r.Query)
		}
		t.Fatalf("dify calls in order %q: want the sales question second, right after the one support call in progress", got)
	}
	for _, id := range ids {
		if ev := e.waitFinal(id); ev.Status != store.StatusAnswered {
			t.Fatalf("event %d = %s (%s)", id, ev.Status, ev.Reason)
		}
	}
	for i := range convs {
		var want, answers []string
		for m := range perConv {
			q := fmt.Sprintf("support %d.%d", i, m)
			want = append(want, q)
			answers = append(answers, "Answer to: "+q)
		}
		if got := e.difyQueries("Support", int64(100+i)); !slices.Equal(got, want) {
			t.Errorf("conversation %d: dify asked %q, want %q in order", i, got, want)
		}
		if got := e.botReplies(conv[i]); !slices.Equal(got, answers) {
			t.Errorf("conversation %d: replies %q, want %q", i, got, answers)
		}
	}
}

// TestFairDispatchOrderWithManyWorkers: many workers, two routes, several
// conversations each with messages arriving back to back: every
// conversation is asked and answered in the order its customer wrote, one
// message at a time.
func TestFairDispatchOrderWithManyWorkers(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.Concurrency = 64 }})
	e.addSalesRoute(nil)
	e.dify.SetLatency(5 * time.Millisecond)
	type conv struct {
		id, contact int64
		app         string
		sent        []string
	}
	var cs []*conv
	for i := range 6 {
		cs = append(cs, &conv{id: e.cw.NewConversation(1, simulate.Contact{ID: int64(100 + i)}, "pending"), contact: int64(100 + i), app: "Support"})
		cs = append(cs, &conv{id: e.cw.NewConversation(3, simulate.Contact{ID: int64(200 + i)}, "pending"), contact: int64(200 + i), app: "Sales"})
	}
	var ids []int64
	for m := range 4 {
		for _, c := range cs {
			q := fmt.Sprintf("question %d from %d", m, c.contact)
			c.sent = append(c.sent, q)
			ids = append(ids, e.say(c.id, q).EventID)
		}
	}
	for _, id := range ids {
		if ev := e.waitFinal(id); ev.Status != store.StatusAnswered {
			t.Fatalf("event %d = %s (%s)", id, ev.Status, ev.Reason)
		}
	}
	for _, c := range cs {
		if got := e.difyQueries(c.app, c.contact); !slices.Equal(got, c.sent) {
			t.Errorf("%s conversation %d: dify asked %q, want %q", c.app, c.id, got, c.sent)
		}
		var answers []string
		for _, q := range c.sent {
			answers = append(answers, "Answer to: "+q)
		}
		if got := e.botReplies(c.id); !slices.Equal(got, answers) {
			t.Errorf("%s conversation %d: replies %q, want %q", c.app, c.id, got, answers)
		}
	}
}

// TestRouteMaxInFlight: a route capped at 2 events in progress never has
// more Dify calls open, however many of its customers wait, while another
// route still gets a worker.
func TestRouteMaxInFlight(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.Concurrency = 8 },
		route: func(r *store.Route) { r.MaxInFlight = 2 }})
	e.addSalesRoute(nil)
	e.dify.Hold()
	var ids []int64
	for i := range 5 {
		c := e.cw.NewConversation(1, simulate.Contact{ID: int64(100 + i)}, "pending")
		ids = append(ids, e.say(c, fmt.Sprintf("support %d", i)).EventID)
	}
	ctx := t.Context()
	if err := e.dify.WaitFor(ctx, func() bool { return e.dify.Held() == 2 }); err != nil {
		t.Fatal(err)
	}
	sales := e.cw.NewConversation(3, simulate.Contact{ID: 300}, "pending")
	ids = append(ids, e.say(sales, "a sales question").EventID)
	if err := e.dify.WaitFor(ctx, func() bool { return e.difyCalls("Sales") == 1 }); err != nil {
		t.Fatal(err)
	}
	if n := e.difyCalls("Support"); n != 2 {
		t.Errorf("%d support calls in progress with max_in_flight 2 and 6 workers free", n)
	}
	e.dify.Release()
	for _, id := range ids {
		if ev := e.waitFinal(id); ev.Status != store.StatusAnswered {
			t.Fatalf("event %d = %s (%s)", id, ev.Status, ev.Reason)
		}
	}
}

// tooManyRequests is how Dify 1.13 refuses a call over the app's
// concurrency cap (core/app/features/rate_limiting/rate_limit.py).
var tooManyRequests = simulate.DifyFault{Status: 400, Code: "invalid_param",
	Message: "Too many requests. Please try again later. The current maximum concurrent requests allowed for 1 is 1."}

// TestDifyCapBacksOffTheRouteOnly: a Dify app at its concurrency cap pauses
// its own route (the event goes back in the queue, not to a human) while
// another route is answered; the paused route's customer is answered once
// Dify takes the call.
func TestDifyCapBacksOffTheRouteOnly(t *testing.T) {
	t.Run("other route served while paused", func(t *testing.T) {
		// A RetryBase this long pauses the route for at least 15 s (half of
		// maxRoutePause), far longer than the sales answer takes.
		e := newEnv(t, envOptions{tune: func(o *Options) { o.Concurrency = 4; o.RetryBase = time.Hour }})
		e.addSalesRoute(nil)
		e.dify.Fail(testDifyKey, tooManyRequests)
		support := e.cw.NewConversation(1, simulate.Contact{ID: 100}, "pending")
		a := e.say(support, "a support question")
		e.wait("the support event back in the queue", func() bool {
			hops, _ := e.db.Hops(t.Context(), a.EventID)
			return slices.ContainsFunc(hops, func(h store.Hop) bool { return h.Outcome == "requeued" })
		})
		sales := e.cw.NewConversation(3, simulate.Contact{ID: 300}, "pending")
		b := e.say(sales, "a sales question")
		if ev := e.waitFinal(b.EventID); ev.Status != store.StatusAnswered {
			t.Fatalf("sales event = %s (%s)", ev.Status, ev.Reason)
		}
		if ev := e.event(a.EventID); ev.Status != store.StatusAccepted {
			t.Errorf("support event = %s (%s), want accepted: waiting for its route", ev.Status, ev.Reason)
		}
		if n := e.difyCalls("Support"); n != 1 {
			t.Errorf("%d support calls: the refused one must not be retried while its route waits", n)
		}
		if got := e.botReplies(support); len(got) != 0 {
			t.Errorf("support replies = %q, want none yet", got)
		}
	})
	t.Run("answered once Dify takes it", func(t *testing.T) {
		e := newEnv(t, envOptions{tune: func(o *Options) { o.Concurrency = 4; o.DifyMaxRetries = 0 }})
		e.dify.Fail(testDifyKey, tooManyRequests, tooManyRequests, tooManyRequests)
		support := e.cw.NewConversation(1, simulate.Contact{ID: 100}, "pending")
		a := e.say(support, "a support question")
		ev := e.waitFinal(a.EventID)
		if ev.Status != store.StatusAnswered {
			t.Fatalf("support event = %s (%s): a busy Dify must not hand the customer off", ev.Status, ev.Reason)
		}
		if got := e.botReplies(support); !slices.Equal(got, []string{"Answer to: a support question"}) {
			t.Errorf("replies = %q", got)
		}
		hops, err := e.db.Hops(t.Context(), a.EventID)
		if err != nil {
			t.Fatal(err)
		}
		busy, requeued := 0, 0
		for _, h := range hops {
			switch {
			case h.Stage == StageDify && h.Outcome == "busy":
				busy++
			case h.Stage == StageWorker && h.Outcome == "requeued" && strings.Contains(h.Detail, "concurrency cap"):
				requeued++
			}
		}
		if busy != 3 || requeued != 3 {
			t.Errorf("trace has %d busy and %d requeued hops, want 3 each:\n%+v", busy, requeued, hops)
		}
		if n := e.difyCalls("Support"); n != 4 {
			t.Errorf("%d dify calls, want 4 (3 refused, 1 answered)", n)
		}
	})
}
