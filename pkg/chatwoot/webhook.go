// Package chatwoot speaks Chatwoot's webhook format (in) and its REST API
// (out). It knows the wire format and nothing of routes or handoff.
package chatwoot

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Sender types as webhooks carry them. A contact has no type at all.
const (
	SenderContact  = ""
	SenderUser     = "user"
	SenderAgentBot = "agent_bot"
)

// Event is the part of a Chatwoot webhook bridge reads. Message events
// (message_created, message_updated) fill the message fields; conversation
// events carry the conversation at the top level and fill Conversation only.
type Event struct {
	Name string

	// Message fields.
	MessageID   int64
	Content     string
	ContentType string
	MessageType string // incoming | outgoing | template | activity
	Private     bool
	SourceID    string
	// CreatedAt is when Chatwoot created the message (zero if absent).
	CreatedAt   time.Time
	Sender      *Sender // nil when the message has no sender
	Attachments []Attachment
	// ExternalError is content_attributes.external_error: the channel's
	// provider refused to deliver the message (set on message_updated).
	ExternalError string
	// CSAT is the customer's answer to a CSAT survey (content_type
	// input_csat), nil when the payload carries none.
	CSAT *CSATResponse

	AccountID    int64
	AccountName  string
	InboxID      int64
	InboxName    string
	Conversation Conversation
}

// Sender is who wrote a message.
type Sender struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
	Type  string `json:"type"`
}

// Conversation is the conversation object of a webhook. ID is the display
// id, the number used in API URLs.
type Conversation struct {
	ID        int64
	InboxID   int64
	Status    string
	ContactID int64
	Contact   Sender
	Channel   string
	// Type is additional_attributes.type, e.g. "instagram_direct_message"
	// for an Instagram conversation of a Facebook page inbox.
	Type string
	// UpdatedAt is the conversation's updated_at when Chatwoot built the
	// payload (zero if absent). Payloads are snapshots delivered out of
	// order, so it says which of two statuses is the newer.
	UpdatedAt time.Time
}

// Attachment is one entry of a message's attachments, as
// Attachment#push_event_data renders it (app/models/attachment.rb): files
// (image, audio, video, file and the social types) carry extension,
// content_type, data_url and file_size; audio adds transcribed_text ("" until
// Chatwoot's own transcription fills it); location carries coordinates and a
// title; contact and fallback a title only. An entry whose file_type is nil
// is rendered as null, which parses as an Attachment with FileType "".
type Attachment struct {
	ID              int64   `json:"id"`
	FileType        string  `json:"file_type"`
	Extension       string  `json:"extension"`
	ContentType     string  `json:"content_type"`
	DataURL         string  `json:"data_url"`
	FileSize        int64   `json:"file_size"`
	Lat             float64 `json:"coordinates_lat"`
	Long            float64 `json:"coordinates_long"`
	FallbackTitle   string  `json:"fallback_title"`
	TranscribedText string  `json:"transcribed_text"`
}

// Transcript is the transcription of the message's first audio attachment
// that has one ("" if none).
func (e *Event) Transcript() string {
	for _, a := range e.Attachments {
		if a.FileType == "audio" && strings.TrimSpace(a.TranscribedText) != "" {
			return strings.TrimSpace(a.TranscribedText)
		}
	}
	return ""
}

// CSATResponse is content_attributes.submitted_values.csat_survey_response,
// written when the customer rates the conversation (the public CSAT
// survey and the widget both update the input_csat message, which fires
// message_updated; spec/controllers/public/api/v1/inboxes/messages_controller_spec.rb).
type CSATResponse struct {
	Rating  int
	Comment string
}

type wireContentAttributes struct {
	ExternalError   *string         `json:"external_error"`
	SubmittedValues json.RawMessage `json:"submitted_values"`
}

// contentAttributes reads what bridge needs from content_attributes, which
// holds arbitrary keys (forms keep an array in submitted_values). A shape
// it does not expect yields nothing rather than a refused webhook.
func contentAttributes(raw json.RawMessage) (externalError string, csat *CSATResponse) {
	raw = bytes.TrimSpace(raw)
	if !bytes.Contains(raw, []byte("external_error")) && !bytes.Contains(raw, []byte("submitted_values")) {
		return "", nil // the usual {}: nothing to read
	}
	if len(raw) > 0 && raw[0] == '"' {
		// Some writers store the hash as a JSON string.
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", nil
		}
		raw = []byte(s)
	}
	var w wireContentAttributes
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &w) != nil {
		return "", nil
	}
	if w.ExternalError != nil {
		externalError = strings.TrimSpace(*w.ExternalError)
	}
	var sv struct {
		CSAT *struct {
			Rating  json.RawMessage `json:"rating"`
			Comment *string         `json:"feedback_message"`
		} `json:"csat_survey_response"`
	}
	if sv0 := bytes.TrimSpace(w.SubmittedValues); len(sv0) > 0 && sv0[0] == '{' && json.Unmarshal(sv0, &sv) == nil && sv.CSAT != nil {
		r := strings.Trim(string(bytes.TrimSpace(sv.CSAT.Rating)), `"`)
		if n, err := strconv.Atoi(r); err == nil && n >= 1 && n <= 5 {
			csat = &CSATResponse{Rating: n}
			if sv.CSAT.Comment != nil {
				csat.Comment = strings.TrimSpace(*sv.CSAT.Comment)
			}
		}
	}
	return externalError, csat
}

// IsMessage reports whether the event carries a message.
func (e *Event) IsMessage() bool {
	return e.Name == "message_created" || e.Name == "message_updated"
}

// ContactID is the customer of the conversation.
func (e *Event) ContactID() int64 {
	if e.Conversation.ContactID != 0 {
		return e.Conversation.ContactID
	}
	if e.MessageType == "incoming" && e.Sender != nil {
		return e.Sender.ID
	}
	return 0
}

// ParseError says why a body is not a usable webhook.
type ParseError struct{ Reason string }

func (e *ParseError) Error() string { return e.Reason }

// The wire shapes. Ids are numbers in every real payload; a legacy or forged
// body with string ids is refused rather than guessed at.
type wireSender struct {
	ID    int64   `json:"id"`
	Name  string  `json:"name"`
	Email *string `json:"email"`
	Type  string  `json:"type"`
}

type wireConversation struct {
	ID           *int64          `json:"id"`
	InboxID      int64           `json:"inbox_id"`
	Status       string          `json:"status"`
	Channel      string          `json:"channel"`
	UpdatedAt    json.RawMessage `json:"updated_at"`
	Attributes   json.RawMessage `json:"additional_attributes"`
	ContactInbox *struct {
		ContactID int64 `json:"contact_id"`
	} `json:"contact_inbox"`
	Meta *struct {
		Sender *wireSender `json:"sender"`
	} `json:"meta"`
	Messages []struct {
		AccountID int64 `json:"account_id"`
	} `json:"messages"`
}

type wireEvent struct {
	Event       string          `json:"event"`
	ID          json.RawMessage `json:"id"`
	Content     *string         `json:"content"`
	ContentType string          `json:"content_type"`
	MessageType json.RawMessage `json:"message_type"`
	Private     bool            `json:"private"`
	SourceID    *string         `json:"source_id"`
	CreatedAt   json.RawMessage `json:"created_at"`
	UpdatedAt   json.RawMessage `json:"updated_at"`
	Sender      json.RawMessage `json:"sender"`
	Attachments []Attachment    `json:"attachments"`
	Attributes  json.RawMessage `json:"content_attributes"`
	Account     *struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	} `json:"account"`
	Inbox *struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	} `json:"inbox"`
	Conversation *wireConversation `json:"conversation"`

	// Conversation events carry the conversation at the top level.
	InboxID      int64  `json:"inbox_id"`
	Status       string `json:"status"`
	Channel      string `json:"channel"`
	ContactInbox *struct {
		ContactID int64 `json:"contact_id"`
	} `json:"contact_inbox"`
	Meta *struct {
		Sender *wireSender `json:"sender"`
	} `json:"meta"`
	Messages []struct {
		AccountID int64 `json:"account_id"`
	} `json:"messages"`
}

// ParseEvent decodes a webhook body. It returns a *ParseError naming what is
// wrong when the body is not JSON or lacks a field bridge needs to decide.
func ParseEvent(body []byte) (*Event, error) {
	var w wireEvent
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		return nil, &ParseError{Reason: "malformed json: " + shortJSONError(err)}
	}
	// One document and nothing after it: a body with more is not what
	// Chatwoot sends, and what follows would be stored unread.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &ParseError{Reason: "malformed json: data after the JSON document"}
	}
	if w.Event == "" {
		return nil, &ParseError{Reason: "missing field: event"}
	}
	e := &Event{Name: w.Event}
	if w.Account != nil {
		e.AccountID, e.AccountName = w.Account.ID, w.Account.Name
	}
	if w.Inbox != nil {
		e.InboxID, e.InboxName = w.Inbox.ID, w.Inbox.Name
	}
	switch {
	case e.IsMessage():
		id, err := intField(w.ID, "id")
		if err != nil {
			return nil, err
		}
		e.MessageID = id
		if len(w.MessageType) == 0 {
			return nil, &ParseError{Reason: "missing field: message_type"}
		}
		mt, err := messageType(w.MessageType)
		if err != nil {
			return nil, err
		}
		e.MessageType = mt
		if w.Content != nil {
			e.Content = *w.Content
		}
		e.ContentType, e.Private, e.Attachments = w.ContentType, w.Private, w.Attachments
		e.ExternalError, e.CSAT = contentAttributes(w.Attributes)
		if w.SourceID != nil {
			e.SourceID = *w.SourceID
		}
		e.CreatedAt = lenientTime(w.CreatedAt)
		if s := bytes.TrimSpace(w.Sender); len(s) > 0 && !bytes.Equal(s, []byte("null")) {
			var ws wireSender
			if err := json.Unmarshal(s, &ws); err != nil {
				return nil, &ParseError{Reason: "malformed field: sender: " + shortJSONError(err)}
			}
			e.Sender = &Sender{ID: ws.ID, Name: ws.Name, Type: ws.Type}
			if ws.Email != nil {
				e.Sender.Email = *ws.Email
			}
		}
		if w.Conversation == nil || w.Conversation.ID == nil {
			return nil, &ParseError{Reason: "missing field: conversation.id"}
		}
		c := w.Conversation
		e.Conversation = Conversation{ID: *c.ID, InboxID: c.InboxID, Status: c.Status, Channel: c.Channel,
			UpdatedAt: lenientTime(c.UpdatedAt), Type: attributeType(c.Attributes)}
		if c.ContactInbox != nil {
			e.Conversation.ContactID = c.ContactInbox.ContactID
		}
		if c.Meta != nil && c.Meta.Sender != nil {
			e.Conversation.Contact = toSender(c.Meta.Sender)
			if e.Conversation.ContactID == 0 {
				e.Conversation.ContactID = c.Meta.Sender.ID
			}
		}
		if e.InboxID == 0 {
			e.InboxID = c.InboxID
		}
		if e.Conversation.InboxID == 0 {
			e.Conversation.InboxID = e.InboxID
		}
		if e.AccountID == 0 {
			return nil, &ParseError{Reason: "missing field: account.id"}
		}
		if e.InboxID == 0 {
			return nil, &ParseError{Reason: "missing field: inbox.id"}
		}
		if e.MessageID <= 0 {
			// Chatwoot's message ids are positive; duplicate detection is
			// keyed on them, so a zero or negative one would bypass it.
			return nil, &ParseError{Reason: fmt.Sprintf("malformed field: id: want a positive message id, got %d", e.MessageID)}
		}
	case strings.HasPrefix(w.Event, "conversation_"):
		// Conversation events: the conversation object is the payload itself
		// (typing events nest it under "conversation").
		if w.Conversation != nil && w.Conversation.ID != nil {
			c := w.Conversation
			e.Conversation = Conversation{ID: *c.ID, InboxID: c.InboxID, Status: c.Status, Channel: c.Channel,
				UpdatedAt: lenientTime(c.UpdatedAt)}
			if len(c.Messages) > 0 && e.AccountID == 0 {
				e.AccountID = c.Messages[0].AccountID
			}
		} else {
			id, err := intField(w.ID, "id")
			if err != nil {
				return nil, err
			}
			e.Conversation = Conversation{ID: id, InboxID: w.InboxID, Status: w.Status, Channel: w.Channel,
				UpdatedAt: lenientTime(w.UpdatedAt)}
			if w.ContactInbox != nil {
				e.Conversation.ContactID = w.ContactInbox.ContactID
			}
			if w.Meta != nil && w.Meta.Sender != nil {
				e.Conversation.Contact = toSender(w.Meta.Sender)
				if e.Conversation.ContactID == 0 {
					e.Conversation.ContactID = w.Meta.Sender.ID
				}
			}
			if len(w.Messages) > 0 && e.AccountID == 0 {
				e.AccountID = w.Messages[0].AccountID
			}
		}
		if e.InboxID == 0 {
			e.InboxID = e.Conversation.InboxID
		}
	}
	return e, nil
}

// SnapshotAt is when Chatwoot built the payload, as near as it says: the
// newer of the conversation's updated_at and the message's created_at. It is
// zero when the payload carries neither.
func (e *Event) SnapshotAt() time.Time {
	t := e.Conversation.UpdatedAt
	if e.CreatedAt.After(t) {
		t = e.CreatedAt
	}
	return t
}

// ClampSnapshot moves the payload's timestamps back to now when they are
// later.
func (e *Event) ClampSnapshot(now time.Time) {
	if e.CreatedAt.After(now) {
		e.CreatedAt = now
	}
	if e.Conversation.UpdatedAt.After(now) {
		e.Conversation.UpdatedAt = now
	}
}

// lenientTime reads a Chatwoot timestamp in any of the shapes its payloads
// use: unix seconds as an integer or a float (conversation.updated_at is a
// float, app/presenters/conversations/event_data_presenter.rb), or an
// ISO-8601 string (message created_at, app/models/message.rb#webhook_data).
// Anything else is zero: a timestamp only orders snapshots, it never
// decides whether a webhook is valid.
func lenientTime(raw json.RawMessage) time.Time {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return time.Time{}
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return time.Time{}
		}
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05 MST", "2006-01-02 15:04:05"} {
			if t, err := time.Parse(layout, s); err == nil {
				return t
			}
		}
		return time.Time{}
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f <= 0 || f > 1e11 {
		return time.Time{}
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC()
}

// attributeType reads additional_attributes.type, "" when absent or odd.
func attributeType(raw json.RawMessage) string {
	if !bytes.Contains(raw, []byte(`"type"`)) {
		return ""
	}
	var a struct {
		Type any `json:"type"`
	}
	if json.Unmarshal(raw, &a) != nil {
		return ""
	}
	t, _ := a.Type.(string)
	return t
}

func toSender(s *wireSender) Sender {
	out := Sender{ID: s.ID, Name: s.Name, Type: s.Type}
	if s.Email != nil {
		out.Email = *s.Email
	}
	return out
}

func intField(raw json.RawMessage, name string) (int64, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return 0, &ParseError{Reason: "missing field: " + name}
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, &ParseError{Reason: fmt.Sprintf("malformed field: %s: want an integer, got %.40s", name, raw)}
	}
	return v, nil
}

// messageType accepts the string form of webhooks and the integer form of
// REST payloads (0 incoming, 1 outgoing, 2 activity, 3 template).
func messageType(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		switch s {
		case "incoming", "outgoing", "activity", "template":
			return s, nil
		}
		return "", &ParseError{Reason: fmt.Sprintf("malformed field: message_type: unknown value %.40q", s)}
	}
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		switch n {
		case 0:
			return "incoming", nil
		case 1:
			return "outgoing", nil
		case 2:
			return "activity", nil
		case 3:
			return "template", nil
		}
	}
	return "", &ParseError{Reason: fmt.Sprintf("malformed field: message_type: %.40s", raw)}
}

func shortJSONError(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %s: want %s, got %s", te.Field, te.Type, te.Value)
	}
	return err.Error()
}

// Signature errors.
var (
	ErrNoSignature  = errors.New("missing X-Chatwoot-Signature or X-Chatwoot-Timestamp")
	ErrBadSignature = errors.New("signature does not match")
	ErrStale        = errors.New("timestamp outside the 5 minute window")
)

// SignatureWindow is how far a delivery's timestamp may be from our clock.
const SignatureWindow = 5 * time.Minute

// Sign returns the X-Chatwoot-Signature value for body at timestamp ts.
func Sign(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks a signed delivery: HMAC-SHA256 over
// "<timestamp>.<raw body>", compared in constant time, with the timestamp
// within SignatureWindow of now.
func VerifySignature(secret, signature, timestamp string, body []byte, now time.Time) error {
	if signature == "" || timestamp == "" {
		return ErrNoSignature
	}
	ts, err := strconv.ParseInt(strings.TrimSpace(timestamp), 10, 64)
	if err != nil {
		return fmt.Errorf("bad X-Chatwoot-Timestamp: %w", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > SignatureWindow || d < -SignatureWindow {
		return ErrStale
	}
	want := Sign(secret, ts, body)
	if !hmac.Equal([]byte(strings.ToLower(strings.TrimSpace(signature))), []byte(want)) {
		return ErrBadSignature
	}
	return nil
}
