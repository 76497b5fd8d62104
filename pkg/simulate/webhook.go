package simulate

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Delivery is one webhook POST made by the fake Chatwoot and what came back.
type Delivery struct {
	ID        string // X-Chatwoot-Delivery, reused by Redeliver
	Event     string // the payload's event
	Body      []byte // exactly the bytes sent (and signed)
	Status    int    // HTTP status of the last attempt; 0 when no answer came
	Response  []byte // answer body, first 1 MiB
	MessageID int64  // the message a message event is about, 0 otherwise
	Attempts  int
	Err       error // transport error of the last attempt, if any
	At        time.Time

	conv int64 // conversation the delivery concerns, for the failure side effects
}

const (
	botName        = "Dify Bot"
	userName       = "Agent Smith"
	userEmail      = "smith@example.com"
	isoMillis      = "2006-01-02T15:04:05.000Z"
	maxResponse    = 1 << 20
	botFailureNote = "Conversation was marked open by system due to an error with the agent bot."
)

// ErrNoWebhook is returned when a delivery is due but no webhook URL is set.
var ErrNoWebhook = errors.New("no webhook url configured")

// Signature returns the X-Chatwoot-Signature value Chatwoot sends for body
// delivered at timestamp (unix seconds, as sent in X-Chatwoot-Timestamp).
func Signature(secret, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// ---- scripted actors ----

// CustomerSays stores an incoming message from the conversation's contact
// and delivers message_created. It returns what the webhook receiver
// answered; a non-2xx answer is not an error. A resolved conversation is
// reopened first (pending in an inbox with an agent bot, open otherwise)
// and that status change is delivered before the message.
func (c *Chatwoot) CustomerSays(ctx context.Context, convID int64, text string) (Delivery, error) {
	c.mu.Lock()
	conv := c.convs[convID]
	if conv == nil {
		c.mu.Unlock()
		return Delivery{}, fmt.Errorf("customer message to conversation %d: %w", convID, errNoConversation)
	}
	var reopened []byte
	switch conv.status {
	case "resolved":
		next := "open"
		if conv.inbox.botURL != "" {
			next = "pending"
		}
		c.setStatusLocked(conv, next)
		reopened = railsJSON.marshal(c.statusEventLocked(conv))
	case "snoozed":
		c.setStatusLocked(conv, "open")
		reopened = railsJSON.marshal(c.statusEventLocked(conv))
	}
	m := &cwMsg{mtype: 0, content: text, senderKind: "contact", senderID: conv.contact.ID}
	c.addMessageLocked(conv, m)
	body := railsJSON.marshal(c.messageEventLocked(conv, m, "message_created"))
	c.mu.Unlock()
	if reopened != nil {
		_, _ = c.post(ctx, reopened, newUUID(), "conversation_status_changed", convID) // recorded in Deliveries
	}
	d, err := c.post(ctx, body, newUUID(), "message_created", convID)
	d.MessageID = m.id
	return d, err
}

// AgentSays stores an outgoing message (a private note if private) from
// the human agent (sender type "user") and delivers message_created.
func (c *Chatwoot) AgentSays(ctx context.Context, convID int64, text string, private bool) (Delivery, error) {
	return c.say(ctx, convID, &cwMsg{mtype: 1, content: text, private: private, senderKind: "user", senderID: c.opts.UserID})
}

// PhoneSays stores an outgoing public message with no sender, as a reply
// sent from the channel's own phone or app arrives, and delivers
// message_created.
func (c *Chatwoot) PhoneSays(ctx context.Context, convID int64, text string) (Delivery, error) {
	return c.say(ctx, convID, &cwMsg{mtype: 1, content: text})
}

func (c *Chatwoot) say(ctx context.Context, convID int64, m *cwMsg) (Delivery, error) {
	c.mu.Lock()
	conv := c.convs[convID]
	if conv == nil {
		c.mu.Unlock()
		return Delivery{}, fmt.Errorf("message to conversation %d: %w", convID, errNoConversation)
	}
	c.addMessageLocked(conv, m)
	body := railsJSON.marshal(c.messageEventLocked(conv, m, "message_created"))
	c.mu.Unlock()
	d, err := c.post(ctx, body, newUUID(), "message_created", convID)
	d.MessageID = m.id
	return d, err
}

// SetStatus changes the status as an agent would and delivers
// conversation_status_changed. Setting the current status again changes
// nothing and delivers nothing (zero Delivery).
func (c *Chatwoot) SetStatus(ctx context.Context, convID int64, status string) (Delivery, error) {
	if !validStatuses[status] {
		return Delivery{}, fmt.Errorf("set status of conversation %d: invalid status %q", convID, status)
	}
	c.mu.Lock()
	conv := c.convs[convID]
	if conv == nil {
		c.mu.Unlock()
		return Delivery{}, fmt.Errorf("set status of conversation %d: %w", convID, errNoConversation)
	}
	if !c.setStatusLocked(conv, status) {
		c.mu.Unlock()
		return Delivery{}, nil
	}
	body := railsJSON.marshal(c.statusEventLocked(conv))
	c.mu.Unlock()
	return c.post(ctx, body, newUUID(), "conversation_status_changed", convID)
}

// Redeliver POSTs the same body again with the same X-Chatwoot-Delivery
// (and a new timestamp and signature), as a retry does.
func (c *Chatwoot) Redeliver(ctx context.Context, d Delivery) (Delivery, error) {
	nd, err := c.post(ctx, d.Body, d.ID, d.Event, d.conv)
	nd.MessageID = d.MessageID
	return nd, err
}

// Deliver POSTs an arbitrary body to the webhook URL (signed if a secret is
// set), with a new delivery id.
func (c *Chatwoot) Deliver(ctx context.Context, body []byte) (Delivery, error) {
	var head struct {
		Event string `json:"event"`
		ID    int64  `json:"id"`
	}
	_ = json.Unmarshal(body, &head) // arbitrary bodies may be junk on purpose
	d, err := c.post(ctx, body, newUUID(), head.Event, 0)
	if head.Event == "message_created" || head.Event == "message_updated" {
		d.MessageID = head.ID
	}
	return d, err
}

// ---- delivery ----

func (c *Chatwoot) post(ctx context.Context, body []byte, id, event string, convID int64) (Delivery, error) {
	c.mu.Lock()
	url, secret := c.webhookURL, c.secret
	botInbox := false
	if conv := c.convs[convID]; conv != nil {
		botInbox = conv.inbox.botURL != ""
	}
	c.mu.Unlock()

	d := Delivery{ID: id, Event: event, Body: body, conv: convID, At: c.opts.Now()}
	if url == "" {
		d.Err = ErrNoWebhook
	} else {
		attempts := 1
		if c.opts.RetryDelay > 0 && botInbox {
			attempts = 3
		}
		for i := range attempts {
			if i > 0 && !sleep(ctx, c.opts.RetryDelay) {
				break
			}
			d.Attempts++
			d.Status, d.Response, d.Err = c.postOnce(ctx, url, secret, id, body)
			if d.Err == nil && d.Status != http.StatusTooManyRequests && d.Status != http.StatusInternalServerError {
				break
			}
		}
	}

	c.mu.Lock()
	c.deliveries.push(d)
	c.changed.broadcast()
	c.mu.Unlock()

	failed := d.Err != nil || d.Status < 200 || d.Status > 299
	if failed && url != "" && botInbox && (event == "message_created" || event == "message_updated") {
		c.botFailed(convID)
	}
	if d.Err != nil {
		return d, fmt.Errorf("deliver %s %s: %w", event, id, d.Err)
	}
	return d, nil
}

func (c *Chatwoot) postOnce(ctx context.Context, url, secret, id string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json")
	h.Set("User-Agent", "Ruby")
	h.Set("X-Chatwoot-Delivery", id)
	if secret != "" {
		ts := strconv.FormatInt(c.opts.Now().Unix(), 10)
		h.Set("X-Chatwoot-Timestamp", ts)
		h.Set("X-Chatwoot-Signature", Signature(secret, ts, body))
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse)) // let the connection be reused
	return resp.StatusCode, out, err
}

// botFailed is Chatwoot's reaction to a failed agent-bot delivery of a
// message event: a pending conversation is opened for humans, with an
// activity message, and the status change is delivered.
func (c *Chatwoot) botFailed(convID int64) {
	c.mu.Lock()
	conv := c.convs[convID]
	if conv == nil || conv.status != "pending" || c.opts.KeepPendingOnBotFailure {
		c.mu.Unlock()
		return
	}
	c.setStatusLocked(conv, "open")
	c.addMessageLocked(conv, &cwMsg{mtype: 2, content: botFailureNote})
	body := railsJSON.marshal(c.statusEventLocked(conv))
	c.mu.Unlock()
	c.goDeliver(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*webhookTimeout)
		defer cancel()
		_, _ = c.post(ctx, body, newUUID(), "conversation_status_changed", convID) // recorded in Deliveries
	})
}

// ---- payload shapes ----

func isoTime(t time.Time) string { return t.UTC().Format(isoMillis) }

func floatTime(t time.Time) float64 { return float64(t.UnixMicro()) / 1e6 }

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (c *Chatwoot) accountObj() obj {
	return obj{{"id", c.opts.AccountID}, {"name", c.opts.AccountName}}
}

// contactObj is a contact's push_event_data; with typ it is the variant
// inside conversation.meta and messages ("type":"contact").
func (c *Chatwoot) contactObj(ct *cwContact, typ bool) obj {
	o := obj{
		{"additional_attributes", obj{}}, {"custom_attributes", obj{}}, {"email", nullable(ct.Email)},
		{"id", ct.ID}, {"identifier", nil}, {"name", ct.Name}, {"phone_number", nil}, {"thumbnail", ""},
		{"blocked", false},
	}
	if typ {
		o = append(o, field{"type", "contact"})
	}
	return o
}

// webhookContact is the top-level sender of a contact's message: no "type".
func (c *Chatwoot) webhookContact(ct *cwContact) obj {
	return obj{
		{"account", c.accountObj()}, {"additional_attributes", obj{}}, {"avatar", ""}, {"custom_attributes", obj{}},
		{"email", nullable(ct.Email)}, {"id", ct.ID}, {"identifier", nil}, {"name", ct.Name},
		{"phone_number", nil}, {"thumbnail", ""}, {"blocked", false},
	}
}

func (c *Chatwoot) userObj() obj {
	return obj{{"id", c.opts.UserID}, {"name", userName}, {"available_name", userName}, {"avatar_url", ""},
		{"type", "user"}, {"availability_status", "online"}, {"thumbnail", ""}}
}

func (c *Chatwoot) botObj() obj {
	return obj{{"id", c.opts.BotID}, {"name", botName}, {"avatar_url", ""}, {"type", "agent_bot"}}
}

// restSender is the sender inside REST messages (push_event_data with type).
func (c *Chatwoot) restSender(conv *cwConv, m *cwMsg) (obj, any, any) {
	switch m.senderKind {
	case "contact":
		return c.contactObj(conv.contact, true), "Contact", m.senderID
	case "user":
		return c.userObj(), "User", m.senderID
	case "agent_bot":
		return c.botObj(), "AgentBot", m.senderID
	}
	return nil, nil, nil
}

func (c *Chatwoot) assigneeLocked(conv *cwConv) any {
	switch {
	case conv.assigneeID == 0:
		return nil
	case conv.assigneeType == "AgentBot":
		return obj{{"id", conv.assigneeID}, {"name", botName}, {"avatar_url", ""}, {"type", "agent_bot"}}
	case conv.assigneeID == c.opts.UserID:
		return c.userObj()
	}
	name := "Agent " + strconv.FormatInt(conv.assigneeID, 10)
	return obj{{"id", conv.assigneeID}, {"name", name}, {"available_name", name}, {"avatar_url", ""},
		{"type", "user"}, {"availability_status", "online"}, {"thumbnail", ""}}
}

// restMessageLocked renders a message as the REST API does. response is
// the messages#create view (§7); otherwise it is the fuller shape found in
// conversation.messages of webhook payloads.
func (c *Chatwoot) restMessageLocked(conv *cwConv, m *cwMsg, response bool) obj {
	sender, senderType, senderID := c.restSender(conv, m)
	if response {
		o := obj{
			{"id", m.id}, {"content", m.content}, {"inbox_id", conv.inbox.id}, {"conversation_id", conv.id},
			{"message_type", m.mtype}, {"content_type", m.contentType}, {"status", "sent"},
			{"content_attributes", m.attrs}, {"created_at", m.created.Unix()}, {"private", m.private},
			{"source_id", m.sourceID},
		}
		if sender != nil {
			o = append(o, field{"sender", sender})
		}
		if m.echoID != nil {
			o = append(o, field{"echo_id", m.echoID})
		}
		return o
	}
	o := obj{
		{"id", m.id}, {"content", m.content}, {"account_id", c.opts.AccountID}, {"inbox_id", conv.inbox.id},
		{"conversation_id", conv.id}, {"message_type", m.mtype}, {"created_at", m.created.Unix()},
		{"updated_at", isoTime(m.created)}, {"private", m.private}, {"status", "sent"}, {"source_id", m.sourceID},
		{"content_type", m.contentType}, {"content_attributes", m.attrs}, {"sender_type", senderType},
		{"sender_id", senderID}, {"external_source_ids", obj{}}, {"additional_attributes", obj{}},
		{"processed_message_content", m.content}, {"sentiment", obj{}},
		{"conversation", obj{
			{"assignee_id", nullableID(conv.assigneeID)}, {"unread_count", conv.unread},
			{"last_activity_at", conv.lastActivity.Unix()},
			{"contact_inbox", obj{{"source_id", conv.ci.sourceID}}},
		}},
	}
	if sender != nil {
		// A message without a sender has no "sender" key at all here.
		o = append(o, field{"sender", sender})
	}
	return o
}

func nullableID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

// conversationLocked is the conversation object of webhook payloads
// (Conversations::EventDataPresenter).
func (c *Chatwoot) conversationLocked(conv *cwConv) obj {
	msgs := []obj{}
	if conv.lastPublic != nil {
		msgs = append(msgs, c.restMessageLocked(conv, conv.lastPublic, false))
	}
	var team any
	if conv.team != 0 {
		team = obj{{"id", conv.team}, {"name", c.teamNameLocked(conv.team)}}
	}
	var assigneeType any
	if conv.assigneeID != 0 {
		assigneeType = conv.assigneeType
	}
	var firstReply any
	if !conv.firstReply.IsZero() {
		firstReply = isoTime(conv.firstReply)
	}
	labels := conv.labels
	if labels == nil {
		labels = []string{}
	}
	ci := conv.ci
	return obj{
		{"additional_attributes", obj{}},
		{"can_reply", true},
		{"channel", "Channel::Api"},
		{"contact_inbox", obj{
			{"id", ci.id}, {"contact_id", ci.contactID}, {"inbox_id", ci.inboxID}, {"source_id", ci.sourceID},
			{"created_at", isoTime(ci.created)}, {"updated_at", isoTime(ci.created)}, {"hmac_verified", false},
			{"pubsub_token", ci.pubsub},
		}},
		{"id", conv.id},
		{"inbox_id", conv.inbox.id},
		{"messages", msgs},
		{"labels", labels},
		{"meta", obj{
			{"sender", c.contactObj(conv.contact, true)}, {"assignee", c.assigneeLocked(conv)},
			{"assignee_type", assigneeType}, {"team", team}, {"hmac_verified", false},
		}},
		{"status", conv.status},
		{"custom_attributes", obj{}},
		{"snoozed_until", nil},
		{"unread_count", conv.unread},
		{"first_reply_created_at", firstReply},
		{"priority", nil},
		{"waiting_since", conv.waitingSince},
		{"agent_last_seen_at", conv.agentLastSeen},
		{"contact_last_seen_at", conv.contactLastSeen},
		{"last_activity_at", conv.lastActivity.Unix()},
		{"timestamp", conv.lastActivity.Unix()},
		{"created_at", conv.created.Unix()},
		{"updated_at", floatTime(conv.updated)},
	}
}

// messageEventLocked is Message#webhook_data plus the event name.
func (c *Chatwoot) messageEventLocked(conv *cwConv, m *cwMsg, event string) obj {
	var sender any
	switch m.senderKind {
	case "contact":
		sender = c.webhookContact(conv.contact)
	case "user":
		sender = obj{{"id", c.opts.UserID}, {"name", userName}, {"email", userEmail}, {"type", "user"}}
	case "agent_bot":
		sender = obj{{"id", c.opts.BotID}, {"name", botName}, {"type", "agent_bot"}}
	}
	return obj{
		{"account", c.accountObj()},
		{"additional_attributes", obj{}},
		{"content_attributes", m.attrs},
		{"content_type", m.contentType},
		{"content", m.content},
		{"conversation", c.conversationLocked(conv)},
		{"created_at", isoTime(m.created)},
		{"id", m.id},
		{"inbox", obj{{"id", conv.inbox.id}, {"name", conv.inbox.name}}},
		{"message_type", messageTypes[m.mtype]},
		{"private", m.private},
		{"sender", sender},
		{"source_id", m.sourceID},
		{"event", event},
	}
}

// statusEventLocked is conversation_status_changed: the conversation object
// with the event and changed_attributes (null in practice, see the notes).
func (c *Chatwoot) statusEventLocked(conv *cwConv) obj {
	return append(c.conversationLocked(conv), field{"event", "conversation_status_changed"}, field{"changed_attributes", nil})
}
