package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Intent is a post bridge meant to make for an event's step. MessageID is
// Chatwoot's id once the post is known to exist, 0 while it is in doubt.
type Intent struct {
	EventID        int64
	Step           string
	AccountID      int64
	ConversationID int64
	Private        bool
	Content        string
	Hash           string
	At             time.Time
	MessageID      int64
}

// ContentHash identifies a message by what Chatwoot shows of it. Chatwoot
// turns a backslash before a newline into a plain newline in webhooks
// (app/services/messages/webhook_content_normalizer.rb), so both sides are
// normalised the same way before hashing; a note and a public message with
// the same text differ.
func ContentHash(content string, private bool) string {
	c := strings.ReplaceAll(content, "\r\n", "\n")
	c = strings.ReplaceAll(c, "\\\n", "\n")
	c = strings.TrimSpace(c)
	h := sha256.New()
	if private {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	h.Write([]byte(c))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

const intentCols = `event_id, step, account_id, conversation_id, private, content, content_hash, at, message_id`

func scanIntent(sc interface{ Scan(...any) error }) (Intent, error) {
	var in Intent
	var at int64
	err := sc.Scan(&in.EventID, &in.Step, &in.AccountID, &in.ConversationID, &in.Private, &in.Content,
		&in.Hash, &at, &in.MessageID)
	in.At = fromMS(at)
	return in, err
}

// AddIntent records a post about to be made, replacing an earlier intent of
// the same step (one whose post was recorded, then cleared by a forced
// replay).
func (tx *Tx) AddIntent(in Intent) error {
	if in.Hash == "" {
		in.Hash = ContentHash(in.Content, in.Private)
	}
	tx.Later(fmt.Sprintf("record intent %d/%s", in.EventID, in.Step), `INSERT INTO intents (`+intentCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)
		ON CONFLICT (event_id, step) DO UPDATE SET private = excluded.private, content = excluded.content,
			content_hash = excluded.content_hash, at = excluded.at, message_id = 0`,
		in.EventID, in.Step, in.AccountID, in.ConversationID, in.Private, in.Content, in.Hash, ms(tx.now))
	return nil
}

// RecordPost records that Chatwoot message messageID carried the step of an
// event: the message as bridge's own (RecordPosted), then the intent as
// resolved (ResolveIntent). The worker whose POST returned and the webhook
// echoing the message both record it, often at the same moment; on
// PostgreSQL, taking the two rows' locks in one order everywhere is what
// keeps them from deadlocking (they did, when the echo resolved the intent
// first: each waited a second for PostgreSQL to break the cycle).
func (tx *Tx) RecordPost(messageID, eventID int64, step string) error {
	if err := tx.RecordPosted(messageID, eventID, step); err != nil {
		return err
	}
	return tx.ResolveIntent(eventID, step, messageID)
}

// ResolveIntent records the Chatwoot message that carried the post.
func (tx *Tx) ResolveIntent(eventID int64, step string, messageID int64) error {
	tx.Later(fmt.Sprintf("resolve intent %d/%s", eventID, step),
		"UPDATE intents SET message_id = ? WHERE event_id = ? AND step = ?", messageID, eventID, step)
	return nil
}

// MatchIntent finds the oldest open intent of the conversation whose
// content has hash: the post a webhook of an outgoing message echoes.
func (tx *Tx) MatchIntent(account, conv int64, hash string) (Intent, bool, error) {
	in, err := scanIntent(tx.QueryRow(`SELECT `+intentCols+` FROM intents
		WHERE account_id = ? AND conversation_id = ? AND content_hash = ? AND message_id = 0 AND at <= ?
		ORDER BY at, event_id LIMIT 1`, account, conv, hash, ms(tx.now)))
	if errors.Is(err, sql.ErrNoRows) {
		return in, false, nil
	}
	if err != nil {
		return in, false, fmt.Errorf("match intent: %w", err)
	}
	return in, true, nil
}

// Intent reads the intent of an event's step; ok is false when none was
// recorded.
func (db *DB) Intent(ctx context.Context, eventID int64, step string) (in Intent, ok bool, err error) {
	in, err = scanIntent(db.queryRow(ctx, "SELECT "+intentCols+" FROM intents WHERE event_id = ? AND step = ?", eventID, step))
	if errors.Is(err, sql.ErrNoRows) {
		return in, false, nil
	}
	if err != nil {
		return in, false, fmt.Errorf("read intent %d/%s: %w", eventID, step, err)
	}
	return in, true, nil
}

// IsPosted reports whether bridge recorded the Chatwoot message id as one
// of its posts.
func (db *DB) IsPosted(ctx context.Context, messageID int64) (bool, error) {
	var one int
	err := db.queryRow(ctx, "SELECT 1 FROM posted WHERE message_id = ?", messageID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}
