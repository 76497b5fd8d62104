package simulate

import (
	"encoding/json"
	"testing"
)

func TestChatwootBotHandoffAndAssignment(t *testing.T) {
	c, srv, _ := newTestChatwoot(t, ChatwootOptions{NoEcho: true})
	c.AddAgent(12, "Jane Agent")
	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	// A user token opening a pending conversation is no bot handoff.
	other := c.NewConversation(1, Contact{Name: "Joe"}, "pending")
	cwDo(t, srv, "POST", convPath(other, "/toggle_status"), userToken, map[string]any{"status": "open"})
	if c.BotHandoffs(other) != 0 {
		t.Fatal("a user's open counted as a bot handoff")
	}
	cwDo(t, srv, "POST", convPath(conv, "/toggle_status"), botToken, map[string]any{"status": "open"})
	if c.BotHandoffs(conv) != 1 || c.Status(conv) != "open" {
		t.Fatalf("bot handoff %d, status %s", c.BotHandoffs(conv), c.Status(conv))
	}
	st, b := cwDo(t, srv, "POST", convPath(conv, "/assignments"), botToken, map[string]any{"assignee_id": 12})
	var a map[string]any
	if err := json.Unmarshal(b, &a); st != 200 || err != nil || a["name"] != "Jane Agent" {
		t.Fatalf("assign: %d %s", st, b)
	}
	if id, typ := c.Assignee(conv); id != 12 || typ != "User" {
		t.Fatalf("assignee %d %s", id, typ)
	}
	// An id that is no user of the account unassigns (account.users.find_by).
	st, b = cwDo(t, srv, "POST", convPath(conv, "/assignments"), botToken, map[string]any{"assignee_id": 999})
	if st != 200 || string(b) != "null" {
		t.Fatalf("unknown agent: %d %s", st, b)
	}
	if id, _ := c.Assignee(conv); id != 0 {
		t.Fatalf("unknown agent left assignee %d", id)
	}
}

func TestChatwootTogglePriority(t *testing.T) {
	c, srv, _ := newTestChatwoot(t, ChatwootOptions{NoEcho: true})
	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	st, b := cwDo(t, srv, "POST", convPath(conv, "/toggle_priority"), botToken, map[string]any{"priority": "urgent"})
	if st != 200 || len(b) != 0 || c.Priority(conv) != "urgent" {
		t.Fatalf("%d %q priority %q", st, b, c.Priority(conv))
	}
	if st, _ := cwDo(t, srv, "POST", convPath(conv, "/toggle_priority"), botToken, map[string]any{"priority": "asap"}); st != 500 {
		t.Fatalf("invalid priority answered %d, want 500", st)
	}
	cwDo(t, srv, "POST", convPath(conv, "/toggle_priority"), botToken, map[string]any{"priority": nil})
	if c.Priority(conv) != "" {
		t.Fatalf("null did not clear: %q", c.Priority(conv))
	}
}

func TestChatwootInboxWorkingHours(t *testing.T) {
	c, srv, _ := newTestChatwoot(t, ChatwootOptions{NoEcho: true})
	c.AddInbox(4, "Shop", "")
	read := func() map[string]any {
		st, b := cwDo(t, srv, "GET", "/api/v1/accounts/1/inboxes/4", userToken, nil)
		var in map[string]any
		if err := json.Unmarshal(b, &in); st != 200 || err != nil {
			t.Fatalf("%d %s", st, b)
		}
		return in
	}
	in := read()
	days, _ := in["working_hours"].([]any)
	if in["working_hours_enabled"] != false || in["timezone"] != "UTC" || len(days) != 7 {
		t.Fatalf("defaults: %v", in)
	}
	if sun := days[0].(map[string]any); sun["closed_all_day"] != true || sun["open_hour"] != nil {
		t.Fatalf("sunday %v", sun)
	}
	c.SetWorkingHours(4, WorkingHours{Enabled: true, Timezone: "Europe/Paris", OutOfOffice: "We are away.",
		Days: []WorkingDay{{DayOfWeek: 6, OpenAllDay: true}}})
	in = read()
	days, _ = in["working_hours"].([]any)
	sat := days[6].(map[string]any)
	if in["working_hours_enabled"] != true || in["timezone"] != "Europe/Paris" || in["out_of_office_message"] != "We are away." ||
		sat["close_hour"] != float64(23) || sat["close_minutes"] != float64(59) || days[1].(map[string]any)["open_hour"] != float64(9) {
		t.Fatalf("set: %v", in)
	}
	if st, _ := cwDo(t, srv, "GET", "/api/v1/accounts/1/inboxes/4", botToken, nil); st != 401 {
		t.Fatalf("a bot token read the inbox: %d", st)
	}
}
