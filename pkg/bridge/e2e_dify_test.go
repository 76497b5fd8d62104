package bridge

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// A New Agent app narrates and calls a tool before it answers, and repeats the whole answer in
// its closing message: the customer gets that answer once, and none of the narration, whether
// or not the route knows the app's mode.
func TestNewAgentAnswersOnce(t *testing.T) {
	for _, routeMode := range []string{simulate.ModeAgent, ""} {
		t.Run("route mode "+routeMode, func(t *testing.T) {
			e := newEnv(t, envOptions{appMode: simulate.ModeAgent, route: func(r *store.Route) { r.AppMode = routeMode }})
			conv := e.cw.NewConversation(1, simulate.Contact{ID: 7, Name: "Ann"}, "pending")
			ev := e.waitFinal(e.say(conv, "Where is my order?").EventID)
			if ev.Status != store.StatusAnswered {
				t.Fatalf("event = %s %q", ev.Status, ev.Reason)
			}
			if got := e.botReplies(conv); len(got) != 1 || got[0] != "Answer to: Where is my order?" {
				t.Fatalf("replies = %q, want the closing message once", got)
			}
			if n := len(e.dify.Requests()); n != 1 {
				t.Errorf("dify requests = %d, want 1", n)
			}
			// The second turn continues the same Dify conversation.
			e.waitFinal(e.say(conv, "What did I ask earlier?").EventID)
			if got := e.botReplies(conv); len(got) != 2 || got[1] != `Earlier you asked: "Where is my order?"` {
				t.Fatalf("replies = %q", got)
			}
		})
	}
}

// A 429 rate_limit_error is the workspace's billing quota: bridge hands off at once instead of
// spending its retries on it.
func TestDifyQuotaHandsOffAtOnce(t *testing.T) {
	e := newEnv(t, envOptions{}) // DifyMaxRetries is 2
	e.dify.Fail(testDifyKey, simulate.DifyFault{Quota: true}, simulate.DifyFault{Quota: true}, simulate.DifyFault{Quota: true})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	ev := e.waitFinal(e.say(conv, "hello").EventID)
	if ev.Status != store.StatusHandedOff || !strings.HasPrefix(ev.Reason, "AI failed: ") || !strings.Contains(ev.Reason, "rate_limit_error") {
		t.Fatalf("event = %s %q", ev.Status, ev.Reason)
	}
	if n := len(e.dify.Requests()); n != 1 {
		t.Errorf("dify requests = %d, want 1 (no retries)", n)
	}
	notes := e.notes(conv)
	if len(notes) != 1 || !strings.Contains(notes[0], "AI failed: ") || !strings.Contains(notes[0], "Workflow execution quota limit reached") {
		t.Errorf("notes = %q", notes)
	}
	if e.cw.Status(conv) != "open" || len(e.botReplies(conv)) != 1 {
		t.Errorf("status %s, replies %q: want open and the handoff message", e.cw.Status(conv), e.botReplies(conv))
	}
}

// deleteDifyConversation removes a conversation from the fake Dify through its API, as an
// operator clearing old conversations would.
func deleteDifyConversation(t *testing.T, e *env, id, user string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodDelete, e.difySrv.URL+"/v1/conversations/"+id,
		bytes.NewReader([]byte(`{"user":"`+user+`"}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testDifyKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete conversation: %d", resp.StatusCode)
	}
}

// Dify 1.14 chatflows report a conversation they no longer have as a code-less error event from
// their worker, not as a 404. With a mapped conversation, bridge starts a new one once.
func TestChatflowWorkerErrorStartsFreshConversation(t *testing.T) {
	e := newEnv(t, envOptions{appMode: simulate.ModeAdvancedChat})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 3, Name: "C"}, "pending")
	e.waitFinal(e.say(conv, "first").EventID)
	old := e.dify.Requests()[0]
	mapped, err := e.db.Conversation(t.Context(), 1, conv)
	if err != nil || mapped.DifyConversationID == "" {
		t.Fatalf("mapping = %+v, %v", mapped, err)
	}
	deleteDifyConversation(t, e, mapped.DifyConversationID, old.User)

	id := e.say(conv, "second").EventID
	if ev := e.waitFinal(id); ev.Status != store.StatusAnswered {
		t.Fatalf("event = %s %q", ev.Status, ev.Reason)
	}
	reqs := e.dify.Requests()
	if len(reqs) != 3 || reqs[1].ConversationID != mapped.DifyConversationID || !reqs[2].NewConversation {
		t.Fatalf("requests = %+v, want the mapped try, then one fresh one", reqs)
	}
	if got := e.botReplies(conv); len(got) != 2 || got[1] != "Answer to: second" {
		t.Errorf("replies = %q", got)
	}
	c, _ := e.db.Conversation(t.Context(), 1, conv)
	if c.DifyConversationID == "" || c.DifyConversationID == mapped.DifyConversationID {
		t.Errorf("mapping = %q, want the new conversation", c.DifyConversationID)
	}
	hops, _ := e.db.Hops(t.Context(), id)
	found := false
	for _, h := range hops {
		found = found || h.Outcome == "stale conversation" && strings.Contains(h.Detail, "failed before its first node")
	}
	if !found {
		t.Errorf("trace %+v lacks the stale-conversation hop", hops)
	}
}

func TestChatflowWorkerErrorFreshTriedOnce(t *testing.T) {
	e := newEnv(t, envOptions{appMode: simulate.ModeAdvancedChat})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 3, Name: "C"}, "pending")
	e.waitFinal(e.say(conv, "first").EventID)
	e.dify.Fail(testDifyKey, simulate.DifyFault{WorkerError: true}, simulate.DifyFault{WorkerError: true},
		simulate.DifyFault{WorkerError: true})
	ev := e.waitFinal(e.say(conv, "second").EventID)
	if ev.Status != store.StatusHandedOff {
		t.Fatalf("event = %s %q", ev.Status, ev.Reason)
	}
	reqs := e.dify.Requests()
	if len(reqs) != 3 || reqs[1].NewConversation || !reqs[2].NewConversation {
		t.Fatalf("requests = %+v, want the mapped try and one fresh one, no retries", reqs)
	}
}

// Without a conversation to blame, the same error is final: the request itself is what the
// worker refused.
func TestChatflowWorkerErrorWithoutMappingHandsOff(t *testing.T) {
	e := newEnv(t, envOptions{appMode: simulate.ModeAdvancedChat})
	e.dify.Fail(testDifyKey, simulate.DifyFault{WorkerError: true}, simulate.DifyFault{WorkerError: true},
		simulate.DifyFault{WorkerError: true})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 4, Name: "D"}, "pending")
	ev := e.waitFinal(e.say(conv, "hello").EventID)
	const why = "AI failed: dify chat: dify chatflow failed before its first node (no error code)"
	if ev.Status != store.StatusHandedOff || ev.Reason != why {
		t.Fatalf("event = %s %q, want handed off: %q", ev.Status, ev.Reason, why)
	}
	if n := len(e.dify.Requests()); n != 1 {
		t.Errorf("dify requests = %d, want 1", n)
	}
	if notes := e.notes(conv); len(notes) != 1 || strings.Split(notes[0], "\n")[0] != "Handoff: "+why {
		t.Errorf("notes = %q", notes)
	}
}
