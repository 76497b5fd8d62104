package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// RouteOptions are a route's rich-message settings; "" keeps the
// configured default.
type RouteOptions struct {
	// Transfer is how attachments reach Dify: auto, remote_url or upload.
	Transfer string `json:"transfer,omitempty"`
	// Format converts answers before posting: markdown, whatsapp or plain.
	Format string `json:"format,omitempty"`
	// VoiceFallback is what to do with a voice note nobody could
	// transcribe: ask or handoff.
	VoiceFallback string `json:"voice_fallback,omitempty"`
}

func (o RouteOptions) json() (string, error) {
	b, err := json.Marshal(o)
	return string(b), err
}

func parseRouteOptions(id int64, s string) (RouteOptions, error) {
	var o RouteOptions
	if s == "" {
		return o, nil
	}
	if err := json.Unmarshal([]byte(s), &o); err != nil {
		return o, fmt.Errorf("route %d options: %w", id, err)
	}
	return o, nil
}

// SetTranscript records Chatwoot's transcription of a voice note.
func (tx *Tx) SetTranscript(messageID int64, text string) error {
	tx.Later(fmt.Sprintf("record transcript of message %d", messageID), `INSERT INTO transcripts (message_id, text, at) VALUES (?, ?, ?)
		ON CONFLICT (message_id) DO UPDATE SET text = excluded.text, at = excluded.at`, messageID, text, ms(tx.now))
	return nil
}

// Transcript reads the transcription of a voice note; ok is false when
// none arrived.
func (db *DB) Transcript(ctx context.Context, messageID int64) (text string, ok bool, err error) {
	err = db.queryRow(ctx, "SELECT text FROM transcripts WHERE message_id = ?", messageID).Scan(&text)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read transcript of message %d: %w", messageID, err)
	}
	return text, true, nil
}

// OpenMessageEvent returns the open (accepted or working) customer-message
// event of a Chatwoot message: the event that may be waiting for its
// transcription.
func (tx *Tx) OpenMessageEvent(messageID int64) (id int64, ok bool, err error) {
	err = tx.QueryRow(`SELECT id FROM events WHERE message_id = ? AND kind = ? AND status IN ('accepted', 'working')
		ORDER BY id LIMIT 1`, messageID, KindMessage).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("find the event of message %d: %w", messageID, err)
	}
	return id, true, nil
}

// SavePlan records an event's answer plan (opaque JSON), replacing an
// earlier one.
func (tx *Tx) SavePlan(eventID int64, parts []byte) error {
	tx.Later(fmt.Sprintf("record the answer plan of event %d", eventID), `INSERT INTO outbox (event_id, parts, at) VALUES (?, ?, ?)
		ON CONFLICT (event_id) DO UPDATE SET parts = excluded.parts, at = excluded.at`, eventID, string(parts), ms(tx.now))
	return nil
}

// Plan reads an event's answer plan; ok is false when it has none.
func (db *DB) Plan(ctx context.Context, eventID int64) (parts []byte, ok bool, err error) {
	var s string
	err = db.queryRow(ctx, "SELECT parts FROM outbox WHERE event_id = ?", eventID).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read the answer plan of event %d: %w", eventID, err)
	}
	return []byte(s), true, nil
}

// Answer is the last answer bridge posted in a conversation.
type Answer struct {
	AccountID      int64
	ConversationID int64
	EventID        int64
	RouteID        int64
	DifyMessageID  string
	DifyUser       string
	At             time.Time
}

// RecordAnswer remembers the conversation's latest answer.
func (tx *Tx) RecordAnswer(a Answer) error {
	tx.Later(fmt.Sprintf("record the answer of event %d", a.EventID), `INSERT INTO answers (account_id, conversation_id, event_id, route_id, dify_message_id, dify_user, at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, conversation_id) DO UPDATE SET event_id = excluded.event_id,
		route_id = excluded.route_id, dify_message_id = excluded.dify_message_id, dify_user = excluded.dify_user, at = excluded.at`,
		a.AccountID, a.ConversationID, a.EventID, a.RouteID, a.DifyMessageID, a.DifyUser, ms(tx.now))
	return nil
}

// LastAnswer reads the conversation's latest answer; ok is false when
// bridge has posted none.
func (db *DB) LastAnswer(ctx context.Context, account, conv int64) (a Answer, ok bool, err error) {
	var at int64
	err = db.queryRow(ctx, `SELECT account_id, conversation_id, event_id, route_id, dify_message_id, dify_user, at
		FROM answers WHERE account_id = ? AND conversation_id = ?`, account, conv).Scan(&a.AccountID, &a.ConversationID,
		&a.EventID, &a.RouteID, &a.DifyMessageID, &a.DifyUser, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return a, false, nil
	}
	if err != nil {
		return a, false, fmt.Errorf("read the last answer of conversation %d: %w", conv, err)
	}
	a.At = fromMS(at)
	return a, true, nil
}

// PostedBy returns the event and step that posted a Chatwoot message; ok
// is false when bridge did not post it.
func (db *DB) PostedBy(ctx context.Context, messageID int64) (eventID int64, step string, ok bool, err error) {
	err = db.queryRow(ctx, "SELECT event_id, step FROM posted WHERE message_id = ?", messageID).Scan(&eventID, &step)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, fmt.Errorf("read the poster of message %d: %w", messageID, err)
	}
	return eventID, step, true, nil
}
