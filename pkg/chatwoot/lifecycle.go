package chatwoot

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// AssignAgent assigns the conversation to a user of the account (bot
// tokens may: assignments#create is among the bot endpoints). Chatwoot
// looks the id up among the account's users and unassigns when it finds
// none (Conversations::AssignmentService#assignee), answering null: that
// is reported as ErrUnknownAgent.
func (c *Client) AssignAgent(ctx context.Context, account, conv, agent int64) error {
	var out json.RawMessage
	if err := c.do(ctx, "assign agent", http.MethodPost, c.convPath(account, conv, "assignments"),
		map[string]int64{"assignee_id": agent}, &out); err != nil {
		return err
	}
	if len(out) == 0 || string(out) == "null" {
		return fmt.Errorf("assign agent %d: %w", agent, ErrUnknownAgent)
	}
	return nil
}

// ErrUnknownAgent: Chatwoot knows no user of that id in the account.
var ErrUnknownAgent = fmt.Errorf("no such agent in the account (Chatwoot left the conversation unassigned)")

// TogglePriority sets the conversation's priority (urgent, high, medium,
// low; "" clears it). Bot tokens may.
func (c *Client) TogglePriority(ctx context.Context, account, conv int64, priority string) error {
	var p any
	if priority != "" {
		p = priority
	}
	return c.do(ctx, "toggle priority", http.MethodPost, c.convPath(account, conv, "toggle_priority"),
		map[string]any{"priority": p}, nil)
}

// InboxHours is the business-hours part of an inbox
// (app/views/api/v1/models/_inbox.json.jbuilder): working_hours is
// Inbox#weekly_schedule, timezone an IANA name ("UTC" by default).
type InboxHours struct {
	WorkingHoursEnabled bool              `json:"working_hours_enabled"`
	WorkingHours        []json.RawMessage `json:"working_hours"`
	Timezone            string            `json:"timezone"`
	OutOfOfficeMessage  string            `json:"out_of_office_message"`
}

// InboxHours reads an inbox's working hours. The inbox API is for user
// tokens: a bot token gets 401 "not authorized for bots".
func (c *Client) InboxHours(ctx context.Context, account, inbox int64) (*InboxHours, error) {
	var out struct {
		InboxHours
		OutOfOffice *string `json:"out_of_office_message"`
	}
	if err := c.do(ctx, "get inbox", http.MethodGet, fmt.Sprintf("/api/v1/accounts/%d/inboxes/%d", account, inbox), nil, &out); err != nil {
		return nil, err
	}
	h := out.InboxHours
	if out.OutOfOffice != nil {
		h.OutOfOfficeMessage = *out.OutOfOffice
	}
	return &h, nil
}
