package simulate

import (
	"encoding/json"
	"net/http"
)

// WorkingDay is one row of an inbox's working hours, as
// Inbox#weekly_schedule renders it (app/models/concerns/out_of_offisable.rb):
// DayOfWeek is Ruby's wday (0 = Sunday).
type WorkingDay struct {
	DayOfWeek    int
	ClosedAllDay bool
	OpenAllDay   bool
	OpenHour     int
	OpenMinutes  int
	CloseHour    int
	CloseMinutes int
}

// WorkingHours are an inbox's business hours settings.
type WorkingHours struct {
	Enabled bool
	// Timezone is an IANA name, as the inbox settings page stores it;
	// "" renders Chatwoot's default "UTC".
	Timezone    string
	Days        []WorkingDay
	OutOfOffice string
}

// defaultWorkingHours is the week every new inbox gets
// (OutOfOffisable#create_default_working_hours): Monday to Friday 9 to 17,
// the weekend closed, and the feature off.
func defaultWorkingHours() WorkingHours {
	days := []WorkingDay{{DayOfWeek: 0, ClosedAllDay: true}}
	for d := 1; d <= 5; d++ {
		days = append(days, WorkingDay{DayOfWeek: d, OpenHour: 9, CloseHour: 17})
	}
	return WorkingHours{Days: append(days, WorkingDay{DayOfWeek: 6, ClosedAllDay: true})}
}

func (w WorkingHours) timezone() string {
	if w.Timezone == "" {
		return "UTC"
	}
	return w.Timezone
}

// json renders the rows as the inbox API does: hours are null on a day
// closed all day (the validations skip them), and an open_all_day row is
// stored as 00:00-23:59 (WorkingHour#ensure_open_all_day_hours).
func (w WorkingHours) json() []obj {
	out := make([]obj, 0, len(w.Days))
	for _, d := range w.Days {
		var oh, om, ch, cm any = d.OpenHour, d.OpenMinutes, d.CloseHour, d.CloseMinutes
		switch {
		case d.OpenAllDay:
			oh, om, ch, cm = 0, 0, 23, 59
		case d.ClosedAllDay:
			oh, om, ch, cm = nil, nil, nil, nil
		}
		out = append(out, obj{
			{"day_of_week", d.DayOfWeek}, {"closed_all_day", d.ClosedAllDay}, {"open_hour", oh},
			{"open_minutes", om}, {"close_hour", ch}, {"close_minutes", cm}, {"open_all_day", d.OpenAllDay},
		})
	}
	return out
}

// SetWorkingHours sets an inbox's business hours (created if unknown).
// Days not given keep Chatwoot's default rows.
func (c *Chatwoot) SetWorkingHours(inboxID int64, h WorkingHours) {
	c.mu.Lock()
	defer c.mu.Unlock()
	in := c.inboxes[inboxID]
	if in == nil {
		in = c.addInboxLocked(inboxID, "", "", "")
	}
	def := defaultWorkingHours()
	byDay := map[int]WorkingDay{}
	for _, d := range def.Days {
		byDay[d.DayOfWeek] = d
	}
	for _, d := range h.Days {
		byDay[d.DayOfWeek] = d
	}
	h.Days = h.Days[:0:0]
	for d := 0; d <= 6; d++ {
		h.Days = append(h.Days, byDay[d])
	}
	in.hours = h
	c.changed.broadcast()
}

// AddAgent makes a user of the account an assignment may name; the user of
// UserToken always is one.
func (c *Chatwoot) AddAgent(id int64, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.agents[id] = name
}

func (c *Chatwoot) isUserLocked(id int64) bool {
	_, ok := c.agents[id]
	return ok || id == c.opts.UserID
}

// Assignee returns the conversation's assignee id and type ("User" or
// "AgentBot"); 0 and "" when nobody.
func (c *Chatwoot) Assignee(convID int64) (int64, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conv := c.convs[convID]; conv != nil {
		return conv.assigneeID, conv.assigneeType
	}
	return 0, ""
}

// Priority returns the conversation's priority, "" when none.
func (c *Chatwoot) Priority(convID int64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conv := c.convs[convID]; conv != nil {
		return conv.priority
	}
	return ""
}

// BotHandoffs is how many times Chatwoot dispatched conversation.bot_handoff
// for the conversation: a bot token's toggle_status from pending to open
// (ConversationsController#bot_handoff?). Chatwoot's bot-handoff report and
// waiting_since count only these.
func (c *Chatwoot) BotHandoffs(convID int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conv := c.convs[convID]; conv != nil {
		return conv.botHandoffs
	}
	return 0
}

// priorities is Conversation's priority enum.
var priorities = map[string]bool{"low": true, "medium": true, "high": true, "urgent": true}

// togglePriority is ConversationsController#toggle_priority:
// Conversation#toggle_priority sets priority.presence (so "" or null clears
// it) and answers 200 with no body. A value outside the enum raises
// ArgumentError, which Chatwoot does not rescue.
func (c *Chatwoot) togglePriority(_ *http.Request, rt route, _ string, body []byte) reply {
	var in struct {
		Priority *string `json:"priority"`
	}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			return cwError(http.StatusBadRequest, "Invalid request body")
		}
	}
	p := ""
	if in.Priority != nil {
		p = *in.Priority
	}
	if p != "" && !priorities[p] {
		return jsonReply(http.StatusInternalServerError, obj{{"status", 500}, {"error", "Internal Server Error"}})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	conv := c.convs[rt.convID]
	if conv == nil {
		return errNotFound
	}
	conv.priority = p
	conv.updated = c.opts.Now()
	c.changed.broadcast()
	return reply{status: http.StatusOK}
}
