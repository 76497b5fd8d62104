package bridge

import (
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/store"
)

// TestPlanReplayCoversEveryRule: each case of ReplayRules is what
// PlanReplay answers for an event of that kind, with the rule's action, so
// --help and the README (which print the rules) say what replay does.
func TestPlanReplayCoversEveryRule(t *testing.T) {
	bot := store.Conversation{State: store.StateBot, Status: "pending"}
	human := store.Conversation{State: store.StateHuman, StateReason: "AI failed: dify 500", Status: "open"}
	openBot := store.Conversation{State: store.StateBot, Status: "open"}
	ev := func(status, steps string) *store.Event {
		return &store.Event{ID: 3, Status: status, Kind: store.KindMessage, Steps: steps, PostedMessageID: 1002}
	}
	cases := []struct {
		rule  string
		in    ReplayInput
		why   string // in the plan's Why
		steps []string
	}{
		{"accepted", ReplayInput{Event: ev(store.StatusAccepted, ""), Conv: bot}, "waiting for a worker", nil},
		{"failed", ReplayInput{Event: ev(store.StatusFailed, "handoff_reason_ai_failed,handoff_note"), Conv: human}, "from where it failed",
			[]string{"handoff_reason_ai_failed", "handoff_note"}},
		{"working", ReplayInput{Event: ev(store.StatusWorking, ""), Conv: bot}, "--force", nil},
		{"working-force", ReplayInput{Event: ev(store.StatusWorking, "answer"), Conv: bot, Force: true}, "interrupted", []string{"answer"}},
		{"answered", ReplayInput{Event: ev(store.StatusAnswered, "answer"), Conv: bot}, "Chatwoot message 1002", nil},
		{"answered-force", ReplayInput{Event: ev(store.StatusAnswered, "answer"), Conv: bot, Force: true}, "ask Dify again", []string{}},
		{"human", ReplayInput{Event: ev(store.StatusAnswered, "answer"), Conv: human, Force: true}, "with a human (AI failed: dify 500)", nil},
		{"answered-force", ReplayInput{Event: ev(store.StatusAnswered, "draft"), Conv: human, Force: true, Draft: true}, "ask Dify again", []string{}},
		{"customer-asked", ReplayInput{Event: ev(store.StatusHandedOff, "handoff_reason_customer_asked,handoff_note"), Conv: bot}, "customer asked", nil},
		{"takeover", ReplayInput{Event: &store.Event{Status: store.StatusHandedOff, Kind: store.KindTakeover}, Conv: bot}, "takeover", nil},
		{"human", ReplayInput{Event: ev(store.StatusHandedOff, "handoff_reason_ai_failed,handoff_note,handoff_status"), Conv: human}, "the handoff stands", nil},
		{"human", ReplayInput{Event: ev(store.StatusSuperseded, "superseded_note"), Conv: openBot}, "status is open, not a bot status", nil},
		{"back-to-bot", ReplayInput{Event: ev(store.StatusHandedOff, "handoff_reason_ai_failed,handoff_note,handoff_status,handoff_labels"), Conv: bot},
			"back with the bot", []string{}},
		{"back-to-bot", ReplayInput{Event: ev(store.StatusSuperseded, "superseded_note"), Conv: bot}, "back with the bot", []string{}},
		// A handoff driven anew looks at the opening hours anew.
		{"back-to-bot", ReplayInput{Event: ev(store.StatusHandedOff, "handoff_reason_ai_failed,handoff_hours_closed:today at 08:00 (Europe/Paris),handoff_message,handoff_status"), Conv: bot},
			"back with the bot", []string{}},
		{"merged", ReplayInput{Event: &store.Event{Status: store.StatusAnswered, MergedInto: 2}, Conv: bot}, "event 2", nil},
		{"payload", ReplayInput{Event: ev(store.StatusIgnored, ""), Conv: human}, "decide the payload again", nil},
		{"payload", ReplayInput{Event: ev(store.StatusRejected, ""), Conv: bot}, "decide the payload again", nil},
	}
	seen := map[string]bool{}
	for _, tc := range cases {
		tc.in.BotStatuses = []string{"pending"}
		p := PlanReplay(tc.in)
		if p.Rule == nil || p.Rule.Name != tc.rule || p.Action != p.Rule.Action || !strings.Contains(p.Why, tc.why) {
			t.Errorf("%s %q: plan %+v (rule %v), want rule %s with %q", tc.in.Event.Status, tc.in.Event.Steps, p, p.Rule, tc.rule, tc.why)
			continue
		}
		seen[tc.rule] = true
		if tc.steps == nil {
			continue
		}
		if got := keptSteps(tc.in.Event.Steps, p); strings.Join(got, ",") != strings.Join(tc.steps, ",") {
			t.Errorf("%s: steps kept %q, want %q", tc.rule, got, tc.steps)
		}
	}
	for _, r := range ReplayRules {
		if !seen[r.Name] {
			t.Errorf("rule %s is never chosen", r.Name)
		}
		if r.When == "" || r.Text == "" {
			t.Errorf("rule %s has no description", r.Name)
		}
	}
}

// TestPlanReplayIsPure: planning never changes the event it is given.
func TestPlanReplayIsPure(t *testing.T) {
	e := &store.Event{Status: store.StatusHandedOff, Kind: store.KindMessage, Steps: "handoff_reason_ai_failed,handoff_note"}
	before := *e
	PlanReplay(ReplayInput{Event: e, Conv: store.Conversation{State: store.StateBot}, BotStatuses: []string{"pending"}})
	if e.Status != before.Status || e.Steps != before.Steps || e.Reason != before.Reason {
		t.Errorf("event changed: %+v", *e)
	}
}
