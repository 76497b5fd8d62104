package bridge

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/lifecycle"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// fakeClock is the wall clock moved by an offset, shared by bridge, its
// journal and the simulated Chatwoot so that snapshots, takeovers and idle
// times agree.
type fakeClock struct {
	mu  sync.Mutex
	off time.Duration
	at  time.Time // fixed time when set
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() {
		return c.at.Add(c.off)
	}
	return time.Now().Add(c.off)
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

func (e *env) setLifecycle(s lifecycle.Settings) {
	e.t.Helper()
	if err := s.Validate(); err != nil {
		e.t.Fatal(err)
	}
	if err := e.db.SetRouteLifecycle(e.t.Context(), e.route.ID, s.Marshal()); err != nil {
		e.t.Fatal(err)
	}
	e.core.lc.mu.Lock()
	e.core.lc.settings = nil // read them again now, not a second later
	e.core.lc.mu.Unlock()
}

func (e *env) ownership(conv int64) []store.Ownership {
	e.t.Helper()
	o, err := e.db.OwnershipOf(e.t.Context(), 1, conv, 50)
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

func kinds(os []store.Ownership) string {
	var out []string
	for _, o := range os {
		out = append(out, o.Kind+":"+o.Cause)
	}
	return strings.Join(out, " ")
}

func (e *env) setStatus(conv int64, status string) {
	e.t.Helper()
	if _, err := e.cw.SetStatus(e.t.Context(), conv, status); err != nil {
		e.t.Fatal(err)
	}
}

// A handoff lands with the people the route's table names, the way
// Chatwoot's own reports see a bot handoff, and says why at a glance.
func TestLifecycleHandoffTable(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.DashboardKey = "dash-key-SECRET-0005"; o.PublicURL = "https://bridge.example.com" }})
	e.cw.AddAgent(12, "Jane Agent")
	e.setLifecycle(lifecycle.Settings{Handoff: lifecycle.Table{
		Reasons: map[string]lifecycle.Assign{lifecycle.ReasonCustomerAsked: {Team: 2, Agent: 12, Priority: "high"}},
		Targets: map[string]lifecycle.Assign{"billing": {Team: 5, Labels: []string{"billing"}, Priority: "urgent"}},
	}})
	e.dify.AddApp(simulate.DifyApp{Key: testDifyKey, Name: "Support", Mode: "chat", Reply: func(_ []simulate.Turn, q string, _ map[string]any) string {
		if strings.Contains(q, "invoice") {
			return "Billing will sort this out. [[handoff:Billing]]"
		}
		return "Answer to: " + q
	}})

	asked := e.cw.NewConversation(1, simulate.Contact{Name: "Ann"}, "pending")
	if ev := e.waitFinal(e.say(asked, "I want a human").EventID); ev.Status != store.StatusHandedOff {
		t.Fatalf("event %s %q", ev.Status, ev.Reason)
	}
	if id, typ := e.cw.Assignee(asked); id != 12 || typ != "User" || e.cw.Team(asked) != 2 || e.cw.Priority(asked) != "high" {
		t.Fatalf("assignee %d %s, team %d, priority %q", id, typ, e.cw.Team(asked), e.cw.Priority(asked))
	}
	// Opened with the bot token from pending: Chatwoot's bot_handoff!.
	if e.cw.Status(asked) != "open" || e.cw.BotHandoffs(asked) != 1 {
		t.Fatalf("status %s, bot handoffs %d", e.cw.Status(asked), e.cw.BotHandoffs(asked))
	}
	note := e.notes(asked)[0]
	for _, want := range []string{"Handoff: customer asked for a human", "Routed: team 2, agent 12, priority high",
		"Trace: https://bridge.example.com/app/?account_id=1&conversation_id=" + strconv.FormatInt(asked, 10)} {
		if !strings.Contains(note, want) {
			t.Errorf("note lacks %q:\n%s", want, note)
		}
	}
	if strings.Contains(note, "SECRET") {
		t.Errorf("the note carries the dashboard key:\n%s", note)
	}
	if o := e.ownership(asked); kinds(o) != "handoff:customer_asked" || o[0].Owner != store.StateHuman {
		t.Errorf("ownership %+v", o)
	}

	billed := e.cw.NewConversation(1, simulate.Contact{Name: "Bob"}, "pending")
	if ev := e.waitFinal(e.say(billed, "my invoice is wrong").EventID); ev.Status != store.StatusHandedOff {
		t.Fatalf("event %s %q", ev.Status, ev.Reason)
	}
	if got := e.botReplies(billed); len(got) != 2 || got[0] != "Billing will sort this out." {
		t.Fatalf("replies %q: the marker must be stripped and the handoff message follow", got)
	}
	if e.cw.Team(billed) != 5 || e.cw.Priority(billed) != "urgent" || !slices.Equal(e.cw.Labels(billed), []string{"billing"}) {
		t.Fatalf("team %d priority %q labels %v", e.cw.Team(billed), e.cw.Priority(billed), e.cw.Labels(billed))
	}
	if id, _ := e.cw.Assignee(billed); id != 0 {
		t.Fatalf("the target names no agent, yet %d was assigned", id)
	}
	note = e.notes(billed)[0]
	for _, want := range []string{`Customer: "my invoice is wrong"`, `AI's last answer: "Billing will sort this out."`,
		"Routed: target billing: team 5, labels billing, priority urgent"} {
		if !strings.Contains(note, want) {
			t.Errorf("note lacks %q:\n%s", want, note)
		}
	}
	// The outcomes on /metrics are the journal's, as bridge stats counts them.
	samples := scrape(t, e.srv.URL)
	for k, want := range map[string]float64{
		`bridge_stats_handoffs{reason="customer_asked",route="1"}`: 1,
		`bridge_stats_handoffs{reason="ai_requested",route="1"}`:   1,
		`bridge_stats_conversations{outcome="handled",route="1"}`:  2,
		`bridge_stats_answers{route="1"}`:                          1, // the answer the marker's handoff followed was posted
	} {
		if got, ok := samples[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
}

// The return rule decides whether Chatwoot's pending gives a conversation
// back; a give-back always does, and every change is journaled.
func TestLifecycleReturnRules(t *testing.T) {
	for _, rule := range []string{lifecycle.ReturnGiveBack, lifecycle.ReturnNever, lifecycle.ReturnPending} {
		t.Run(rule, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			e.setLifecycle(lifecycle.Settings{Return: rule})
			conv := e.cw.NewConversation(1, simulate.Contact{Name: "Cy"}, "pending")
			e.waitFinal(e.say(conv, "human please").EventID)
			e.setStatus(conv, "pending")
			ack := e.say(conv, "anyone there?")
			if rule == lifecycle.ReturnPending {
				if ev := e.waitFinal(ack.EventID); ev.Status != store.StatusAnswered {
					t.Fatalf("pending rule: %s %q", ev.Status, ev.Reason)
				}
				if k := kinds(e.ownership(conv)); k != "handoff:customer_asked return:status" {
					t.Fatalf("ownership %s", k)
				}
				return
			}
			if ack.Status == "accepted" {
				if ev := e.waitFinal(ack.EventID); ev.Kind != store.KindReopen {
					t.Fatalf("%s rule: pending gave it back: %+v", rule, ev)
				}
			} else if ack.Reason != ReasonHumanOwned && ack.Reason != ReasonStatusPrefix+"open" {
				t.Fatalf("%s rule: pending gave it back: %+v", rule, ack)
			}
			// The humans keep it, and see it: bridge opens it again rather
			// than leave it pending with a silent bot.
			e.wait("conversation open again", func() bool { return e.cw.Status(conv) == "open" })
			if got := e.botReplies(conv); len(got) != 1 {
				t.Fatalf("the bot spoke: %q", got)
			}
			err := GiveBackBy(t.Context(), e.db, e.core.o.Chatwoot, e.core.o.BotStatuses, 1, conv, "Jane (agent 3)")
			if rule == lifecycle.ReturnNever {
				if !errors.Is(err, ErrNeverReturns) || e.conv(conv).State != store.StateHuman || e.cw.Status(conv) != "open" {
					t.Fatalf("never rule gave it back: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev := e.waitFinal(e.say(conv, "hello again").EventID); ev.Status != store.StatusAnswered {
				t.Fatalf("after give-back: %s %q", ev.Status, ev.Reason)
			}
			o := e.ownership(conv)
			if kinds(o) != "handoff:customer_asked return:give-back" || !strings.Contains(o[1].Detail, "given back by Jane (agent 3)") {
				t.Fatalf("ownership %+v", o)
			}
		})
	}
}

// What the bot remembers when it comes back: never the handoff its own
// marker asked for, a fresh start after a resolve, or a summary.
func TestLifecycleMemory(t *testing.T) {
	t.Run("MarkerHandoffStartsFresh", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		conv := e.cw.NewConversation(1, simulate.Contact{Name: "Di"}, "pending")
		e.waitFinal(e.say(conv, "my first question").EventID)
		e.waitFinal(e.say(conv, "this is complicated").EventID) // the AI answers with [[handoff]]
		if e.conv(conv).State != store.StateHuman {
			t.Fatal("not handed off")
		}
		e.setStatus(conv, "pending")
		e.wait("return", func() bool { return e.conv(conv).State == store.StateBot })
		e.waitFinal(e.say(conv, "what did i ask earlier?").EventID)
		if got := e.botReplies(conv); got[len(got)-1] != "I have no earlier question from you." {
			t.Fatalf("the old context came back: %q", got)
		}
		o := e.ownership(conv)
		if len(o) != 2 || !strings.Contains(o[1].Detail, "the AI itself asked for a human") {
			t.Fatalf("ownership %+v", o)
		}
	})
	t.Run("FreshAfterResolve", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		conv := e.cw.NewConversation(1, simulate.Contact{Name: "Ed"}, "pending")
		e.waitFinal(e.say(conv, "where is my parcel").EventID)
		e.setStatus(conv, "resolved")
		e.setStatus(conv, "pending") // the customer wrote again
		e.wait("reopening", func() bool { return len(e.ownership(conv)) == 2 })
		e.waitFinal(e.say(conv, "what did i ask earlier?").EventID)
		if got := e.botReplies(conv); got[len(got)-1] != "I have no earlier question from you." {
			t.Fatalf("a resolved episode's context came back: %q", got)
		}
		if o := e.ownership(conv); kinds(o) != "resolved:status resolved reopened:status pending" || o[0].Owner != store.StateBot {
			t.Fatalf("ownership %+v", o)
		}
	})
	t.Run("SameKeepsContext", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.setLifecycle(lifecycle.Settings{Memory: lifecycle.Memory{AfterResolve: lifecycle.MemorySame}})
		conv := e.cw.NewConversation(1, simulate.Contact{Name: "Flo"}, "pending")
		e.waitFinal(e.say(conv, "where is my parcel").EventID)
		e.setStatus(conv, "resolved")
		e.setStatus(conv, "pending")
		e.wait("reopening", func() bool { return len(e.ownership(conv)) == 2 })
		e.waitFinal(e.say(conv, "what did i ask earlier?").EventID)
		if got := e.botReplies(conv); got[len(got)-1] != `Earlier you asked: "where is my parcel"` {
			t.Fatalf("same memory lost the context: %q", got)
		}
	})
	t.Run("SummaryAsInput", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.setLifecycle(lifecycle.Settings{Memory: lifecycle.Memory{AfterHandoff: lifecycle.MemorySummary}})
		conv := e.cw.NewConversation(1, simulate.Contact{Name: "Gus"}, "pending")
		e.waitFinal(e.say(conv, "my router blinks red").EventID)
		e.waitFinal(e.say(conv, "a human please").EventID)
		e.setStatus(conv, "pending")
		e.wait("return", func() bool { return e.conv(conv).State == store.StateBot })
		e.waitFinal(e.say(conv, "still blinking").EventID)
		e.waitFinal(e.say(conv, "and now?").EventID)
		reqs := e.dify.Requests()
		back, next := reqs[len(reqs)-2], reqs[len(reqs)-1]
		sum, _ := back.Inputs[SummaryInput].(string)
		if !back.NewConversation || !strings.Contains(sum, "Customer: my router blinks red") || !strings.Contains(sum, "the customer asked for a human") {
			t.Fatalf("first turn back: new %v, summary %q", back.NewConversation, sum)
		}
		if _, again := next.Inputs[SummaryInput]; again || next.NewConversation {
			t.Fatalf("the summary went out twice or the conversation was not kept: %+v", next)
		}
	})
}

// A conversation humans leave alone goes back to the bot after the route's
// idle time; one where an agent is still writing does not.
func TestLifecycleIdleReturn(t *testing.T) {
	clk := &fakeClock{}
	e := newEnv(t, envOptions{storeOpts: []store.Option{store.WithNow(clk.Now)}, tune: func(o *Options) { o.Now = clk.Now; o.IdleSweep = 5 * time.Millisecond },
		cwOpts: func(o *simulate.ChatwootOptions) { o.Now = clk.Now }})
	e.setLifecycle(lifecycle.Settings{Return: lifecycle.ReturnIdle, IdleAfter: lifecycle.Duration(30 * time.Minute)})
	left := e.cw.NewConversation(1, simulate.Contact{Name: "Hal"}, "pending")
	busy := e.cw.NewConversation(1, simulate.Contact{Name: "Ivy"}, "pending")
	e.waitFinal(e.say(left, "human").EventID)
	e.waitFinal(e.say(busy, "human").EventID)
	clk.advance(20 * time.Minute)
	if _, err := e.cw.AgentSays(t.Context(), busy, "looking into it", true); err != nil {
		t.Fatal(err)
	}
	clk.advance(15 * time.Minute)
	// bridge takes it for the bot first, then tells Chatwoot.
	e.wait("idle return", func() bool { return e.conv(left).State == store.StateBot && e.cw.Status(left) == "pending" })
	if o := e.ownership(left); kinds(o) != "handoff:customer_asked return:idle" || !strings.Contains(o[1].Detail, "no human message for 30m0s") {
		t.Fatalf("ownership %+v", o)
	}
	if e.conv(busy).State != store.StateHuman {
		t.Fatal("a conversation an agent wrote in 15 minutes ago went back")
	}
	clk.advance(20 * time.Minute)
	e.wait("idle return of the other", func() bool { return e.conv(busy).State == store.StateBot })
}

// Out of hours, a handoff tells the customer when people are back instead
// of promising one now; without the user token the hours are unknown and
// the trace says so.
func TestLifecycleOutOfHours(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	saturdayNight := time.Date(2026, 3, 7, 3, 0, 0, 0, paris)
	t.Run("ChatwootHours", func(t *testing.T) {
		clk := &fakeClock{at: saturdayNight}
		e := newEnv(t, envOptions{storeOpts: []store.Option{store.WithNow(clk.Now)}, tune: func(o *Options) { o.Now = clk.Now }, cwOpts: func(o *simulate.ChatwootOptions) { o.Now = clk.Now }})
		e.cw.SetWorkingHours(1, simulate.WorkingHours{Enabled: true, Timezone: "Europe/Paris"})
		e.setLifecycle(lifecycle.Settings{Hours: lifecycle.Hours{Source: "chatwoot", AskEmail: true}})
		conv := e.cw.NewConversation(1, simulate.Contact{Name: "Jo"}, "pending")
		e.waitFinal(e.say(conv, "a human please").EventID)
		got := e.botReplies(conv)
		if len(got) != 1 || !strings.Contains(got[0], "back on Monday at 09:00 (Europe/Paris)") || !strings.Contains(got[0], lifecycle.AskEmailText) {
			t.Fatalf("customer was told %q", got)
		}
		if strings.Contains(got[0], "connect you") {
			t.Fatalf("an immediate human was promised at 3 a.m.: %q", got[0])
		}
		if note := e.notes(conv)[0]; !strings.Contains(note, "Out of hours: the customer was told that the team is back on Monday at 09:00") {
			t.Fatalf("note %s", note)
		}
		if e.cw.Status(conv) != "open" {
			t.Fatal("out of hours the conversation must still reach the humans' queue")
		}
		// Monday 10:00: people are there.
		clk.advance(55 * time.Hour)
		conv2 := e.cw.NewConversation(1, simulate.Contact{Name: "Kim"}, "pending")
		e.waitFinal(e.say(conv2, "a human please").EventID)
		if got := e.botReplies(conv2); len(got) != 1 || got[0] != "Let me connect you with a member of our team." {
			t.Fatalf("in hours: %q", got)
		}
	})
	t.Run("RouteHours", func(t *testing.T) {
		clk := &fakeClock{at: saturdayNight}
		e := newEnv(t, envOptions{storeOpts: []store.Option{store.WithNow(clk.Now)}, tune: func(o *Options) { o.Now = clk.Now }, cwOpts: func(o *simulate.ChatwootOptions) { o.Now = clk.Now }})
		e.setLifecycle(lifecycle.Settings{Hours: lifecycle.Hours{Source: "route", Week: "sat 08:00-12:00", Timezone: "Europe/Paris",
			Closed: "Closed now; back {next_open}."}})
		conv := e.cw.NewConversation(1, simulate.Contact{Name: "Lu"}, "pending")
		e.waitFinal(e.say(conv, "a human please").EventID)
		if got := e.botReplies(conv); len(got) != 1 || got[0] != "Closed now; back today at 08:00 (Europe/Paris)." {
			t.Fatalf("customer was told %q", got)
		}
	})
	t.Run("NoUserToken", func(t *testing.T) {
		clk := &fakeClock{at: saturdayNight}
		e := newEnv(t, envOptions{tune: func(o *Options) { o.Now = clk.Now; o.ChatwootUser = nil }})
		e.cw.SetWorkingHours(1, simulate.WorkingHours{Enabled: true, Timezone: "Europe/Paris"})
		e.setLifecycle(lifecycle.Settings{Hours: lifecycle.Hours{Source: "chatwoot"}})
		conv := e.cw.NewConversation(1, simulate.Contact{Name: "Mo"}, "pending")
		ev := e.waitFinal(e.say(conv, "a human please").EventID)
		if got := e.botReplies(conv); len(got) != 1 || got[0] != "Let me connect you with a member of our team." {
			t.Fatalf("customer was told %q", got)
		}
		tr, err := e.db.Hops(t.Context(), ev.ID)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, h := range tr {
			found = found || (h.Outcome == "hours unknown" && strings.Contains(h.Detail, "chatwoot.user_token"))
		}
		if !found {
			t.Fatalf("the trace does not say the hours are unknown: %+v", tr)
		}
	})
}

// TestOutOfHoursDecisionSurvivesRestart: bridge tells the customer at 3
// a.m. that people are back at 08:00, then stops before its note; it
// starts again at 09:00, when people are there. The resumed handoff keeps
// the first decision: the note says what the customer was told, and the
// journal that the handoff came out of hours.
func TestOutOfHoursDecisionSurvivesRestart(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	clk := &fakeClock{at: time.Date(2026, 3, 7, 3, 0, 0, 0, paris)} // a Saturday
	e := newEnv(t, envOptions{storeOpts: []store.Option{store.WithNow(clk.Now)}, noRun: true,
		tune:   func(o *Options) { o.Now = clk.Now; o.ShutdownGrace = 20 * time.Millisecond },
		cwOpts: func(o *simulate.ChatwootOptions) { o.Now = clk.Now }})
	e.setLifecycle(lifecycle.Settings{Hours: lifecycle.Hours{Source: "route", Week: "sat 08:00-12:00", Timezone: "Europe/Paris"}})
	// The handoff message goes through; opening the conversation hangs
	// until bridge is stopped.
	e.cw.Fail("toggle_status", simulate.ChatwootFault{Delay: 5 * time.Second})
	stop := rvRun(t, e)
	conv := e.cw.NewConversation(1, simulate.Contact{Name: "Lu"}, "pending")
	id := e.say(conv, "a human please").EventID
	e.wait("handoff message posted", func() bool { ev := e.event(id); return ev.HasStep(StepHandoffMessage) })
	stop()
	if ev := e.event(id); ev.Finished() || ev.HasStep(StepHandoffNote) {
		t.Fatalf("the handoff went on before the stop: %s %q", ev.Status, ev.Steps)
	}
	clk.advance(6 * time.Hour)
	rvRun(t, e)
	if ev := e.waitFinal(id); ev.Status != store.StatusHandedOff {
		t.Fatalf("after the restart: %s %q", ev.Status, ev.LastError)
	}
	told := e.botReplies(conv)
	if len(told) != 1 || !strings.Contains(told[0], "today at 08:00 (Europe/Paris)") {
		t.Fatalf("customer was told %q", told)
	}
	notes := e.notes(conv)
	if len(notes) != 1 || !strings.Contains(notes[0], "Out of hours: the customer was told that the team is back today at 08:00 (Europe/Paris).") {
		t.Errorf("the resumed note does not say what the customer was told: %q", notes)
	}
	if o := e.ownership(conv); len(o) != 1 || !strings.HasSuffix(o[0].Detail, "; out of hours") {
		t.Errorf("ownership %+v", o)
	}
	if n := strings.Count(e.trace(id), "out of hours"); n != 1 {
		t.Errorf("the trace has %d out-of-hours hops, want the first decision only:\n%s", n, e.trace(id))
	}
}
