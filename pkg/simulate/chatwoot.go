package simulate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ChatwootOptions configures a fake Chatwoot. Zero values take the defaults
// named on each field.
type ChatwootOptions struct {
	AccountID   int64  // default 1
	AccountName string // default "Acme"
	BotToken    string // agent bot access token (needed for the bot endpoints)
	UserToken   string // optional user (administrator) token
	BotID       int64  // default 7; sender of posts made with BotToken
	UserID      int64  // default 3; the human agent "Agent Smith", sender of posts made with UserToken
	Version     string // GET /api version, default "4.14.0"
	// WebhookURL is where webhooks are POSTed, exactly as given (a query
	// such as ?token=... is kept).
	WebhookURL string
	// WebhookSecret, if set, signs deliveries: X-Chatwoot-Timestamp and
	// X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, ts + "." + body)>.
	WebhookSecret string
	// EchoSync delivers the webhook echoing a message posted through the API
	// (and a status change made through the API) before the API call is
	// answered, the hardest ordering for a client. By default the echo is
	// delivered in the background, after a random delay (EchoDelay), in no
	// particular order with other background deliveries. HoldEchoes holds
	// these echoes too.
	EchoSync bool
	// NoEcho does not echo messages and status changes made through the
	// API, nor send the message_updated that follows a channel's send of
	// such a message.
	NoEcho bool
	// EchoDelay bounds the random delay before each background delivery
	// (echoes of API calls, message_updated after a channel send, the status
	// change after a failed agent-bot delivery). Chatwoot builds these
	// payloads when the event happens and sends them from Sidekiq jobs on
	// several threads, so they arrive late and in any order. 0 means
	// DefaultEchoDelay; a negative value sends at once (still in the
	// background).
	EchoDelay time.Duration
	// RetryDelay is the wait between attempts of an agent-bot delivery
	// answered 429 or 500, 3 attempts in all (app/jobs/agent_bots/webhook_job.rb:
	// retry_on Webhooks::Trigger::RetryableError, wait: 3.seconds, attempts: 3;
	// lib/webhooks/trigger.rb: RETRYABLE_AGENT_BOT_STATUSES = [429, 500]).
	// 0 means Chatwoot's 3 s; a negative value makes one attempt only, which
	// Chatwoot never does. Deliveries for inboxes without an agent bot
	// (account webhooks) are never retried.
	RetryDelay time.Duration
	// KeepPendingOnBotFailure keeps a pending conversation pending when a
	// delivery fails (the account setting keep_pending_on_bot_failure). By
	// default a failed message delivery in an inbox with an agent bot opens
	// the conversation, as Chatwoot does.
	KeepPendingOnBotFailure bool
	// Now replaces time.Now for timestamps and signatures.
	Now func() time.Time
	// TranscribeAfter, when set, transcribes customers' audio attachments
	// that have Speech this long after they arrive and delivers
	// message_updated, as Chatwoot's own audio transcription does (an
	// enterprise feature); 0 never transcribes.
	TranscribeAfter time.Duration
}

// DefaultEchoDelay is the bound of the random delay of background
// deliveries when ChatwootOptions.EchoDelay is 0.
const DefaultEchoDelay = 20 * time.Millisecond

// Contact is the customer of a conversation. ID 0 picks the next free id.
// Phone is in E.164 ("+15551234567"); a phone channel (WhatsApp, SMS,
// Twilio) makes one up when it is empty, as an email channel does for Email.
type Contact struct {
	ID          int64
	Name, Email string
	Phone       string
}

// Message is one message of a conversation as Chatwoot stored it.
type Message struct {
	ID                int64
	ConversationID    int64 // display id
	Content           string
	MessageType       string // incoming | outgoing | activity | template
	Private           bool
	SenderType        string // contact | user | agent_bot | "" (no sender)
	SenderID          int64
	SourceID          string
	ContentType       string
	ContentAttributes map[string]any // external_error lives here when a send failed
	EchoID            string
	CreatedAt         time.Time
	// Status is sent, delivered or failed, as Chatwoot shows it. A message
	// the channel skipped stays "sent".
	Status string
	// Delivered reports whether the customer received the message: a
	// public outgoing or template message that the inbox's channel sent.
	// External channels skip messages that carry a source_id.
	Delivered bool
	// Attachments are the message's files and other attachments.
	Attachments []SentFile
}

// Call is one REST request the fake Chatwoot received.
type Call struct {
	Method, Path string
	Token        string // "bot" | "user" | "invalid" | "" (no token)
	Body         []byte // first 64 KiB
	Status       int    // 0 when the connection was dropped
	At           time.Time
}

// ChatwootFault is one scripted misbehaviour of a REST call: wait Delay,
// then drop the connection (Drop), answer Status (> 0), or go on normally.
type ChatwootFault struct {
	Status int
	Delay  time.Duration
	Drop   bool
}

const (
	maxCallBody     = 64 << 10
	maxConvMessages = 4096 // per conversation; older messages are forgotten
	maxDeliveries   = 1000
	maxContentRunes = 150000
	webhookTimeout  = 5 * time.Second
	firstMessageID  = 1001
)

type cwInbox struct {
	id         int64
	name       string
	botURL     string
	identifier string
	channel    string
	hours      WorkingHours
}

type cwContact struct {
	Contact
}

type cwContactInbox struct {
	id        int64
	contactID int64
	inboxID   int64
	sourceID  string
	pubsub    string
	created   time.Time
}

type cwConv struct {
	id              int64
	inbox           *cwInbox
	contact         *cwContact
	ci              *cwContactInbox
	status          string
	labels          []string
	team            int64
	assigneeID      int64
	assigneeType    string // "User" | "AgentBot" | ""
	priority        string // "" (none) | low | medium | high | urgent
	botHandoffs     int    // conversation.bot_handoff events dispatched
	typing          string
	msgs            []*cwMsg
	lastPublic      *cwMsg // last non-activity, non-private message
	created         time.Time
	updated         time.Time
	lastActivity    time.Time
	waitingSince    int64
	firstReply      time.Time
	unread          int
	agentLastSeen   int64
	contactLastSeen int64
	lastIncoming    time.Time // for the channel's reply window (can_reply)
	attrs           obj       // additional_attributes, set by the channel
}

type cwMsg struct {
	id          int64
	conv        int64
	content     string
	mtype       int // 0 incoming, 1 outgoing, 2 activity, 3 template
	private     bool
	senderKind  string // contact | user | agent_bot | ""
	senderID    int64
	contentType string
	attrs       map[string]any
	sourceID    any // string or nil
	echoID      any // as posted, or nil
	created     time.Time
	status      string // sent | delivered | failed
	delivered   bool   // the customer received it
	// sendPending: the channel's send job has yet to write its result
	// (provider id, status) and fire message_updated.
	sendPending bool
	sendID      string // the provider id the pending send will write
	sendStatus  string // the status it will write
	sendError   string // the external_error it will write
	atts        []*cwAttachment
}

var messageTypes = [...]string{"incoming", "outgoing", "activity", "template"}

type accountWebhook struct {
	id  int64
	url string
}

// Chatwoot is a fake Chatwoot: the REST API bridge calls (an http.Handler)
// and the webhook deliveries it receives.
type Chatwoot struct {
	opts   ChatwootOptions
	client *http.Client

	mu          sync.Mutex
	webhookURL  string
	secret      string
	inboxes     map[int64]*cwInbox
	contacts    map[int64]*cwContact
	contactInbs map[[2]int64]*cwContactInbox
	convs       map[int64]*cwConv
	teams       map[int64]string
	agents      map[int64]string
	acctHooks   []accountWebhook
	nextConv    int64
	nextMsg     int64
	nextContact int64
	nextCI      int64
	faults      map[string][]ChatwootFault
	calls       ring[Call]
	deliveries  ring[Delivery]
	changed     notifier
	closed      bool
	active      int        // background goroutines running
	holding     bool       // HoldEchoes: background deliveries wait in held
	held        []Delivery // not sent yet, oldest event first
	deliverySeq uint64

	frontend       string // FRONTEND_URL: where data_url point
	storage        string // the storage service blob redirects go to ("" = the fake)
	storageTarget  string // a fixed redirect target, for tests of where downloads go
	files          map[string]*cwAttachment
	nextAttachment int64
}

// NewChatwoot returns a fake Chatwoot with one account.
func NewChatwoot(opts ChatwootOptions) *Chatwoot {
	if opts.AccountID == 0 {
		opts.AccountID = 1
	}
	if opts.AccountName == "" {
		opts.AccountName = "Acme"
	}
	if opts.BotID == 0 {
		opts.BotID = 7
	}
	if opts.UserID == 0 {
		opts.UserID = 3
	}
	if opts.Version == "" {
		opts.Version = "4.14.0"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 512
	tr.ResponseHeaderTimeout = webhookTimeout
	return &Chatwoot{
		opts:        opts,
		client:      &http.Client{Timeout: webhookTimeout, Transport: tr},
		webhookURL:  opts.WebhookURL,
		secret:      opts.WebhookSecret,
		inboxes:     make(map[int64]*cwInbox),
		contacts:    make(map[int64]*cwContact),
		contactInbs: make(map[[2]int64]*cwContactInbox),
		convs:       make(map[int64]*cwConv),
		teams:       make(map[int64]string),
		agents:      make(map[int64]string),
		nextMsg:     firstMessageID,
		faults:      make(map[string][]ChatwootFault),
		calls:       newRing[Call](maxRecords),
		deliveries:  newRing[Delivery](maxDeliveries),
	}
}

// SetWebhook changes where webhooks go and the signing secret ("" = unsigned).
func (c *Chatwoot) SetWebhook(url, secret string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.webhookURL, c.secret = url, secret
}

// AddInbox adds an API-channel inbox, or renames an existing inbox and
// changes its bot (keeping its channel). agentBotURL is the outgoing_url of
// the agent bot attached to it ("" = no bot), reported by
// GET inboxes/{id}/agent_bot. Deliveries for conversations of an inbox with
// a bot behave as Chatwoot's agent-bot deliveries: 429 and 500 are retried,
// and a failed message delivery opens a pending conversation.
func (c *Chatwoot) AddInbox(id int64, name string, agentBotURL string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addInboxLocked(id, name, agentBotURL, "")
}

// AddInboxChannel adds (or changes) an inbox of the given channel class, one
// of the Channel* constants, e.g. ChannelWhatsapp. The channel decides what
// payloads say (conversation.channel, can_reply, contact_inbox.source_id,
// additional_attributes, the source_id of customer messages) and whether
// the customer receives outgoing messages (see CustomerSaw). Set it before
// starting conversations in the inbox. "" keeps the current channel
// (Channel::Api for a new inbox).
func (c *Chatwoot) AddInboxChannel(id int64, name, agentBotURL, channel string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addInboxLocked(id, name, agentBotURL, channel)
}

func (c *Chatwoot) addInboxLocked(id int64, name, botURL, channel string) *cwInbox {
	if name == "" {
		name = "Inbox " + strconv.FormatInt(id, 10)
	}
	in := c.inboxes[id]
	if in == nil {
		in = &cwInbox{id: id, identifier: randToken(24), channel: ChannelAPI, hours: defaultWorkingHours()}
		c.inboxes[id] = in
	}
	in.name, in.botURL = name, botURL
	if channel != "" {
		in.channel = channel
	}
	c.changed.broadcast()
	return in
}

// AddTeam names a team for assignments; unnamed team ids are "Team <id>".
func (c *Chatwoot) AddTeam(id int64, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.teams[id] = name
}

// AddAccountWebhook lists an account webhook in GET .../webhooks.
func (c *Chatwoot) AddAccountWebhook(url string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acctHooks = append(c.acctHooks, accountWebhook{id: int64(len(c.acctHooks) + 1), url: url})
}

// NewConversation starts a conversation of contact in the inbox (created if
// unknown) and returns its display id (1, 2, 3...). status is usually
// "pending", the status of a conversation an agent bot owns.
func (c *Chatwoot) NewConversation(inboxID int64, contact Contact, status string) int64 {
	if status == "" {
		status = "pending"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	in := c.inboxes[inboxID]
	if in == nil {
		in = c.addInboxLocked(inboxID, "", "", "")
	}
	if contact.ID == 0 {
		c.nextContact++
		for c.contacts[c.nextContact] != nil {
			c.nextContact++
		}
		contact.ID = c.nextContact
	}
	ct := c.contacts[contact.ID]
	if ct == nil {
		ct = &cwContact{Contact: contact}
		c.contacts[contact.ID] = ct
	}
	if contact.Name != "" {
		ct.Name = contact.Name
	}
	if contact.Email != "" {
		ct.Email = contact.Email
	}
	if contact.Phone != "" {
		ct.Phone = contact.Phone
	}
	if ct.Name == "" {
		ct.Name = "Customer " + strconv.FormatInt(ct.ID, 10)
	}
	tr, _ := traitsOf(in.channel)
	if tr.phone && ct.Phone == "" {
		ct.Phone = "+1555" + fmt.Sprintf("%07d", ct.ID%10000000)
	}
	if tr.email && ct.Email == "" {
		ct.Email = "customer" + strconv.FormatInt(ct.ID, 10) + "@example.com"
	}
	now := c.opts.Now()
	key := [2]int64{ct.ID, in.id}
	ci := c.contactInbs[key]
	if ci == nil {
		c.nextCI++
		ci = &cwContactInbox{id: c.nextCI, contactID: ct.ID, inboxID: in.id, sourceID: contactSourceID(in.channel, ct), pubsub: randToken(24), created: now}
		c.contactInbs[key] = ci
	}
	c.nextConv++
	conv := &cwConv{id: c.nextConv, inbox: in, contact: ct, ci: ci, status: status, created: now, updated: now, lastActivity: now,
		attrs: conversationAttrs(in.channel, ci.sourceID, ct, now)}
	c.convs[conv.id] = conv
	c.changed.broadcast()
	return conv.id
}

// Messages returns every message of the conversation in order.
func (c *Chatwoot) Messages(convID int64) []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	conv := c.convs[convID]
	if conv == nil {
		return nil
	}
	out := make([]Message, len(conv.msgs))
	for i, m := range conv.msgs {
		out[i] = m.export()
	}
	return out
}

func (m *cwMsg) export() Message {
	src, _ := m.sourceID.(string)
	echo := ""
	if m.echoID != nil {
		echo = stringify(m.echoID)
	}
	var files []SentFile
	for _, a := range m.atts {
		files = append(files, a.export())
	}
	return Message{
		ID: m.id, ConversationID: m.conv, Content: m.content, MessageType: messageTypes[m.mtype],
		Private: m.private, SenderType: m.senderKind, SenderID: m.senderID, SourceID: src,
		ContentType: m.contentType, ContentAttributes: maps.Clone(m.attrs), EchoID: echo, CreatedAt: m.created,
		Status: m.status, Delivered: m.delivered, Attachments: files,
	}
}

// CustomerSaw returns the outgoing and template messages of the
// conversation that reached the customer, in order: public ones that the
// inbox's channel sent. On WhatsApp, Telegram, Facebook, Instagram, SMS,
// Email, Line, Twitter and Tiktok a message posted with a source_id is
// never sent; Api and WebWidget inboxes show every public message.
func (c *Chatwoot) CustomerSaw(convID int64) []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	conv := c.convs[convID]
	if conv == nil {
		return nil
	}
	var out []Message
	for _, m := range conv.msgs {
		if m.delivered {
			out = append(out, m.export())
		}
	}
	return out
}

// Status returns the conversation's status, "" if it does not exist.
func (c *Chatwoot) Status(convID int64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conv := c.convs[convID]; conv != nil {
		return conv.status
	}
	return ""
}

// Labels returns the conversation's labels, sorted.
func (c *Chatwoot) Labels(convID int64) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conv := c.convs[convID]; conv != nil {
		return slices.Clone(conv.labels)
	}
	return nil
}

// Team returns the team assigned to the conversation, 0 if none.
func (c *Chatwoot) Team(convID int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conv := c.convs[convID]; conv != nil {
		return conv.team
	}
	return 0
}

// Typing returns the last typing_status set on the conversation ("on", "off" or "").
func (c *Chatwoot) Typing(convID int64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conv := c.convs[convID]; conv != nil {
		return conv.typing
	}
	return ""
}

// Calls returns the REST calls received, oldest first (the last 10,000).
func (c *Chatwoot) Calls() []Call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls.slice()
}

// Deliveries returns the webhook deliveries made, oldest first (the last
// 1,000), including background echoes.
func (c *Chatwoot) Deliveries() []Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deliveries.slice()
}

// Fail queues faults for an operation: "messages", "toggle_status",
// "toggle_typing_status", "assignments", "labels" (also "conversation",
// "inboxes", "inbox", "agent_bot", "webhooks", "profile", "api"). Its next
// calls get them in order, later calls are normal again.
func (c *Chatwoot) Fail(op string, faults ...ChatwootFault) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults[op] = append(c.faults[op], faults...)
}

// WaitFor re-checks cond whenever the fake's state changes (a call, a
// message, a status, a delivery) until it holds or ctx ends.
func (c *Chatwoot) WaitFor(ctx context.Context, cond func() bool) error {
	return waitFor(ctx, func() <-chan struct{} {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.changed.wait()
	}, cond)
}

// Close waits for background work to finish: deliveries, a delivery
// waiting to be retried, channel sends and what they cause. Held echoes and
// echoes of later calls are not delivered.
func (c *Chatwoot) Close() {
	c.mu.Lock()
	c.closed = true
	c.held = nil
	c.mu.Unlock()
	_ = waitFor(context.Background(), func() <-chan struct{} {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.changed.wait()
	}, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.active == 0
	})
	c.client.CloseIdleConnections()
}

// goDeliver runs fn in a goroutine that Close waits for. Once closed, only
// work started by running background work (a send job's message_updated, a
// failure's status change) may still start, so Close sees a chain through.
func (c *Chatwoot) goDeliver(fn func()) {
	c.mu.Lock()
	if c.closed && c.active == 0 {
		c.mu.Unlock()
		return
	}
	c.active++
	c.mu.Unlock()
	go func() {
		defer func() {
			c.mu.Lock()
			c.active--
			c.changed.broadcast()
			c.mu.Unlock()
		}()
		fn()
	}()
}

// ---- REST API ----

// reply is what a REST handler answers.
type reply struct {
	status int
	body   []byte
	ctype  string
}

func jsonReply(status int, v any) reply {
	return reply{status: status, body: railsJSON.marshal(v), ctype: "application/json; charset=utf-8"}
}

func cwError(status int, msg string) reply { return jsonReply(status, obj{{"error", msg}}) }

var (
	errInvalidToken = cwError(http.StatusUnauthorized, "Invalid Access Token")
	errNoBots       = cwError(http.StatusUnauthorized, "Access to this endpoint is not authorized for bots")
	errNotFound     = cwError(http.StatusNotFound, "Resource could not be found")
	errNoToken      = jsonReply(http.StatusUnauthorized, obj{{"errors", []string{"You need to sign in or sign up before continuing."}}})
)

func (c *Chatwoot) tokenKind(r *http.Request) string {
	t := r.Header.Get("api_access_token")
	if t == "" {
		t = r.Header.Get("Api-Access-Token")
	}
	switch {
	case t == "":
		return ""
	case c.opts.BotToken != "" && t == c.opts.BotToken:
		return "bot"
	case c.opts.UserToken != "" && t == c.opts.UserToken:
		return "user"
	}
	return "invalid"
}

// route is a resolved REST path.
type route struct {
	op       string
	botOK    bool // agent bot tokens may call it
	noAuth   bool
	convID   int64
	inboxID  int64
	account  bool // under /api/v1/accounts/{id}
	accountN int64
	handle   func(c *Chatwoot, r *http.Request, rt route, tok string, body []byte) reply
}

func resolve(method, path string) (route, bool) {
	path = strings.TrimSuffix(path, "/")
	switch {
	case path == "/api" && method == http.MethodGet:
		return route{op: "api", noAuth: true, handle: (*Chatwoot).getVersion}, true
	case path == "/api/v1/profile" && method == http.MethodGet:
		return route{op: "profile", handle: (*Chatwoot).getProfile}, true
	}
	rest, ok := strings.CutPrefix(path, "/api/v1/accounts/")
	if !ok {
		return route{}, false
	}
	seg := strings.Split(rest, "/")
	acct, err := strconv.ParseInt(seg[0], 10, 64)
	if err != nil || len(seg) < 2 {
		return route{}, false
	}
	rt := route{account: true, accountN: acct}
	id := int64(-1)
	if len(seg) >= 3 {
		if id, err = strconv.ParseInt(seg[2], 10, 64); err != nil {
			return route{}, false
		}
	}
	switch seg[1] {
	case "conversations":
		if len(seg) < 3 {
			return route{}, false
		}
		rt.convID = id
		switch {
		case len(seg) == 3 && method == http.MethodGet:
			rt.op, rt.handle = "conversation", (*Chatwoot).getConversation
		case len(seg) == 4 && seg[3] == "messages" && method == http.MethodPost:
			rt.op, rt.botOK, rt.handle = "messages", true, (*Chatwoot).postMessage
		case len(seg) == 4 && seg[3] == "messages" && method == http.MethodGet:
			rt.op, rt.handle = "messages", (*Chatwoot).listMessages
		case len(seg) == 4 && seg[3] == "toggle_status" && method == http.MethodPost:
			rt.op, rt.botOK, rt.handle = "toggle_status", true, (*Chatwoot).toggleStatus
		case len(seg) == 4 && seg[3] == "toggle_priority" && method == http.MethodPost:
			rt.op, rt.botOK, rt.handle = "toggle_priority", true, (*Chatwoot).togglePriority
		case len(seg) == 4 && seg[3] == "toggle_typing_status" && method == http.MethodPost:
			rt.op, rt.botOK, rt.handle = "toggle_typing_status", true, (*Chatwoot).toggleTyping
		case len(seg) == 4 && seg[3] == "assignments" && method == http.MethodPost:
			rt.op, rt.botOK, rt.handle = "assignments", true, (*Chatwoot).assign
		case len(seg) == 4 && seg[3] == "labels" && (method == http.MethodPost || method == http.MethodGet):
			rt.op, rt.handle = "labels", (*Chatwoot).labels
		default:
			return route{}, false
		}
	case "inboxes":
		rt.inboxID = id
		switch {
		case len(seg) == 2 && method == http.MethodGet:
			rt.op, rt.handle = "inboxes", (*Chatwoot).listInboxes
		case len(seg) == 3 && method == http.MethodGet:
			rt.op, rt.handle = "inbox", (*Chatwoot).getInbox
		case len(seg) == 4 && seg[3] == "agent_bot" && method == http.MethodGet:
			rt.op, rt.handle = "agent_bot", (*Chatwoot).getAgentBot
		default:
			return route{}, false
		}
	case "webhooks":
		if len(seg) != 2 || method != http.MethodGet {
			return route{}, false
		}
		rt.op, rt.handle = "webhooks", (*Chatwoot).listWebhooks
	default:
		return route{}, false
	}
	return rt, true
}

// ServeHTTP implements http.Handler.
func (c *Chatwoot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/rails/active_storage/") {
		c.serveBlob(w, r)
		return
	}
	var (
		body []byte
		err  error
	)
	if isMultipart(r) {
		// Files stream to the handler, which keeps only their digests.
		body = []byte("(multipart/form-data)")
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, 40<<20))
	}
	tok := c.tokenKind(r)
	recorded := body
	if len(recorded) > maxCallBody {
		recorded = recorded[:maxCallBody]
	}
	c.mu.Lock()
	seq := c.calls.push(Call{Method: r.Method, Path: r.URL.Path, Token: tok, Body: slices.Clone(recorded), At: c.opts.Now()})
	c.changed.broadcast()
	c.mu.Unlock()

	rep := c.serve(w, r, tok, body, err)

	c.mu.Lock()
	if call := c.calls.at(seq); call != nil {
		call.Status = rep.status
	}
	c.changed.broadcast()
	c.mu.Unlock()
	if rep.status == 0 {
		dropConnection(w)
		return
	}
	if rep.ctype != "" {
		w.Header().Set("Content-Type", rep.ctype)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(rep.body)))
	w.WriteHeader(rep.status)
	_, _ = w.Write(rep.body) // a client that went away is not the server's problem
}

func (c *Chatwoot) serve(w http.ResponseWriter, r *http.Request, tok string, body []byte, readErr error) reply {
	rt, ok := resolve(r.Method, r.URL.Path)
	if !ok {
		return errNotFound
	}
	c.mu.Lock()
	fault, hasFault := c.takeFaultLocked(rt.op)
	c.mu.Unlock()
	if hasFault {
		if !sleep(r.Context(), fault.Delay) {
			return reply{} // the client gave up; nobody reads the answer
		}
		switch {
		case fault.Drop:
			return reply{}
		case fault.Status == http.StatusTooManyRequests:
			return reply{status: fault.Status, body: []byte("Retry later\n"), ctype: "text/plain"}
		case fault.Status == http.StatusInternalServerError:
			return jsonReply(fault.Status, obj{{"status", 500}, {"error", "Internal Server Error"}})
		case fault.Status > 0:
			return cwError(fault.Status, http.StatusText(fault.Status))
		}
	}
	if readErr != nil {
		return cwError(http.StatusRequestEntityTooLarge, "Request Entity Too Large")
	}
	if !rt.noAuth {
		switch tok {
		case "":
			return errNoToken
		case "invalid":
			return errInvalidToken
		case "bot":
			if !rt.botOK {
				return errNoBots
			}
		}
	}
	if rt.account && rt.accountN != c.opts.AccountID {
		return errNotFound
	}
	return rt.handle(c, r, rt, tok, body)
}

// takeFaultLocked takes the next scripted fault of an operation.
func (c *Chatwoot) takeFaultLocked(op string) (ChatwootFault, bool) {
	q := c.faults[op]
	if len(q) == 0 {
		return ChatwootFault{}, false
	}
	if len(q) == 1 {
		delete(c.faults, op)
	} else {
		c.faults[op] = q[1:]
	}
	return q[0], true
}

func isMultipart(r *http.Request) bool {
	return strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "multipart/form-data")
}

func (c *Chatwoot) getVersion(_ *http.Request, _ route, _ string, _ []byte) reply {
	return jsonReply(http.StatusOK, obj{
		{"version", c.opts.Version},
		{"timestamp", c.opts.Now().UTC().Format("2006-01-02 15:04:05")},
		{"queue_services", "ok"},
		{"data_services", "ok"},
	})
}

func (c *Chatwoot) getProfile(_ *http.Request, _ route, _ string, _ []byte) reply {
	o := c.opts
	return jsonReply(http.StatusOK, obj{
		{"id", o.UserID}, {"provider", "email"}, {"uid", "smith@example.com"}, {"available_name", userName},
		{"avatar_url", ""}, {"confirmed", true}, {"display_name", nil}, {"message_signature", nil},
		{"email", "smith@example.com"}, {"name", userName}, {"pubsub_token", "pubsub-" + strconv.FormatInt(o.UserID, 10)},
		{"role", "administrator"}, {"ui_settings", obj{}}, {"type", "user"}, {"access_token", o.UserToken},
		{"account_id", o.AccountID},
		{"accounts", []obj{{
			{"id", o.AccountID}, {"name", o.AccountName}, {"status", "active"}, {"active_at", nil},
			{"role", "administrator"}, {"permissions", []string{"administrator"}}, {"availability", "online"},
			{"availability_status", "online"}, {"auto_offline", true}, {"custom_role_id", nil}, {"custom_role", nil},
		}}},
	})
}

// inboxJSON renders an inbox as app/views/api/v1/models/_inbox.json.jbuilder
// does for an administrator, with the channel-specific keys of its channel.
func (c *Chatwoot) inboxJSON(in *cwInbox) obj {
	o := obj{
		{"id", in.id}, {"avatar_url", ""}, {"channel_id", in.id}, {"name", in.name}, {"channel_type", in.channel},
		{"greeting_enabled", false}, {"greeting_message", nil}, {"working_hours_enabled", in.hours.Enabled},
		{"enable_email_collect", true}, {"csat_survey_enabled", false}, {"enable_auto_assignment", true},
		{"auto_assignment_config", obj{}}, {"out_of_office_message", nullable(in.hours.OutOfOffice)}, {"working_hours", in.hours.json()},
		{"timezone", in.hours.timezone()}, {"callback_webhook_url", nil}, {"allow_messages_after_resolved", true},
		{"lock_to_single_conversation", false}, {"sender_name_type", "friendly"}, {"business_name", nil},
	}
	var phone, provider any
	suffix := fmt.Sprintf("%03d", in.id%1000)
	switch in.channel {
	case ChannelWebWidget:
		o = append(o, field{"website_url", "https://shop.example.com"}, field{"website_token", in.identifier},
			field{"hmac_mandatory", false}, field{"continuity_via_email", true})
	case ChannelWhatsapp:
		phone, provider = "+15550000"+suffix, "whatsapp_cloud"
	case ChannelTwilio:
		phone = "+15550001" + suffix
		o = append(o, field{"medium", "sms"})
	case ChannelSMS:
		phone, provider = "+15550002"+suffix, "bandwidth"
	case ChannelEmail:
		o = append(o, field{"email", "support" + strconv.FormatInt(in.id, 10) + "@example.com"})
	case ChannelTelegram:
		o = append(o, field{"bot_name", "acme_support_bot"})
	case ChannelAPI:
		o = append(o, field{"hmac_mandatory", false})
	}
	o = append(o, field{"messaging_service_sid", nil}, field{"phone_number", phone}, field{"provider", provider})
	if in.channel == ChannelAPI {
		// Only API inboxes have these; secret is shown to administrators.
		o = append(o, field{"webhook_url", ""}, field{"inbox_identifier", in.identifier}, field{"additional_attributes", obj{}},
			field{"secret", "inbox-secret-" + strconv.FormatInt(in.id, 10)})
	}
	return o
}

func (c *Chatwoot) listInboxes(_ *http.Request, _ route, _ string, _ []byte) reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]int64, 0, len(c.inboxes))
	for id := range c.inboxes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	list := make([]obj, 0, len(ids))
	for _, id := range ids {
		list = append(list, c.inboxJSON(c.inboxes[id]))
	}
	return jsonReply(http.StatusOK, obj{{"payload", list}})
}

func (c *Chatwoot) getInbox(_ *http.Request, rt route, _ string, _ []byte) reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	in := c.inboxes[rt.inboxID]
	if in == nil {
		return errNotFound
	}
	return jsonReply(http.StatusOK, c.inboxJSON(in))
}

func (c *Chatwoot) getAgentBot(_ *http.Request, rt route, _ string, _ []byte) reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	in := c.inboxes[rt.inboxID]
	if in == nil {
		return errNotFound
	}
	if in.botURL == "" {
		return jsonReply(http.StatusOK, obj{})
	}
	return jsonReply(http.StatusOK, obj{{"agent_bot", obj{
		{"id", c.opts.BotID}, {"name", botName}, {"description", ""}, {"thumbnail", ""},
		{"outgoing_url", in.botURL}, {"bot_type", "webhook"}, {"bot_config", obj{}},
		{"account_id", c.opts.AccountID}, {"access_token", c.opts.BotToken}, {"secret", c.secret},
		{"system_bot", false},
	}}})
}

func (c *Chatwoot) listWebhooks(_ *http.Request, _ route, _ string, _ []byte) reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	list := make([]obj, 0, len(c.acctHooks))
	for _, h := range c.acctHooks {
		list = append(list, obj{
			{"id", h.id}, {"name", nil}, {"url", h.url}, {"account_id", c.opts.AccountID},
			{"subscriptions", []string{"conversation_created", "conversation_status_changed", "conversation_updated",
				"message_created", "message_updated", "webwidget_triggered"}},
			{"secret", c.secret},
		})
	}
	return jsonReply(http.StatusOK, obj{{"payload", obj{{"webhooks", list}}}})
}

func (c *Chatwoot) getConversation(_ *http.Request, rt route, _ string, _ []byte) reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	conv := c.convs[rt.convID]
	if conv == nil {
		return errNotFound
	}
	return jsonReply(http.StatusOK, c.conversationLocked(conv))
}

// listMessages is messages#index, for user tokens only (bots get 401 from
// AccessTokenAuthHelper: only messages#create is in BOT_ACCESSIBLE_ENDPOINTS).
// MessageFinder (app/finders/message_finder.rb) pages by message id: the
// latest 20, or 20 before ?before=, or up to 100 after ?after=, or up to
// 1000 from after up to before; filter_internal_messages drops private
// notes and activity messages. Each message is rendered by
// api/v1/models/_message.json.jbuilder, and meta by
// conversations/messages/index.json.jbuilder.
func (c *Chatwoot) listMessages(r *http.Request, rt route, _ string, _ []byte) reply {
	q := r.URL.Query()
	before, _ := strconv.ParseInt(q.Get("before"), 10, 64)
	after, _ := strconv.ParseInt(q.Get("after"), 10, 64)
	hasBefore, hasAfter := q.Get("before") != "", q.Get("after") != "" // Rails: params[:x].present?
	internal := q.Get("filter_internal_messages") != ""
	c.mu.Lock()
	defer c.mu.Unlock()
	conv := c.convs[rt.convID]
	if conv == nil {
		return errNotFound
	}
	var msgs []*cwMsg
	for _, m := range conv.msgs {
		if internal && (m.private || m.mtype == 2) {
			continue
		}
		if hasBefore && m.id >= before {
			continue
		}
		// after alone is exclusive; with before it is inclusive (messages_between).
		if hasAfter && (m.id < after || (m.id == after && !hasBefore)) {
			continue
		}
		msgs = append(msgs, m)
	}
	switch {
	case hasAfter && hasBefore:
		msgs = msgs[:min(len(msgs), 1000)]
	case hasAfter:
		msgs = msgs[:min(len(msgs), 100)]
	default:
		msgs = msgs[max(0, len(msgs)-20):]
	}
	list := make([]obj, 0, len(msgs))
	for _, m := range msgs {
		list = append(list, c.restMessageLocked(conv, m, true))
	}
	labels := conv.labels
	if labels == nil {
		labels = []string{}
	}
	meta := obj{{"labels", labels}, {"additional_attributes", conv.attrs}, {"contact", c.contactObj(conv.contact, true)}}
	if a := c.assigneeLocked(conv); a != nil {
		meta = append(meta, field{"assignee", a})
	}
	var seen any
	if conv.agentLastSeen != 0 {
		seen = isoTime(time.Unix(conv.agentLastSeen, 0))
	}
	meta = append(meta, field{"agent_last_seen_at", seen}, field{"assignee_last_seen_at", nil})
	return jsonReply(http.StatusOK, obj{{"meta", meta}, {"payload", list}})
}

var contentTypes = map[string]bool{
	"text": true, "input_text": true, "input_textarea": true, "input_email": true, "input_select": true,
	"cards": true, "form": true, "article": true, "incoming_email": true, "input_csat": true,
	"integrations": true, "sticker": true, "voice_call": true,
}

type postMessageBody struct {
	Content           *string         `json:"content"`
	MessageType       any             `json:"message_type"`
	Private           any             `json:"private"`
	ContentType       string          `json:"content_type"`
	ContentAttributes json.RawMessage `json:"content_attributes"`
	SourceID          any             `json:"source_id"`
	EchoID            any             `json:"echo_id"`
}

func truthy(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case string:
		return x == "true" || x == "1" || x == "t"
	case float64:
		return x != 0
	}
	return false
}

func stringify(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case nil:
		return ""
	}
	b, _ := json.Marshal(v) // values came from json.Unmarshal
	return string(b)
}

func (c *Chatwoot) postMessage(r *http.Request, rt route, tok string, body []byte) reply {
	var in postMessageBody
	var files []Attachment
	var digests []string
	if isMultipart(r) {
		// Messages::MessageBuilder#process_attachments: each attachments[]
		// part becomes an attachment whose file_type follows its type.
		mr, err := r.MultipartReader()
		if err != nil {
			return cwError(http.StatusBadRequest, "Invalid request body")
		}
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return cwError(http.StatusBadRequest, "Invalid request body")
			}
			if part.FileName() == "" {
				v, _ := io.ReadAll(io.LimitReader(part, 1<<20)) // a field is small
				val := string(v)
				switch part.FormName() {
				case "content":
					in.Content = &val
				case "message_type":
					in.MessageType = val
				case "private":
					in.Private = val
				case "content_type":
					in.ContentType = val
				}
				continue
			}
			if part.FormName() != "attachments[]" {
				continue
			}
			a, sum, err := c.readPostedFile(part.FileName(), part.Header.Get("Content-Type"), part)
			if err != nil {
				return cwError(http.StatusBadRequest, "Invalid request body")
			}
			files, digests = append(files, a), append(digests, sum)
		}
		if len(files) > 15 {
			// Message#validate_attachments_limit; messages#create answers 422.
			return cwError(http.StatusUnprocessableEntity, "Validation failed: Attachments exceeded maximum allowed")
		}
	} else if len(body) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			return cwError(http.StatusBadRequest, "Invalid request body")
		}
	}
	mtype := 1
	switch t := in.MessageType.(type) {
	case nil:
	case string:
		i := slices.Index(messageTypes[:], t)
		if i < 0 {
			return cwError(http.StatusUnprocessableEntity, "'"+t+"' is not a valid message_type")
		}
		mtype = i
	case float64:
		if t < 0 || t > 3 {
			return cwError(http.StatusUnprocessableEntity, "'"+stringify(t)+"' is not a valid message_type")
		}
		mtype = int(t)
	}
	if in.ContentType == "" {
		in.ContentType = "text"
	}
	if !contentTypes[in.ContentType] {
		return cwError(http.StatusUnprocessableEntity, "'"+in.ContentType+"' is not a valid content_type")
	}
	content := ""
	if in.Content != nil {
		content = *in.Content
	}
	if len([]rune(content)) > maxContentRunes {
		return cwError(http.StatusUnprocessableEntity, "Validation failed: Content is too long (maximum is 150000 characters)")
	}
	attrs := map[string]any{}
	if len(in.ContentAttributes) > 0 && string(in.ContentAttributes) != "null" {
		var s string
		if json.Unmarshal(in.ContentAttributes, &s) == nil {
			_ = json.Unmarshal([]byte(s), &attrs) // Chatwoot also keeps {} for an unparsable string
		} else if err := json.Unmarshal(in.ContentAttributes, &attrs); err != nil {
			return cwError(http.StatusUnprocessableEntity, "content_attributes must be an object")
		}
		if attrs == nil {
			attrs = map[string]any{}
		}
	}
	var sourceID any
	if in.SourceID != nil {
		sourceID = stringify(in.SourceID)
	}

	c.mu.Lock()
	conv := c.convs[rt.convID]
	if conv == nil {
		c.mu.Unlock()
		return errNotFound
	}
	if mtype == 0 && conv.inbox.channel != ChannelAPI {
		c.mu.Unlock()
		// Messages::MessageBuilder#message_type; messages#create rescues it as 422.
		return cwError(http.StatusUnprocessableEntity, "Incoming messages are only allowed in Api inboxes")
	}
	m := &cwMsg{mtype: mtype, private: truthy(in.Private), content: content, contentType: in.ContentType,
		attrs: attrs, sourceID: sourceID, echoID: in.EchoID}
	switch {
	case mtype != 1:
		// MessageBuilder makes the contact the sender of anything not outgoing.
		m.senderKind, m.senderID = "contact", conv.contact.ID
	case tok == "bot":
		m.senderKind, m.senderID = "agent_bot", c.opts.BotID
	default:
		m.senderKind, m.senderID = "user", c.opts.UserID
	}
	c.addMessageLocked(conv, m)
	for i, f := range files {
		a := c.newAttachmentLocked(m, f)
		a.posted, a.sha = true, digests[i]
	}
	// Rendered under the lock: the channel's send job writes into the
	// message (its attributes) in the background.
	resp := jsonReply(http.StatusOK, c.restMessageLocked(conv, m, true))
	var echo []byte
	if !c.opts.NoEcho && mtype != 2 {
		// The snapshot: conversation status and all as they are now.
		echo = railsJSON.marshal(c.messageEventLocked(conv, m, "message_created"))
	}
	sends := c.sendOnChannelLocked(conv, m)
	c.mu.Unlock()

	if echo != nil {
		c.echo(c.newDelivery(echo, "message_created", conv.id, m.id), c.opts.EchoSync)
	}
	if sends {
		c.finishSendLater(conv.id, m, !c.opts.NoEcho)
	}
	return resp
}

// sendOnChannelLocked is SendReplyJob deciding the fate of a new message:
// whether the customer receives it and what the channel's sender will write
// back into it. It reports whether that write (and its message_updated) is
// to follow; finishSendLater does it.
func (c *Chatwoot) sendOnChannelLocked(conv *cwConv, m *cwMsg) bool {
	if m.private || (m.mtype != 1 && m.mtype != 3) {
		return false // Base::SendOnChannelService: private notes and non-outgoing messages are not sent
	}
	tr, known := traitsOf(conv.inbox.channel)
	switch {
	case !known:
		return false // SendReplyJob has no service for the channel
	case !tr.external:
		m.delivered = true // the widget and API clients show every public message
		return false
	}
	if src, _ := m.sourceID.(string); strings.TrimSpace(src) != "" {
		// Base::SendOnChannelService#invalid_message?: a source_id means
		// "originated from the channel", so the message is never sent and
		// its status stays "sent".
		return false
	}
	if tr.windowError != "" && !c.canReplyLocked(conv) {
		m.sendPending, m.sendStatus, m.sendError = true, "failed", tr.windowError
		return true
	}
	if limit, refusal := lengthLimit(conv.inbox.channel); limit > 0 && len([]rune(m.content)) > limit {
		// The provider refuses the text; the send job stores its error.
		m.sendPending, m.sendStatus, m.sendError = true, "failed", refusal
		return true
	}
	m.delivered = true
	if tr.sentID != nil {
		m.sendID = tr.sentID()
	}
	m.sendStatus = tr.sentStatus
	m.sendPending = m.sendID != "" || m.sendStatus != ""
	return m.sendPending
}

// canReplyLocked is Conversations::MessageWindowService#can_reply?
// (app/services/conversations/message_window_service.rb): on channels with a
// window, only until that long after the customer's last message.
func (c *Chatwoot) canReplyLocked(conv *cwConv) bool {
	tr, _ := traitsOf(conv.inbox.channel)
	if tr.window == 0 {
		return true
	}
	return !conv.lastIncoming.IsZero() && c.opts.Now().Before(conv.lastIncoming.Add(tr.window))
}

// finishSendLater runs the rest of the channel's send job in the
// background: it writes the provider's id (or the status, or the failure)
// into the message, which fires message_updated (Message#dispatch_update_event),
// delivered like any other event when deliver is set.
func (c *Chatwoot) finishSendLater(convID int64, m *cwMsg, deliver bool) {
	delay := c.echoDelay()
	c.goDeliver(func() {
		sleep(context.Background(), delay)
		c.mu.Lock()
		conv := c.convs[convID]
		if conv == nil || !m.sendPending {
			c.mu.Unlock()
			return
		}
		m.sendPending = false
		if m.sendID != "" {
			m.sourceID = m.sendID
		}
		if m.sendStatus != "" {
			m.status = m.sendStatus
		}
		if m.sendError != "" {
			m.attrs["external_error"] = m.sendError
		}
		var body []byte
		if deliver {
			body = railsJSON.marshal(c.messageEventLocked(conv, m, "message_updated"))
		}
		c.changed.broadcast()
		c.mu.Unlock()
		if body != nil {
			c.echo(c.newDelivery(body, "message_updated", convID, m.id), false)
		}
	})
}

var validStatuses = map[string]bool{"open": true, "resolved": true, "pending": true, "snoozed": true}

func (c *Chatwoot) toggleStatus(r *http.Request, rt route, tok string, body []byte) reply {
	var in struct {
		Status *string `json:"status"`
	}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			return cwError(http.StatusBadRequest, "Invalid request body")
		}
	}
	c.mu.Lock()
	conv := c.convs[rt.convID]
	if conv == nil {
		c.mu.Unlock()
		return errNotFound
	}
	next := ""
	switch {
	case in.Status == nil || *in.Status == "":
		next = "resolved"
		if conv.status == "resolved" {
			next = "open"
		}
	case validStatuses[*in.Status]:
		next = *in.Status
	default:
		c.mu.Unlock()
		// ArgumentError is not rescued by Chatwoot.
		return jsonReply(http.StatusInternalServerError, obj{{"status", 500}, {"error", "Internal Server Error"}})
	}
	handoff := tok == "bot" && conv.status == "pending" && next == "open"
	if handoff {
		// bot_handoff!: waiting_since, open, and conversation.bot_handoff
		// dispatched (what Chatwoot's bot-handoff report counts).
		if conv.waitingSince == 0 {
			conv.waitingSince = c.opts.Now().Unix()
		}
		conv.botHandoffs++
	}
	changed := c.setStatusLocked(conv, next)
	if tok == "user" && conv.status == "open" && conv.assigneeType == "AgentBot" {
		// handle_human_open: a person opening it clears the AI assignee (the
		// simulated user is an administrator, so it is not self-assigned).
		conv.assigneeID, conv.assigneeType = 0, ""
	}
	var event []byte
	if changed && !c.opts.NoEcho {
		event = railsJSON.marshal(c.statusEventLocked(conv))
	}
	resp := obj{{"meta", obj{}}, {"payload", obj{{"success", true}, {"conversation_id", conv.id}, {"current_status", conv.status}}}}
	c.mu.Unlock()
	if event != nil {
		c.echo(c.newDelivery(event, "conversation_status_changed", conv.id, 0), c.opts.EchoSync)
	}
	return jsonReply(http.StatusOK, resp)
}

func (c *Chatwoot) toggleTyping(r *http.Request, rt route, _ string, body []byte) reply {
	var in struct {
		TypingStatus string `json:"typing_status"`
	}
	_ = json.Unmarshal(body, &in) // Chatwoot ignores a body it cannot read here
	c.mu.Lock()
	defer c.mu.Unlock()
	conv := c.convs[rt.convID]
	if conv == nil {
		return errNotFound
	}
	conv.typing = in.TypingStatus
	c.changed.broadcast()
	return reply{status: http.StatusOK}
}

func (c *Chatwoot) assign(r *http.Request, rt route, tok string, body []byte) reply {
	var in struct {
		TeamID       any    `json:"team_id"`
		AssigneeID   any    `json:"assignee_id"`
		AssigneeType string `json:"assignee_type"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return cwError(http.StatusBadRequest, "Invalid request body")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	conv := c.convs[rt.convID]
	if conv == nil {
		return errNotFound
	}
	defer c.changed.broadcast()
	if in.TeamID != nil || in.AssigneeID == nil {
		id, _ := strconv.ParseInt(stringify(in.TeamID), 10, 64)
		if id <= 0 {
			conv.team = 0
			return jsonReply(http.StatusOK, nil)
		}
		conv.team = id
		now := c.opts.Now().UTC().Format(isoMillis)
		return jsonReply(http.StatusOK, obj{
			{"id", id}, {"name", c.teamNameLocked(id)}, {"description", ""}, {"allow_auto_assign", true},
			{"account_id", c.opts.AccountID}, {"created_at", now}, {"updated_at", now},
		})
	}
	id, _ := strconv.ParseInt(stringify(in.AssigneeID), 10, 64)
	if in.AssigneeType == "AgentBot" {
		if id != c.opts.BotID {
			return jsonReply(http.StatusOK, nil) // assign_ai_assignee returns nil for an unknown bot
		}
		conv.assigneeID, conv.assigneeType = id, "AgentBot"
		c.setStatusLocked(conv, "pending")
		return jsonReply(http.StatusOK, c.assigneeLocked(conv))
	}
	// Conversations::AssignmentService#assignee: account.users.find_by(id:),
	// so an id that is no user of the account unassigns.
	if id <= 0 || !c.isUserLocked(id) {
		conv.assigneeID, conv.assigneeType = 0, ""
		return jsonReply(http.StatusOK, nil)
	}
	if conv.assigneeType == "AgentBot" && conv.status == "pending" {
		// open_on_assignment?: a person assigned to a conversation an AI
		// held opens it, without bot_handoff!.
		c.setStatusLocked(conv, "open")
		if conv.waitingSince == 0 {
			conv.waitingSince = c.opts.Now().Unix()
		}
	}
	conv.assigneeID, conv.assigneeType = id, "User"
	return jsonReply(http.StatusOK, c.assigneeLocked(conv))
}

func (c *Chatwoot) teamNameLocked(id int64) string {
	if n := c.teams[id]; n != "" {
		return n
	}
	return "Team " + strconv.FormatInt(id, 10)
}

func (c *Chatwoot) labels(r *http.Request, rt route, _ string, body []byte) reply {
	var in struct {
		Labels []string `json:"labels"`
	}
	if r.Method == http.MethodPost {
		if err := json.Unmarshal(body, &in); err != nil {
			return cwError(http.StatusBadRequest, "Invalid request body")
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	conv := c.convs[rt.convID]
	if conv == nil {
		return errNotFound
	}
	if r.Method == http.MethodPost {
		ls := make([]string, 0, len(in.Labels))
		for _, l := range in.Labels {
			if l = strings.TrimSpace(l); l != "" {
				ls = append(ls, l)
			}
		}
		slices.Sort(ls)
		conv.labels = slices.Compact(ls)
		c.changed.broadcast()
	}
	labels := conv.labels
	if labels == nil {
		labels = []string{}
	}
	return jsonReply(http.StatusOK, obj{{"payload", labels}})
}

// ---- state changes shared by the REST API and the scripted actors ----

func (c *Chatwoot) addMessageLocked(conv *cwConv, m *cwMsg) {
	now := c.opts.Now()
	m.id = c.nextMsg
	c.nextMsg++
	m.conv = conv.id
	m.created = now
	if m.status == "" {
		m.status = "sent"
	}
	if m.mtype == 0 {
		conv.lastIncoming = now
	}
	if m.attrs == nil {
		m.attrs = map[string]any{}
	}
	if m.contentType == "" {
		m.contentType = "text"
	}
	if len(conv.msgs) >= maxConvMessages {
		conv.msgs = append(conv.msgs[:0], conv.msgs[maxConvMessages/2:]...)
	}
	conv.msgs = append(conv.msgs, m)
	if m.mtype != 2 && !m.private {
		conv.lastPublic = m
	}
	conv.updated = now
	if m.mtype != 2 {
		conv.lastActivity = now
	}
	switch {
	case m.mtype == 0:
		conv.unread++
		if conv.waitingSince == 0 {
			conv.waitingSince = now.Unix()
		}
	case m.mtype == 1 && !m.private && (m.senderKind == "user" || m.senderKind == "agent_bot"):
		if conv.firstReply.IsZero() {
			conv.firstReply = now
		}
		conv.waitingSince = 0
		conv.unread = 0
	}
	c.changed.broadcast()
}

func (c *Chatwoot) setStatusLocked(conv *cwConv, status string) bool {
	if conv.status == status {
		return false
	}
	conv.status = status
	conv.updated = c.opts.Now()
	c.changed.broadcast()
	return true
}

var errNoConversation = errors.New("no such conversation")
