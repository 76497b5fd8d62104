package bridge

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

func TestTakeoverByAgent(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := t.Context()
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	e.waitFinal(e.say(conv, "hello").EventID)
	d, err := e.cw.AgentSays(ctx, conv, "Hi, I'm Smith, I'll take it from here.", false)
	if err != nil {
		t.Fatal(err)
	}
	a := ackOf(t, d)
	if a.Status != "accepted" {
		t.Fatalf("takeover ack = %+v", a)
	}
	ev := e.waitFinal(a.EventID)
	if ev.Status != store.StatusHandedOff || ev.Reason != "agent replied" {
		t.Fatalf("takeover event = %s %q", ev.Status, ev.Reason)
	}
	if s := e.cw.Status(conv); s != "open" {
		t.Errorf("status = %s, want open (handoff.open_on_agent_reply)", s)
	}
	c, _ := e.db.Conversation(ctx, 1, conv)
	if c.State != store.StateHuman || c.StateReason != "agent replied" {
		t.Errorf("conversation = %+v", c)
	}
	// The bot stays quiet: the customer's next message is not answered.
	b := e.say(conv, "thanks!")
	if b.Status != "ignored" {
		t.Errorf("after takeover: %+v", b)
	}
	// A second agent reply is not a second takeover.
	d, _ = e.cw.AgentSays(ctx, conv, "anything else?", false)
	if a := ackOf(t, d); a.Reason != ReasonOutgoing {
		t.Errorf("second agent reply: %+v", a)
	}
	if got := e.botReplies(conv); len(got) != 1 {
		t.Errorf("bot replies = %q", got)
	}
	// An agent puts the conversation back to pending: the bot owns it again.
	if _, err := e.cw.SetStatus(ctx, conv, "pending"); err != nil {
		t.Fatal(err)
	}
	c, _ = e.db.Conversation(ctx, 1, conv)
	if c.State != store.StateBot {
		t.Fatalf("state after back to pending = %s", c.State)
	}
	e.waitFinal(e.say(conv, "one more question").EventID)
	if got := e.botReplies(conv); len(got) != 2 || got[1] != "Answer to: one more question" {
		t.Errorf("bot replies = %q", got)
	}
}

func TestTakeoverWithoutOpening(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.Handoff.OpenOnAgentReply = false }})
	ctx := t.Context()
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	d, err := e.cw.PhoneSays(ctx, conv, "answered from the phone")
	if err != nil {
		t.Fatal(err)
	}
	if ev := e.waitFinal(ackOf(t, d).EventID); ev.Status != store.StatusHandedOff {
		t.Fatalf("phone takeover = %s", ev.Status)
	}
	if s := e.cw.Status(conv); s != "pending" {
		t.Errorf("status = %s, want pending left alone", s)
	}
	if a := e.say(conv, "hello?"); a.Reason != ReasonHumanOwned {
		t.Errorf("customer after takeover: %+v, want human_owned", a)
	}
	// Resolved, then the customer writes again: Chatwoot reopens it as
	// pending, and the bot owns it again.
	if _, err := e.cw.SetStatus(ctx, conv, "resolved"); err != nil {
		t.Fatal(err)
	}
	a := e.say(conv, "new problem")
	if a.Status != "accepted" {
		t.Fatalf("after resolve and reopen: %+v", a)
	}
	e.waitFinal(a.EventID)
	if got := e.botReplies(conv); len(got) != 1 || got[0] != "Answer to: new problem" {
		t.Errorf("replies = %q", got)
	}
}

func TestOwnPostsWithUserTokenAreNotTakeover(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) {
		o.Chatwoot = chatwoot.NewClient(chatwoot.Options{BaseURL: o.Chatwoot.BaseURL(), Token: testUserToken})
	}})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	e.waitFinal(e.say(conv, "first").EventID)
	e.wait("echo of the answer", func() bool {
		evs, _ := e.db.ListEvents(t.Context(), store.EventFilter{ConversationID: conv})
		return slices.ContainsFunc(evs, func(x store.Event) bool { return x.Reason == ReasonOwnMessage })
	})
	c, _ := e.db.Conversation(t.Context(), 1, conv)
	if c.State != store.StateBot {
		t.Fatalf("bridge's own post (user token) counted as a takeover: %+v", c)
	}
	e.waitFinal(e.say(conv, "second").EventID)
	var userPosts int
	for _, m := range e.cw.Messages(conv) {
		if m.SenderType == "user" && !m.Private {
			userPosts++
		}
	}
	if userPosts != 2 {
		t.Errorf("answers posted with the user token = %d, want 2", userPosts)
	}
}

func TestEchoBeforePostReturns(t *testing.T) {
	e := newEnv(t, envOptions{cwOpts: func(o *simulate.ChatwootOptions) { o.EchoSync = true }})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	id := e.say(conv, "hello").EventID
	if ev := e.waitFinal(id); ev.Status != store.StatusAnswered || ev.PostedMessageID == 0 {
		t.Fatalf("event = %+v", ev)
	}
	evs, _ := e.db.ListEvents(t.Context(), store.EventFilter{ConversationID: conv})
	own := 0
	for _, x := range evs {
		if x.Reason == ReasonOwnMessage {
			own++
		}
		if x.Kind == store.KindTakeover {
			t.Errorf("own post read as a takeover: %+v", x)
		}
	}
	if own != 1 {
		t.Errorf("own_message events = %d", own)
	}
	if got := e.botReplies(conv); len(got) != 1 {
		t.Errorf("replies = %q", got)
	}
}

func TestSupersedeStopsDify(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := t.Context()
	e.dify.SetLatency(3 * time.Second)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	id := e.say(conv, "slow question").EventID
	if err := e.dify.WaitFor(ctx, func() bool { return len(e.dify.Requests()) == 1 }); err != nil {
		t.Fatal(err)
	}
	d, err := e.cw.AgentSays(ctx, conv, "I've got this one.", false)
	if err != nil {
		t.Fatal(err)
	}
	if a := ackOf(t, d); a.Status != "accepted" {
		t.Fatalf("takeover ack = %+v", a)
	}
	ev := e.waitFinal(id)
	if ev.Status != store.StatusSuperseded {
		t.Fatalf("event = %s %q", ev.Status, ev.Reason)
	}
	if got := e.botReplies(conv); len(got) != 0 {
		t.Errorf("a superseded answer reached the customer: %q", got)
	}
	notes := e.notes(conv)
	if len(notes) != 1 || !strings.HasPrefix(notes[0], "AI draft, not sent: ") {
		t.Errorf("notes = %q", notes)
	}
	e.wait("stop call", func() bool { return len(e.dify.Stops()) == 1 })
	if got, want := e.dify.Stops()[0], e.dify.Requests()[0].TaskID; got != want {
		t.Errorf("stopped task %q, want %q", got, want)
	}
}

func TestDraftMode(t *testing.T) {
	e := newEnv(t, envOptions{route: func(r *store.Route) { r.Mode = store.ModeDraft }})
	ctx := t.Context()
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "open")
	ev := e.waitFinal(e.say(conv, "where is my parcel").EventID)
	if ev.Status != store.StatusAnswered {
		t.Fatalf("event = %s %q", ev.Status, ev.LastError)
	}
	// An agent's reply does not stop a copilot, and keywords do not hand off.
	if d, _ := e.cw.AgentSays(ctx, conv, "Let me check.", false); ackOf(t, d).Status != "ignored" {
		t.Errorf("agent reply in a draft route: %s", d.Response)
	}
	ev = e.waitFinal(e.say(conv, "I want a human").EventID)
	if ev.Status != store.StatusAnswered {
		t.Fatalf("keyword in draft mode: %s %q", ev.Status, ev.Reason)
	}
	if got := e.botReplies(conv); len(got) != 0 {
		t.Errorf("draft route spoke to the customer: %q", got)
	}
	notes := e.notes(conv)
	if len(notes) != 2 || notes[0] != "AI draft: Answer to: where is my parcel" {
		t.Errorf("notes = %q", notes)
	}
	if e.cw.Status(conv) != "open" {
		t.Errorf("status changed to %s", e.cw.Status(conv))
	}
	for _, c := range e.cw.Calls() {
		if strings.HasSuffix(c.Path, "/toggle_status") {
			t.Errorf("draft route changed the status: %s", c.Body)
		}
	}
}

func TestDebounceJoinsMessages(t *testing.T) {
	// The worker is not running while the messages arrive (as if the
	// process restarted inside the window): the journal holds them, and
	// they are answered once, together.
	e := newEnv(t, envOptions{noRun: true, tune: func(o *Options) { o.Debounce = 300 * time.Millisecond }})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	var ids []int64
	for _, s := range []string{"hi", "my order", "is late"} {
		ids = append(ids, e.say(conv, s).EventID)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.core.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for _, id := range ids {
		if ev := e.waitFinal(id); ev.Status != store.StatusAnswered {
			t.Fatalf("event %d = %s", id, ev.Status)
		}
	}
	reqs := e.dify.Requests()
	if len(reqs) != 1 || reqs[0].Query != "hi\nmy order\nis late" {
		t.Fatalf("dify requests = %+v", reqs)
	}
	if got := e.botReplies(conv); len(got) != 1 {
		t.Errorf("replies = %q", got)
	}
	if m := e.event(ids[2]).MergedInto; m != ids[0] {
		t.Errorf("merged_into = %d, want %d", m, ids[0])
	}
}

func TestDebounceWaitsForQuiet(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.Debounce = 400 * time.Millisecond }})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	a := e.say(conv, "first")
	b := e.say(conv, "second")
	e.waitFinal(a.EventID)
	e.waitFinal(b.EventID)
	reqs := e.dify.Requests()
	if len(reqs) != 1 || reqs[0].Query != "first\nsecond" {
		t.Fatalf("dify requests = %+v", reqs)
	}
}

func TestDifyFailureModes(t *testing.T) {
	tests := []struct {
		name     string
		mode     string
		faults   []simulate.DifyFault
		idle     time.Duration
		want     string // final status
		reason   string // prefix of the reason
		requests int
	}{
		{"cut mid-stream then ok", "chat", []simulate.DifyFault{{CutAfter: 1}}, 0, store.StatusAnswered, "", 2},
		{"html 502 then ok", "chat", []simulate.DifyFault{{HTML: true}}, 0, store.StatusAnswered, "", 2},
		{"concurrency limit then ok", "chat", []simulate.DifyFault{{Status: 400, Code: "invalid_param",
			Message: "Too many requests. Please try again later. The current maximum concurrent requests allowed for app is 1."}}, 0, store.StatusAnswered, "", 2},
		{"429 then ok", "chat", []simulate.DifyFault{{Status: 429}}, 0, store.StatusAnswered, "", 2},
		{"500 forever", "chat", []simulate.DifyFault{{Status: 500}, {Status: 500}, {Status: 500}}, 0, store.StatusHandedOff, "AI failed: ", 3},
		{"error event", "chat", []simulate.DifyFault{{ErrorEvent: true}}, 0, store.StatusHandedOff, "AI failed: ", 1},
		{"401 not retried", "chat", []simulate.DifyFault{{Status: 401}}, 0, store.StatusHandedOff, "AI failed: ", 1},
		{"workflow failed", "advanced-chat", []simulate.DifyFault{{WorkflowFailed: true}}, 0, store.StatusHandedOff, "AI failed: ", 1},
		{"paused for human input", "advanced-chat", []simulate.DifyFault{{Paused: true}}, 0, store.StatusHandedOff, "AI requested handoff", 1},
		{"empty answer", "chat", []simulate.DifyFault{{Empty: true}}, 0, store.StatusHandedOff, "AI failed: empty answer", 1},
		{"pings only", "advanced-chat", []simulate.DifyFault{{PingsOnly: true}, {PingsOnly: true}, {PingsOnly: true}}, 150 * time.Millisecond, store.StatusHandedOff, "AI failed: ", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{appMode: tc.mode, tune: func(o *Options) {
				if tc.idle > 0 {
					o.DifyIdleTimeout = tc.idle
				}
			}})
			e.dify.Fail(testDifyKey, tc.faults...)
			conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
			ev := e.waitFinal(e.say(conv, "hello").EventID)
			if ev.Status != tc.want || !strings.HasPrefix(ev.Reason, tc.reason) {
				t.Fatalf("event = %s %q, want %s %q…", ev.Status, ev.Reason, tc.want, tc.reason)
			}
			if n := len(e.dify.Requests()); n != tc.requests {
				t.Errorf("dify requests = %d, want %d", n, tc.requests)
			}
			switch tc.want {
			case store.StatusAnswered:
				if got := e.botReplies(conv); len(got) != 1 || got[0] != "Answer to: hello" {
					t.Errorf("replies = %q", got)
				}
			case store.StatusHandedOff:
				if e.cw.Status(conv) != "open" || len(e.notes(conv)) != 1 {
					t.Errorf("handoff: status %s notes %q", e.cw.Status(conv), e.notes(conv))
				}
			}
		})
	}
}

func TestStaleDifyConversation(t *testing.T) {
	e := newEnv(t, envOptions{})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	e.waitFinal(e.say(conv, "first").EventID)
	e.dify.Fail(testDifyKey, simulate.DifyFault{Status: 404, Code: "not_found",
		Message: "Conversation Not Exists. You have requested this URI [/v1/chat-messages] but did you mean /v1/chat-messages ?"})
	id := e.say(conv, "second").EventID
	if ev := e.waitFinal(id); ev.Status != store.StatusAnswered {
		t.Fatalf("event = %s %q", ev.Status, ev.Reason)
	}
	reqs := e.dify.Requests()
	if len(reqs) != 3 || reqs[1].ConversationID == "" || reqs[2].ConversationID != "" || !reqs[2].NewConversation {
		t.Fatalf("requests = %+v", reqs)
	}
	if n := e.dify.ConversationCount(testDifyKey); n != 2 {
		t.Errorf("dify conversations = %d, want exactly one fresh one", n)
	}
	c, _ := e.db.Conversation(t.Context(), 1, conv)
	if c.DifyConversationID == "" || c.DifyConversationID == reqs[1].ConversationID {
		t.Errorf("mapping = %q", c.DifyConversationID)
	}
}

func TestChatwootFailures(t *testing.T) {
	t.Run("post retries then succeeds once", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.cw.Fail("messages", simulate.ChatwootFault{Status: 500}, simulate.ChatwootFault{Status: 429})
		conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
		id := e.say(conv, "hello").EventID
		if ev := e.waitFinal(id); ev.Status != store.StatusAnswered {
			t.Fatalf("event = %s %q", ev.Status, ev.LastError)
		}
		if got := e.botReplies(conv); len(got) != 1 {
			t.Errorf("replies = %q", got)
		}
		hops, _ := e.db.Hops(t.Context(), id)
		n := 0
		for _, h := range hops {
			if h.Stage == StageChatwoot && h.Outcome == "error, retrying" {
				n++
			}
		}
		if n != 2 {
			t.Errorf("retry hops = %d", n)
		}
	})
	t.Run("chatwoot refuses every post: the status still opens", func(t *testing.T) {
		e := newEnv(t, envOptions{tune: func(o *Options) { o.RetryBase = time.Millisecond }})
		refuse := make([]simulate.ChatwootFault, 64)
		for i := range refuse {
			refuse[i] = simulate.ChatwootFault{Status: 401}
		}
		e.cw.Fail("messages", refuse...)
		conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
		ev := e.waitFinal(e.say(conv, "where is my order?").EventID)
		if ev.Status != store.StatusFailed {
			t.Fatalf("event = %s %q", ev.Status, ev.LastError)
		}
		// The answer, the handoff message and the note were refused, but an
		// agent sees the conversation: it is open.
		if s := e.cw.Status(conv); s != "open" {
			t.Errorf("status = %s: the customer is left with nobody", s)
		}
		for _, want := range []string{"handoff message", "handoff note"} {
			if !strings.Contains(ev.LastError, want) {
				t.Errorf("last error %q does not name %s", ev.LastError, want)
			}
		}
		c, _ := e.db.Conversation(t.Context(), 1, conv)
		if c.State != store.StateHuman {
			t.Errorf("state = %s: the bot would answer a conversation handed to agents", c.State)
		}
		if got := scrape(t, e.srv.URL)[`bridge_events_finished_total{state="failed"}`]; got != 1 {
			t.Error("no failed event in /metrics")
		}
	})
	t.Run("only the status fails: the note says so", func(t *testing.T) {
		e := newEnv(t, envOptions{tune: func(o *Options) { o.RetryBase = time.Millisecond }})
		refuse := make([]simulate.ChatwootFault, 8)
		for i := range refuse {
			refuse[i] = simulate.ChatwootFault{Status: 500}
		}
		e.cw.Fail("toggle_status", refuse...)
		conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
		ev := e.waitFinal(e.say(conv, "human please").EventID)
		if ev.Status != store.StatusFailed || !strings.Contains(ev.LastError, "handoff status") {
			t.Fatalf("event = %s %q", ev.Status, ev.LastError)
		}
		notes := e.notes(conv)
		if len(notes) != 1 || !strings.Contains(notes[0], "not done: handoff status") {
			t.Errorf("notes = %q", notes)
		}
		// Chatwoot still says pending: the bot keeps the conversation rather
		// than leave it to nobody.
		c, _ := e.db.Conversation(t.Context(), 1, conv)
		if c.State != store.StateBot {
			t.Errorf("state = %s", c.State)
		}
	})
	t.Run("handoff note once after two failures", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.cw.Fail("messages", simulate.ChatwootFault{Status: 500}, simulate.ChatwootFault{Status: 500})
		e.cw.Fail("toggle_status", simulate.ChatwootFault{Status: 500})
		conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
		if ev := e.waitFinal(e.say(conv, "human please").EventID); ev.Status != store.StatusHandedOff {
			t.Fatalf("event = %s %q", ev.Status, ev.LastError)
		}
		if n := len(e.notes(conv)); n != 1 {
			t.Errorf("notes = %d", n)
		}
		if got := e.botReplies(conv); len(got) != 1 {
			t.Errorf("handoff messages = %q", got)
		}
		if e.cw.Status(conv) != "open" {
			t.Errorf("status = %s", e.cw.Status(conv))
		}
	})
	t.Run("failed handoff is visible and replay finishes it without repeating", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.cw.Fail("toggle_status", simulate.ChatwootFault{Status: 503}, simulate.ChatwootFault{Status: 503},
			simulate.ChatwootFault{Status: 503}, simulate.ChatwootFault{Status: 503})
		conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
		id := e.say(conv, "operator").EventID
		ev := e.waitFinal(id)
		if ev.Status != store.StatusFailed || !strings.Contains(ev.LastError, "503") {
			t.Fatalf("event = %s %q", ev.Status, ev.LastError)
		}
		if err := e.core.Redrive(t.Context(), id, false); err != nil {
			t.Fatal(err)
		}
		ev = e.waitFinal(id)
		if ev.Status != store.StatusHandedOff {
			t.Fatalf("after replay = %s %q", ev.Status, ev.LastError)
		}
		if n := len(e.notes(conv)); n != 1 {
			t.Errorf("notes = %d, want 1 (not repeated by the replay)", n)
		}
		if got := e.botReplies(conv); len(got) != 1 {
			t.Errorf("handoff messages = %q", got)
		}
		if e.cw.Status(conv) != "open" {
			t.Errorf("status = %s", e.cw.Status(conv))
		}
	})
	t.Run("answered event is not replayed without force", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
		id := e.say(conv, "hello").EventID
		e.waitFinal(id)
		if err := e.core.Redrive(t.Context(), id, false); err == nil || !strings.Contains(err.Error(), "already answered") {
			t.Fatalf("redrive of answered: %v", err)
		}
	})
}

// TestStaleSnapshotNeverUndoesTakeover: Chatwoot builds each payload when
// its event fires and delivers them out of order; a customer message built
// while the conversation was still pending arrives after the agent's
// takeover opened it. The bot must stay quiet; only a status change into
// pending, or an operator's give-back, returns the conversation.
func TestStaleSnapshotNeverUndoesTakeover(t *testing.T) {
	e := newEnv(t, envOptions{cwOpts: func(o *simulate.ChatwootOptions) { o.KeepPendingOnBotFailure = true }})
	ctx := t.Context()
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	e.waitFinal(e.say(conv, "hello").EventID)
	// The customer writes while the conversation is pending; its webhook is
	// late.
	var late []byte
	func() {
		e.cw.SetWebhook("http://127.0.0.1:1/nowhere", "")
		defer e.cw.SetWebhook(e.srv.URL+"/webhooks/chatwoot", "")
		_, _ = e.cw.CustomerSays(ctx, conv, "are you there?") // the delivery fails: it is late
		ds := e.cw.Deliveries()
		late = ds[len(ds)-1].Body
	}()
	if late == nil || !strings.Contains(string(late), `"status":"pending"`) {
		t.Fatalf("no late pending snapshot: %s", late)
	}
	d, err := e.cw.AgentSays(ctx, conv, "I'll take it from here.", false)
	if err != nil {
		t.Fatal(err)
	}
	e.waitFinal(ackOf(t, d).EventID)
	if s := e.cw.Status(conv); s != "open" {
		t.Fatalf("status after takeover = %s", s)
	}
	// The late delivery, and a retry of it, say pending: old news.
	for range 2 {
		d, err := e.cw.Deliver(ctx, late)
		if err != nil {
			t.Fatal(err)
		}
		if a := ackOf(t, d); a.Status != "ignored" {
			t.Errorf("late snapshot: %+v", a)
		}
	}
	c, _ := e.db.Conversation(ctx, 1, conv)
	if c.State != store.StateHuman || c.Status != "open" {
		t.Errorf("after the late snapshots: state %s, status %s", c.State, c.Status)
	}
	if got := e.botReplies(conv); len(got) != 1 {
		t.Errorf("the bot answered over the agent: %q", got)
	}
	// The operator gives it back: Chatwoot agrees, and the bot answers.
	if err := GiveBack(ctx, e.db, e.core.o.Chatwoot, e.core.o.BotStatuses, 1, conv); err != nil {
		t.Fatal(err)
	}
	if s := e.cw.Status(conv); s != "pending" {
		t.Errorf("status after give-back = %s", s)
	}
	e.waitFinal(e.say(conv, "one more question").EventID)
	if got := e.botReplies(conv); len(got) != 2 {
		t.Errorf("after give-back: bot replies %q", got)
	}
}

// TestFutureSnapshotDoesNotPinStatus: a payload dated far in the future
// must not outrank every later status.
func TestFutureSnapshotDoesNotPinStatus(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := t.Context()
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	e.waitFinal(e.say(conv, "hello").EventID)
	body := fmt.Sprintf(`{"event":"conversation_status_changed","id":%d,"inbox_id":1,"status":"open","updated_at":32503680000.5,`+
		`"messages":[{"account_id":1}],"contact_inbox":{"contact_id":1}}`, conv)
	if d, err := e.cw.Deliver(ctx, []byte(body)); err != nil || ackOf(t, d).Status != "ignored" {
		t.Fatalf("future snapshot: %v %+v", err, d)
	}
	if _, err := e.cw.SetStatus(ctx, conv, "pending"); err != nil {
		t.Fatal(err)
	}
	if a := e.say(conv, "still there?"); a.Status != "accepted" {
		c, _ := e.db.Conversation(ctx, 1, conv)
		t.Errorf("after a real status change: %+v (stored status %s at %v)", a, c.Status, c.StatusAt)
	}
}
