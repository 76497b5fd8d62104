package simulate

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Delivery is one webhook POST made by the fake Chatwoot and what came back.
type Delivery struct {
	ID        string // X-Chatwoot-Delivery, reused by retries and Redeliver
	Event     string // the payload's event
	Body      []byte // exactly the bytes sent (and signed): the snapshot taken when the event happened
	Status    int    // HTTP status of the last attempt; 0 when no answer came
	Response  []byte // answer body, first 1 MiB
	MessageID int64  // the message a message event is about, 0 otherwise
	Attempts  int
	Err       error // transport error of the last attempt, if any
	At        time.Time
	// ConversationID is the conversation the event is about (0 for
	// Deliver); a failed agent-bot delivery of a message event opens it.
	ConversationID int64

	seq uint64 // order of the events, for held deliveries
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
	return c.customerMessage(ctx, convID, text, nil)
}

func (c *Chatwoot) customerMessage(ctx context.Context, convID int64, text string, atts []Attachment) (Delivery, error) {
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
	if tr, _ := traitsOf(conv.inbox.channel); tr.inID != nil {
		m.sourceID = tr.inID() // the provider's id of the customer's message
	}
	c.addMessageLocked(conv, m)
	for _, a := range atts {
		c.newAttachmentLocked(m, a)
	}
	body := railsJSON.marshal(c.messageEventLocked(conv, m, "message_created"))
	c.mu.Unlock()
	c.transcribeLater(m)
	if reopened != nil {
		_, _ = c.post(ctx, c.newDelivery(reopened, "conversation_status_changed", convID, 0)) // recorded in Deliveries
	}
	return c.post(ctx, c.newDelivery(body, "message_created", convID, m.id))
}

// AgentSays stores an outgoing message (a private note if private) from
// the human agent (sender type "user") and delivers message_created. The
// channel then sends a public one to the customer, which on external
// channels is followed, in the background, by message_updated.
func (c *Chatwoot) AgentSays(ctx context.Context, convID int64, text string, private bool) (Delivery, error) {
	return c.say(ctx, convID, &cwMsg{mtype: 1, content: text, private: private, senderKind: "user", senderID: c.opts.UserID})
}

// PhoneSays stores an outgoing public message with no sender, as a reply
// sent from the channel's own phone or app arrives (with the provider's
// source_id on external channels), and delivers message_created. The
// customer saw it: it was sent from the phone.
func (c *Chatwoot) PhoneSays(ctx context.Context, convID int64, text string) (Delivery, error) {
	return c.say(ctx, convID, &cwMsg{mtype: 1, content: text, delivered: true})
}

func (c *Chatwoot) say(ctx context.Context, convID int64, m *cwMsg) (Delivery, error) {
	c.mu.Lock()
	conv := c.convs[convID]
	if conv == nil {
		c.mu.Unlock()
		return Delivery{}, fmt.Errorf("message to conversation %d: %w", convID, errNoConversation)
	}
	if tr, _ := traitsOf(conv.inbox.channel); m.delivered && tr.inID != nil {
		m.sourceID = tr.inID()
	}
	c.addMessageLocked(conv, m)
	body := railsJSON.marshal(c.messageEventLocked(conv, m, "message_created"))
	sends := !m.delivered && c.sendOnChannelLocked(conv, m)
	c.mu.Unlock()
	d, err := c.post(ctx, c.newDelivery(body, "message_created", convID, m.id))
	if sends {
		c.finishSendLater(conv.id, m, true)
	}
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
	return c.post(ctx, c.newDelivery(body, "conversation_status_changed", convID, 0))
}

// Redeliver POSTs the same bytes again with the same X-Chatwoot-Delivery
// (and a new timestamp and signature), as a Sidekiq retry of the job does:
// the payload is the snapshot taken when the event happened, however the
// conversation changed since. It is sent at once, never held.
func (c *Chatwoot) Redeliver(ctx context.Context, d Delivery) (Delivery, error) {
	return c.post(ctx, Delivery{ID: d.ID, Event: d.Event, Body: d.Body, MessageID: d.MessageID, ConversationID: d.ConversationID})
}

// Deliver POSTs an arbitrary body to the webhook URL (signed if a secret is
// set), with a new delivery id.
func (c *Chatwoot) Deliver(ctx context.Context, body []byte) (Delivery, error) {
	var head struct {
		Event string `json:"event"`
		ID    int64  `json:"id"`
	}
	_ = json.Unmarshal(body, &head) // arbitrary bodies may be junk on purpose
	d := c.newDelivery(body, head.Event, 0, 0)
	if head.Event == "message_created" || head.Event == "message_updated" {
		d.MessageID = head.ID
	}
	return c.post(ctx, d)
}

// ---- delivery ----

// newDelivery prepares a delivery of a payload built now, with a new
// X-Chatwoot-Delivery (Chatwoot makes one per event and destination when it
// queues the job).
func (c *Chatwoot) newDelivery(body []byte, event string, convID, msgID int64) Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deliverySeq++
	return Delivery{ID: newUUID(), Event: event, Body: body, ConversationID: convID, MessageID: msgID, seq: c.deliverySeq}
}

// isRetryable is RETRYABLE_AGENT_BOT_STATUSES: only an HTTP answer of 429 or
// 500 is retried. Timeouts, refused connections and every other status fail
// at once (lib/webhooks/trigger.rb#retryable_agent_bot_error?, which reads the
// status only from a SafeFetch::HttpError).
func isRetryable(status int, err error) bool {
	return err == nil && (status == http.StatusTooManyRequests || status == http.StatusInternalServerError)
}

// retryWait is the wait between agent-bot attempts for RetryDelay; negative
// means no retry.
func retryWait(opt time.Duration) time.Duration {
	if opt == 0 {
		return 3 * time.Second // ActiveJob adds up to 15 % jitter; the fake does not
	}
	return opt
}

// post delivers d now and records it. Deliveries of conversations in an
// inbox with an agent bot are agent-bot deliveries: retried on 429 and 500,
// and a final failure of a message event opens a pending conversation.
func (c *Chatwoot) post(ctx context.Context, d Delivery) (Delivery, error) {
	c.mu.Lock()
	url, secret := c.webhookURL, c.secret
	botInbox := false
	if conv := c.convs[d.ConversationID]; conv != nil {
		botInbox = conv.inbox.botURL != ""
	}
	c.mu.Unlock()

	d.At = c.opts.Now()
	if url == "" {
		d.Err = ErrNoWebhook
	} else {
		attempts, wait := 1, retryWait(c.opts.RetryDelay)
		if botInbox && wait >= 0 {
			attempts = 3
		}
		for i := range attempts {
			if i > 0 && !sleep(ctx, wait) {
				break
			}
			d.Attempts++
			d.Status, d.Response, d.Err = c.postOnce(ctx, url, secret, d.ID, d.Body)
			if !isRetryable(d.Status, d.Err) {
				break
			}
		}
	}

	c.mu.Lock()
	c.deliveries.push(d)
	c.changed.broadcast()
	c.mu.Unlock()

	failed := d.Err != nil || d.Status < 200 || d.Status > 299
	if failed && url != "" && botInbox && (d.Event == "message_created" || d.Event == "message_updated") {
		c.botFailed(d.ConversationID)
	}
	if d.Err != nil {
		return d, fmt.Errorf("deliver %s %s: %w", d.Event, d.ID, d.Err)
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
// message event (lib/webhooks/trigger.rb#handle_error,
// #update_conversation_status): a conversation that is pending now (not in
// the payload) and whose account does not keep_pending_on_bot_failure is
// opened, with an activity message, and the status change goes out like
// any other event.
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
	c.echo(c.newDelivery(body, "conversation_status_changed", convID, 0), false)
}

// ---- background deliveries ----

// echo sends a delivery that Chatwoot makes from a background job (the
// echo of an API call, message_updated after a channel send, the status
// change after a bot failure). The payload was built when the event
// happened (AgentBotListener runs synchronously, app/dispatchers/sync_dispatcher.rb);
// AgentBots::WebhookJob sends it later, from one of several Sidekiq threads,
// so deliveries go out after a random delay and in no fixed order. sync
// (EchoSync) sends before returning. While HoldEchoes is on, the delivery
// waits in the held queue instead.
func (c *Chatwoot) echo(d Delivery, sync bool) {
	if c.holdLocked(d) {
		return
	}
	if sync {
		_, _ = c.post(context.Background(), d) // recorded in Deliveries
		return
	}
	delay := c.echoDelay()
	c.goDeliver(func() {
		sleep(context.Background(), delay)
		if c.holdLocked(d) { // HoldEchoes catches deliveries still on their way
			return
		}
		_, _ = c.post(context.Background(), d) // recorded in Deliveries
	})
}

// holdLocked queues d if deliveries are held (or drops it once closed) and
// reports whether it did. It takes the lock itself.
func (c *Chatwoot) holdLocked(d Delivery) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holding {
		return false
	}
	if !c.closed {
		i, _ := slices.BinarySearchFunc(c.held, d.seq, func(h Delivery, seq uint64) int { return cmp.Compare(h.seq, seq) })
		c.held = slices.Insert(c.held, i, d)
		c.changed.broadcast()
	}
	return true
}

func (c *Chatwoot) echoDelay() time.Duration {
	bound := c.opts.EchoDelay
	if bound == 0 {
		bound = DefaultEchoDelay
	}
	if bound < 0 {
		return 0
	}
	return rand.N(bound)
}

// HoldEchoes makes background deliveries (echoes of API calls, EchoSync
// ones included, message_updated after a channel send, the status change
// after a bot failure) wait instead of going out, so that a test can send
// them in the order it wants with ReleaseEchoes. Deliveries already delayed
// in the background are held too. The scripted actors (CustomerSays,
// SetStatus...), Deliver and Redeliver are never held.
func (c *Chatwoot) HoldEchoes() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = true
}

// HeldEchoes returns the deliveries waiting, in the order their events
// happened, not yet attempted.
func (c *Chatwoot) HeldEchoes() []Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.held)
}

// ReleaseEchoes sends held deliveries one after the other and returns what
// each got: those named by ids (Delivery.ID from HeldEchoes) in that order,
// or, with no ids, all of them in the order their events happened. An
// unknown id sends nothing. Holding goes on: deliveries these cause (the
// status change after a failed one) are held in turn.
func (c *Chatwoot) ReleaseEchoes(ctx context.Context, ids ...string) ([]Delivery, error) {
	c.mu.Lock()
	var picked []Delivery
	if len(ids) == 0 {
		picked, c.held = c.held, nil
	} else {
		for _, id := range ids {
			i := slices.IndexFunc(c.held, func(d Delivery) bool { return d.ID == id })
			if i < 0 {
				c.held = append(c.held, picked...)
				slices.SortFunc(c.held, func(a, b Delivery) int { return cmp.Compare(a.seq, b.seq) })
				c.mu.Unlock()
				return nil, fmt.Errorf("release delivery %s: not held", id)
			}
			picked = append(picked, c.held[i])
			c.held = slices.Delete(c.held, i, i+1)
		}
	}
	c.changed.broadcast()
	c.mu.Unlock()

	out := make([]Delivery, 0, len(picked))
	var errs []error
	for _, d := range picked {
		got, err := c.post(ctx, d)
		out = append(out, got)
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// ReleaseEchoesReversed sends every held delivery, the newest event first.
func (c *Chatwoot) ReleaseEchoesReversed(ctx context.Context) ([]Delivery, error) {
	held := c.HeldEchoes()
	ids := make([]string, len(held))
	for i, d := range held {
		ids[len(held)-1-i] = d.ID
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return c.ReleaseEchoes(ctx, ids...)
}

// ResumeEchoes stops holding; deliveries still held go out in the
// background as usual.
func (c *Chatwoot) ResumeEchoes() {
	c.mu.Lock()
	held := c.held
	c.holding, c.held = false, nil
	c.mu.Unlock()
	for _, d := range held {
		c.echo(d, false)
	}
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
		{"id", ct.ID}, {"identifier", nil}, {"name", ct.Name}, {"phone_number", nullable(ct.Phone)}, {"thumbnail", ""},
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
		{"phone_number", nullable(ct.Phone)}, {"thumbnail", ""}, {"blocked", false},
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
	name := c.agents[conv.assigneeID]
	return obj{{"id", conv.assigneeID}, {"name", name}, {"available_name", name}, {"avatar_url", ""},
		{"type", "user"}, {"availability_status", "online"}, {"thumbnail", ""}}
}

// restMessageLocked renders a message as the REST API does. response is
// api/v1/models/_message.json.jbuilder (messages#create and #index);
// otherwise it is the fuller shape found in conversation.messages of
// webhook payloads.
func (c *Chatwoot) restMessageLocked(conv *cwConv, m *cwMsg, response bool) obj {
	sender, senderType, senderID := c.restSender(conv, m)
	if response {
		o := obj{
			{"id", m.id}, {"content", m.content}, {"inbox_id", conv.inbox.id}, {"conversation_id", conv.id},
			{"message_type", m.mtype}, {"content_type", m.contentType}, {"status", m.status},
			{"content_attributes", m.attrs}, {"created_at", m.created.Unix()}, {"private", m.private},
			{"source_id", m.sourceID},
		}
		if sender != nil {
			o = append(o, field{"sender", sender})
		}
		if m.echoID != nil {
			o = append(o, field{"echo_id", m.echoID})
		}
		if len(m.atts) > 0 {
			o = append(o, field{"attachments", c.attachmentsJSON(m)})
		}
		return o
	}
	o := obj{
		{"id", m.id}, {"content", m.content}, {"account_id", c.opts.AccountID}, {"inbox_id", conv.inbox.id},
		{"conversation_id", conv.id}, {"message_type", m.mtype}, {"created_at", m.created.Unix()},
		{"updated_at", isoTime(m.created)}, {"private", m.private}, {"status", m.status}, {"source_id", m.sourceID},
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
	if len(m.atts) > 0 {
		// Message#push_event_data adds attachments when there are some.
		o = append(o, field{"attachments", c.attachmentsJSON(m)})
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
		{"additional_attributes", conv.attrs},
		{"can_reply", c.canReplyLocked(conv)},
		{"channel", conv.inbox.channel},
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
		{"priority", nullable(conv.priority)},
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
	o := obj{
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
	}
	if len(m.atts) > 0 {
		// Message#webhook_data adds attachments only when there are some.
		o = append(o, field{"attachments", c.attachmentsJSON(m)})
	}
	return append(o, field{"event", event})
}

// statusEventLocked is conversation_status_changed: the conversation object
// with the event and changed_attributes (null in practice, see the notes).
func (c *Chatwoot) statusEventLocked(conv *cwConv) obj {
	return append(c.conversationLocked(conv), field{"event", "conversation_status_changed"}, field{"changed_attributes", nil})
}
