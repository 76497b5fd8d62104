package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

const testDashboardKey = "dash-key-SECRET-0005-abcdefghij"

// dashPost carries out a Dashboard App action as the page does.
func (e *env) dashPost(action string, conv int64, agentID int64, agentName string) (int, map[string]any) {
	e.t.Helper()
	body, _ := json.Marshal(map[string]any{"account_id": 1, "conversation_id": conv,
		"agent": map[string]any{"id": agentID, "name": agentName, "email": "jane@example.com"}})
	req, err := http.NewRequestWithContext(e.t.Context(), http.MethodPost, e.srv.URL+"/app/api/"+action, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testDashboardKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatalf("%s: %d %q", action, res.StatusCode, raw)
	}
	return res.StatusCode, out
}

func (e *env) conv(id int64) store.Conversation {
	e.t.Helper()
	c, err := e.db.Conversation(e.t.Context(), 1, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// TestDashboardActions drives the Dashboard App's three buttons against the
// real pipeline: each is journaled with the agent's name, the draft is a
// private note, and the customer hears nothing from any of them.
func TestDashboardActions(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.DashboardKey = testDashboardKey }})
	ctx := t.Context()
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "Jane Doe"}, "pending")
	e.waitFinal(e.say(conv, "Where is my order?").EventID)
	e.waitFinal(e.say(conv, "I want a human").EventID)
	if c := e.conv(conv); c.State != store.StateHuman {
		t.Fatalf("after the keyword: state %s", c.State)
	}
	// A human holds it: the customer's next message is ignored, yet it is
	// the one an agent asks the AI about.
	if a := e.say(conv, "Can I change the address?"); a.Status != "ignored" {
		t.Fatalf("message in a human-held conversation: %+v", a)
	}
	public := len(e.botReplies(conv))

	code, res := e.dashPost("ask-again", conv, 3, "Jane Doe")
	if code != http.StatusOK {
		t.Fatalf("ask-again: %d %v", code, res)
	}
	id := int64(res["event_id"].(float64))
	ev := e.waitFinal(id)
	if ev.Status != store.StatusAnswered || ev.Kind != KindAskAgain || ev.Reason != "asked again by Jane Doe (agent 3)" {
		t.Errorf("ask-again event: %s %s %q", ev.Status, ev.Kind, ev.Reason)
	}
	notes := e.notes(conv)
	if last := notes[len(notes)-1]; last != "AI draft: Answer to: Can I change the address?" {
		t.Errorf("last note = %q", last)
	}
	if got := e.botReplies(conv); len(got) != public {
		t.Errorf("ask-again reached the customer: %q", got[public:])
	}
	hops, _ := e.db.Hops(ctx, id)
	if len(hops) == 0 || hops[0].Stage != StageAgent || !strings.Contains(hops[0].Detail, "Jane Doe (agent 3) asked the AI again") {
		t.Errorf("first hop of the ask-again: %+v", hops)
	}
	if c := e.conv(conv); c.State != store.StateHuman {
		t.Errorf("ask-again changed the holder: %s", c.State)
	}

	code, res = e.dashPost("give-back", conv, 3, "Jane Doe")
	if code != http.StatusOK {
		t.Fatalf("give-back: %d %v", code, res)
	}
	if c := e.conv(conv); c.State != store.StateBot || c.StateReason != "given back by Jane Doe (agent 3)" {
		t.Errorf("after give-back: %s %q", c.State, c.StateReason)
	}
	if s := e.cw.Status(conv); s != "pending" {
		t.Errorf("Chatwoot status after give-back = %s", s)
	}
	e.waitFinal(e.say(conv, "Thanks, and the invoice?").EventID)
	if got := e.botReplies(conv); len(got) != public+1 || got[public] != "Answer to: Thanks, and the invoice?" {
		t.Errorf("after give-back the bot did not answer: %q", got)
	}

	code, res = e.dashPost("keep", conv, 0, "")
	if code != http.StatusOK {
		t.Fatalf("keep: %d %v", code, res)
	}
	if c := e.conv(conv); c.State != store.StateHuman || c.StateReason != "kept for humans by an agent (Dashboard App)" {
		t.Errorf("after keep: %s %q", c.State, c.StateReason)
	}
	if a := e.say(conv, "Hello?"); a.Status != "ignored" || a.Reason != ReasonHumanOwned {
		t.Errorf("message after keep: %+v", a)
	}
	if got := e.botReplies(conv); len(got) != public+1 {
		t.Errorf("the bot spoke in a kept conversation: %q", got)
	}

	// The view shows it all, newest first.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/app/api/conversation?account_id=1&conversation_id="+strconv.FormatInt(conv, 10), nil)
	req.Header.Set("Authorization", "Bearer "+testDashboardKey)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var v struct {
		Conversation struct{ State, StateReason string } `json:"conversation"`
		Events       []struct {
			Kind    string
			Summary struct {
				Posted  []string
				Handoff string
			}
		}
	}
	if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	kinds := []string{}
	for _, x := range v.Events {
		kinds = append(kinds, x.Kind)
	}
	if strings.Join(kinds, ",") != "message,ask_again,message,message" {
		t.Errorf("event kinds newest first = %v", kinds)
	}
	if len(v.Events) == 4 && (len(v.Events[1].Summary.Posted) != 1 || !strings.HasPrefix(v.Events[1].Summary.Posted[0], "draft #")) {
		t.Errorf("ask-again posted = %v", v.Events[1].Summary.Posted)
	}
	if len(v.Events) == 4 && !strings.HasPrefix(v.Events[2].Summary.Handoff, "customer asked for a human: ") {
		t.Errorf("handoff summary = %q", v.Events[2].Summary.Handoff)
	}
	if strings.Contains(e.logs.String(), testDashboardKey) {
		t.Error("the dashboard key was logged")
	}
}

func TestDashboardOffWithoutKey(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true})
	for _, p := range []string{"/app/", "/app/app.js", "/app/api/conversation?account_id=1&conversation_id=1"} {
		res, err := http.Get(e.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("%s without dashboard.key: %d, want 404", p, res.StatusCode)
		}
	}
}

func TestAskAgainRefusals(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true})
	ctx := t.Context()
	if _, err := AskAgain(ctx, e.db, 1, 99, Operator); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown conversation: %v", err)
	}
	// A conversation bridge knows only from an agent's reply has no
	// customer message to ask about.
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "Jane Doe"}, "pending")
	if _, err := e.cw.AgentSays(ctx, conv, "Hello from an agent", false); err != nil {
		t.Fatal(err)
	}
	if _, err := AskAgain(ctx, e.db, 1, conv, Operator); !errors.Is(err, ErrNoCustomerMessage) {
		t.Errorf("no customer message: %v", err)
	}
	if err := Keep(ctx, e.db, 1, 98, Operator); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("keep of an unknown conversation: %v", err)
	}
	// A disabled route is not asked.
	e.say(conv, "Are you there?")
	if err := e.db.SetRouteEnabled(ctx, e.route.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := AskAgain(ctx, e.db, 1, conv, Operator); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("disabled route: %v", err)
	}
}
