package chatwoot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bridge-dev/bridge/internal/formdata"
	"github.com/bridge-dev/bridge/pkg/redact"
)

// Errors callers branch on.
var (
	// ErrUnauthorized: the token is unknown, or a bot token asked for a
	// user-only endpoint (APIError.Message says which).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotFound: unknown account or conversation.
	ErrNotFound = errors.New("not found")
)

// APIError is a non-2xx answer from Chatwoot.
type APIError struct {
	Op      string
	Status  int
	Message string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("chatwoot %s: http %d", e.Op, e.Status)
	}
	return fmt.Sprintf("chatwoot %s: http %d: %s", e.Op, e.Status, e.Message)
}

// Is maps statuses onto the sentinel errors.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	}
	return false
}

// Retryable reports whether another try may succeed: network errors, 429
// and 5xx. A 4xx (bad token, unknown conversation, validation) will not.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status == http.StatusTooManyRequests || ae.Status >= 500
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, context.DeadlineExceeded)
}

// Options configure a Client.
type Options struct {
	BaseURL    string // e.g. https://chatwoot.example.com
	Token      string // api_access_token: agent bot or user
	HTTPClient *http.Client
	Timeout    time.Duration // per request; 0 → 15s
}

// Client calls Chatwoot's REST API with one token.
type Client struct {
	base    string
	token   string
	hc      *http.Client
	timeout time.Duration
}

// NewClient returns a client; it starts nothing.
func NewClient(o Options) *Client {
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:       http.ProxyFromEnvironment,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			// Hundreds of workers may post at once. No cap on
			// connections: one would queue every post, typing indicator
			// and the echo it waits for behind the slowest, and cap
			// answers per second at the cap over Chatwoot's latency. Enough
			// stay open between bursts that most posts reuse one.
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 15 * time.Second,
		}}
	}
	t := o.Timeout
	if t <= 0 {
		t = 15 * time.Second
	}
	return &Client{base: strings.TrimRight(o.BaseURL, "/"), token: o.Token, hc: hc, timeout: t}
}

// BaseURL is the Chatwoot the client talks to.
func (c *Client) BaseURL() string { return c.base }

// Message is a created message as the REST API returns it. Only the id is
// relied on; the rest of the shape varies between versions.
type Message struct {
	ID       int64  `json:"id"`
	Content  string `json:"content"`
	Private  bool   `json:"private"`
	SourceID string `json:"source_id"`
}

// NewMessage is what bridge posts. It has no source_id on purpose:
// Chatwoot never sends an outgoing message that has one to the customer on
// WhatsApp, Telegram, Facebook, Instagram, SMS, email, Line, Twitter or
// TikTok (Base::SendOnChannelService#invalid_message?,
// app/services/base/send_on_channel_service.rb).
type NewMessage struct {
	Content     string `json:"content"`
	Private     bool   `json:"private"`
	MessageType string `json:"message_type"`
}

// ListedMessage is one message of GET .../messages, rendered by
// app/views/api/v1/models/_message.json.jbuilder: message_type is an
// integer there (0 incoming, 1 outgoing, 2 activity, 3 template) and
// created_at unix seconds.
type ListedMessage struct {
	ID          int64  `json:"id"`
	Content     string `json:"content"`
	MessageType int    `json:"message_type"`
	Private     bool   `json:"private"`
	CreatedAt   int64  `json:"created_at"`
	Sender      *struct {
		ID   int64  `json:"id"`
		Type string `json:"type"`
	} `json:"sender"`
}

// Messages lists the conversation's latest messages. Only user tokens may:
// a bot token gets 401 "not authorized for bots".
func (c *Client) Messages(ctx context.Context, account, conv int64) ([]ListedMessage, error) {
	var out struct {
		Payload []ListedMessage `json:"payload"`
	}
	if err := c.do(ctx, "list messages", http.MethodGet, c.convPath(account, conv, "messages"), nil, &out); err != nil {
		return nil, err
	}
	return out.Payload, nil
}

func (c *Client) convPath(account, conv int64, rest string) string {
	return fmt.Sprintf("/api/v1/accounts/%d/conversations/%d/%s", account, conv, rest)
}

// PostMessage posts an outgoing message or (Private) a private note.
func (c *Client) PostMessage(ctx context.Context, account, conv int64, m NewMessage) (*Message, error) {
	if m.MessageType == "" {
		m.MessageType = "outgoing"
	}
	var out Message
	if err := c.do(ctx, "post message", http.MethodPost, c.convPath(account, conv, "messages"), m, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// MaxAttachments is how many files one message may carry
// (Message#validate_attachments_limit, app/models/message.rb).
const MaxAttachments = 15

// OutFile is a file posted with a message; Body streams as the request is
// sent.
type OutFile struct {
	Name        string
	ContentType string
	Body        io.Reader
	Size        int64 // -1 when unknown
}

// PostMessageFiles posts a message with files as multipart/form-data, the
// files as attachments[] parts (MessageBuilder#process_attachments; agent
// bot tokens may). Nothing is buffered: the files stream from Body.
func (c *Client) PostMessageFiles(ctx context.Context, account, conv int64, m NewMessage, files []OutFile) (*Message, error) {
	if len(files) > MaxAttachments {
		return nil, fmt.Errorf("chatwoot post message: %d files, at most %d per message", len(files), MaxAttachments)
	}
	if m.MessageType == "" {
		m.MessageType = "outgoing"
	}
	parts := make([]formdata.File, len(files))
	for i, f := range files {
		parts[i] = formdata.File{Field: "attachments[]", Name: f.Name, ContentType: f.ContentType, Body: f.Body, Size: f.Size}
	}
	body, err := formdata.New([]formdata.Field{{Name: "content", Value: m.Content}, {Name: "message_type", Value: m.MessageType},
		{Name: "private", Value: strconv.FormatBool(m.Private)}}, parts)
	if err != nil {
		return nil, fmt.Errorf("chatwoot post message: %w", err)
	}
	var out Message
	if err := c.send(ctx, "post message", http.MethodPost, c.convPath(account, conv, "messages"), body.Reader, body.ContentType, body.Length, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ToggleStatus sets the conversation status (open hands it to humans).
func (c *Client) ToggleStatus(ctx context.Context, account, conv int64, status string) error {
	return c.do(ctx, "toggle status", http.MethodPost, c.convPath(account, conv, "toggle_status"),
		map[string]string{"status": status}, nil)
}

// Typing turns the typing indicator on or off.
func (c *Client) Typing(ctx context.Context, account, conv int64, on bool) error {
	st := "off"
	if on {
		st = "on"
	}
	return c.do(ctx, "toggle typing", http.MethodPost, c.convPath(account, conv, "toggle_typing_status"),
		map[string]string{"typing_status": st}, nil)
}

// AssignTeam assigns the conversation to a team (works with a bot token).
func (c *Client) AssignTeam(ctx context.Context, account, conv, team int64) error {
	return c.do(ctx, "assign team", http.MethodPost, c.convPath(account, conv, "assignments"),
		map[string]int64{"team_id": team}, nil)
}

// SetLabels replaces the conversation's labels (needs a user token).
func (c *Client) SetLabels(ctx context.Context, account, conv int64, labels []string) error {
	return c.do(ctx, "set labels", http.MethodPost, c.convPath(account, conv, "labels"),
		map[string][]string{"labels": labels}, nil)
}

// Version is what GET /api says (no token needed).
type Version struct {
	Version       string `json:"version"`
	QueueServices string `json:"queue_services"`
	DataServices  string `json:"data_services"`
}

// Version asks the server's version.
func (c *Client) Version(ctx context.Context) (*Version, error) {
	var v Version
	if err := c.do(ctx, "get version", http.MethodGet, "/api", nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Profile is the owner of a user token.
type Profile struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	Email    string `json:"email"`
	Role     string `json:"role"`
	Accounts []struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
		Role string `json:"role"`
	} `json:"accounts"`
}

// Profile reads the token owner's profile. A bot token gets ErrUnauthorized
// with the message "Access to this endpoint is not authorized for bots".
func (c *Client) Profile(ctx context.Context) (*Profile, error) {
	var p Profile
	if err := c.do(ctx, "get profile", http.MethodGet, "/api/v1/profile", nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// IsBotOnly reports whether err is Chatwoot refusing a bot token on a
// user-only endpoint (the token itself is valid).
func IsBotOnly(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusUnauthorized && strings.Contains(ae.Message, "not authorized for bots")
}

// Inbox is an inbox as the user API lists it.
type Inbox struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	ChannelType string `json:"channel_type"`
	WebhookURL  string `json:"webhook_url"`
}

// Inbox reads one inbox (user token).
func (c *Client) Inbox(ctx context.Context, account, id int64) (*Inbox, error) {
	var in Inbox
	if err := c.do(ctx, "get inbox", http.MethodGet, fmt.Sprintf("/api/v1/accounts/%d/inboxes/%d", account, id), nil, &in); err != nil {
		return nil, err
	}
	return &in, nil
}

// AgentBot is the bot attached to an inbox.
type AgentBot struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	OutgoingURL string `json:"outgoing_url"`
}

// InboxAgentBot reads the bot attached to an inbox; nil when none.
func (c *Client) InboxAgentBot(ctx context.Context, account, inbox int64) (*AgentBot, error) {
	var out struct {
		AgentBot *AgentBot `json:"agent_bot"`
	}
	if err := c.do(ctx, "get inbox agent bot", http.MethodGet, fmt.Sprintf("/api/v1/accounts/%d/inboxes/%d/agent_bot", account, inbox), nil, &out); err != nil {
		return nil, err
	}
	if out.AgentBot != nil && out.AgentBot.ID == 0 && out.AgentBot.OutgoingURL == "" {
		return nil, nil
	}
	return out.AgentBot, nil
}

// Webhook is an account webhook.
type Webhook struct {
	ID            int64    `json:"id"`
	URL           string   `json:"url"`
	Subscriptions []string `json:"subscriptions"`
}

// Webhooks lists the account webhooks (administrator token).
func (c *Client) Webhooks(ctx context.Context, account int64) ([]Webhook, error) {
	var out struct {
		Payload struct {
			Webhooks []Webhook `json:"webhooks"`
		} `json:"payload"`
	}
	if err := c.do(ctx, "list webhooks", http.MethodGet, fmt.Sprintf("/api/v1/accounts/%d/webhooks", account), nil, &out); err != nil {
		return nil, err
	}
	return out.Payload.Webhooks, nil
}

// CheckBotToken verifies a token and account without side effects: typing on
// conversation 0 answers 404 when both are fine and 401 otherwise.
func (c *Client) CheckBotToken(ctx context.Context, account int64) error {
	err := c.Typing(ctx, account, 0, false)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err == nil {
		return nil
	}
	return err
}

func (c *Client) do(ctx context.Context, op, method, path string, in, out any) error {
	if in == nil {
		return c.send(ctx, op, method, path, nil, "", 0, out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("chatwoot %s: %w", op, err)
	}
	return c.send(ctx, op, method, path, bytes.NewReader(b), "application/json", int64(len(b)), out)
}

// send makes one request with a ready body (nil for none) of the given
// type and length (-1 unknown) and decodes a 2xx answer into out.
func (c *Client) send(ctx context.Context, op, method, path string, body io.Reader, ctype string, length int64, out any) error {
	timeout := c.timeout
	if length < 0 || length > 1<<20 {
		// A request that streams files takes as long as the files take;
		// the files' own downloads are bounded by their timeout.
		timeout = max(timeout, 5*time.Minute)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("chatwoot %s: %w", op, err)
	}
	if body != nil {
		req.ContentLength = length
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" && path != "/api" {
		req.Header.Set("api_access_token", c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("chatwoot %s: %w", op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("chatwoot %s: read response: %w", op, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// An error body may echo the token it was sent (a proxy's debug
		// page, a misconfigured server); it is masked before it can reach
		// a log, the journal or a private note.
		return &APIError{Op: op, Status: resp.StatusCode, Message: redact.Known(errorMessage(data), c.token)}
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("chatwoot %s: decode response: %w", op, err)
	}
	return nil
}

// errorMessage pulls Chatwoot's error text from the shapes it uses:
// {"error": "..."}, {"message": "..."}, {"errors": [...]}, or plain text.
func errorMessage(data []byte) string {
	var e struct {
		Error   string   `json:"error"`
		Message string   `json:"message"`
		Errors  []string `json:"errors"`
	}
	if json.Unmarshal(data, &e) == nil {
		switch {
		case e.Error != "":
			return e.Error
		case e.Message != "":
			return e.Message
		case len(e.Errors) > 0:
			return strings.Join(e.Errors, "; ")
		}
	}
	s := strings.TrimSpace(string(data))
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
