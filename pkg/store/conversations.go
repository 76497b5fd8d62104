package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Conversation states.
const (
	StateBot   = "bot"
	StateHuman = "human"
)

// Conversation is bridge's view of one Chatwoot conversation: who owns it and
// which Dify conversation it maps to.
type Conversation struct {
	AccountID          int64
	ConversationID     int64
	InboxID            int64
	ContactID          int64
	RouteID            int64
	DifyConversationID string
	State              string
	StateReason        string
	StateAt            time.Time
	Status             string
	// StatusAt is the time of the snapshot Status came from.
	StatusAt       time.Time
	MessagesIn     int
	Answers        int
	Handoffs       int
	LastActivityAt time.Time
}

const convCols = `account_id, conversation_id, inbox_id, contact_id, route_id, dify_conversation_id, state,
	state_reason, state_at, status, status_at, messages_in, answers, handoffs, last_activity_at`

func scanConv(sc interface{ Scan(...any) error }) (Conversation, error) {
	var c Conversation
	var sa, st, la int64
	err := sc.Scan(&c.AccountID, &c.ConversationID, &c.InboxID, &c.ContactID, &c.RouteID, &c.DifyConversationID,
		&c.State, &c.StateReason, &sa, &c.Status, &st, &c.MessagesIn, &c.Answers, &c.Handoffs, &la)
	c.StateAt, c.StatusAt, c.LastActivityAt = fromMS(sa), fromMS(st), fromMS(la)
	return c, err
}

const qConversation = "SELECT " + convCols + " FROM conversations WHERE account_id = ? AND conversation_id = ?"

// Conversation reads a conversation in a write transaction; ok is false when
// bridge has not seen it.
//
// On a shared database (PostgreSQL) it also locks the conversation until
// the transaction ends, seen or not: webhooks of one conversation that
// reach different processes at once then decide one after the other, as
// SQLite's single writer makes them, so a duplicate is recognised, a
// takeover is never overtaken by a message decided on the state before it,
// and the conversation's events get ids in the order they were decided. A
// known conversation is locked by its row (FOR UPDATE, which also returns
// the row as the last writer committed it); one not seen yet by an
// advisory lock on its ids, taken before reading again, since a statement
// that waits for a lock still reads what it saw when it began.
func (tx *Tx) Conversation(account, id int64) (c Conversation, ok bool, err error) {
	const q = qConversation
	if tx.db.dialect == postgresDialect {
		c, err = scanConv(tx.QueryRow(q+" FOR UPDATE", account, id))
		if errors.Is(err, sql.ErrNoRows) {
			// Sent with the read that follows, which runs once it is held.
			tx.Later(fmt.Sprintf("lock conversation %d", id), "SELECT pg_advisory_xact_lock(?)", tx.db.pg.conversationKey(account, id))
			c, err = scanConv(tx.QueryRow(q+" FOR UPDATE", account, id))
		}
	} else {
		c, err = scanConv(tx.QueryRow(q, account, id))
	}
	if errors.Is(err, sql.ErrNoRows) {
		return Conversation{AccountID: account, ConversationID: id, State: StateBot}, false, nil
	}
	return c, err == nil, err
}

// IngestView is what a webhook's decision reads of its conversation and
// message.
type IngestView struct {
	Conv   Conversation
	Known  bool // the conversation has a row
	Posted bool // bridge posted the message (Tx.IsPosted)
	Seen   bool // the message was already acted on (Tx.SeenMessage)
}

// IngestView reads, with the locks of Conversation, the conversation and
// (when messageID is not 0) whether the message is bridge's own post or
// was already acted on. On PostgreSQL the three reads travel together,
// after the lock, so that they see what the webhook before them committed.
func (tx *Tx) IngestView(account, id, messageID int64) (v IngestView, err error) {
	if tx.pg == nil {
		if v.Conv, v.Known, err = tx.Conversation(account, id); err != nil || messageID == 0 {
			return v, err
		}
		if v.Posted, err = tx.IsPosted(messageID); err != nil {
			return v, err
		}
		v.Seen, err = tx.SeenMessage(messageID)
		return v, err
	}
	read := func() ([]result, error) {
		stmts := []stmt{{sql: rebind(qConversation + " FOR UPDATE"), args: []any{account, id}, query: true}}
		if messageID != 0 {
			stmts = append(stmts, stmt{sql: rebind(qIsPosted), args: []any{messageID}, query: true},
				stmt{sql: rebind(qSeenMessage), args: []any{messageID}, query: true})
		}
		return tx.pg.send(stmts)
	}
	res, err := read()
	if err == nil && len(res[0].rows.rows) == 0 {
		// Not seen yet: lock its ids, then read all again (see Conversation).
		tx.Later(fmt.Sprintf("lock conversation %d", id), "SELECT pg_advisory_xact_lock(?)", tx.db.pg.conversationKey(account, id))
		res, err = read()
	}
	if err != nil {
		return v, fmt.Errorf("read conversation %d: %w", id, err)
	}
	v.Conv, err = scanConv(firstRow{res[0].rows})
	switch {
	case errors.Is(err, sql.ErrNoRows):
		v.Conv, err = Conversation{AccountID: account, ConversationID: id, State: StateBot}, nil
	case err != nil:
		return v, err
	default:
		v.Known = true
	}
	if messageID != 0 {
		v.Posted, v.Seen = len(res[1].rows.rows) > 0, len(res[2].rows.rows) > 0
	}
	return v, nil
}

// Conversation reads a conversation.
func (db *DB) Conversation(ctx context.Context, account, id int64) (Conversation, error) {
	c, err := scanConv(db.queryRow(ctx, "SELECT "+convCols+" FROM conversations WHERE account_id = ? AND conversation_id = ?", account, id))
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("conversation %d: %w", id, ErrNotFound)
	}
	return c, err
}

// TouchConversation creates the row if needed and records what a webhook
// said about it: inbox, contact, Chatwoot status, activity. status is a
// snapshot taken at statusAt: it replaces the stored one only when it is
// not older, so a late or redelivered webhook never writes back a status
// that has since changed. A snapshot without a time (zero) only fills a
// status that has none with a time either.
func (tx *Tx) TouchConversation(account, id, inbox, contact int64, status string, statusAt time.Time, incoming bool) error {
	in := 0
	if incoming {
		in = 1
	}
	tx.Later(fmt.Sprintf("record conversation %d", id), `INSERT INTO conversations (account_id, conversation_id, inbox_id, contact_id, status, status_at, messages_in, last_activity_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (account_id, conversation_id) DO UPDATE SET
			inbox_id = CASE WHEN excluded.inbox_id != 0 THEN excluded.inbox_id ELSE conversations.inbox_id END,
			contact_id = CASE WHEN excluded.contact_id != 0 THEN excluded.contact_id ELSE conversations.contact_id END,
			status = CASE WHEN excluded.status != '' AND excluded.status_at >= conversations.status_at
				THEN excluded.status ELSE conversations.status END,
			status_at = CASE WHEN excluded.status != '' AND excluded.status_at >= conversations.status_at
				THEN excluded.status_at ELSE conversations.status_at END,
			messages_in = conversations.messages_in + excluded.messages_in,
			last_activity_at = excluded.last_activity_at`,
		account, id, inbox, contact, status, ms(statusAt), in, ms(tx.now))
	return nil
}

// SetConversationState hands a conversation to a human or back to the bot.
func (tx *Tx) SetConversationState(account, id int64, state, reason string) error {
	tx.Later(fmt.Sprintf("set conversation %d state", id), `INSERT INTO conversations (account_id, conversation_id, state, state_reason, state_at, last_activity_at)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (account_id, conversation_id) DO UPDATE SET
			state = excluded.state, state_reason = excluded.state_reason, state_at = excluded.state_at,
			handoffs = conversations.handoffs + CASE WHEN excluded.state = 'human' AND conversations.state != 'human' THEN 1 ELSE 0 END`,
		account, id, state, tx.db.text(reason), ms(tx.now), ms(tx.now))
	return nil
}

// SetStatus records a Chatwoot status as of at (bridge's clock when bridge
// set it itself), unless a newer snapshot is already stored.
func (tx *Tx) SetStatus(account, id int64, status string, at time.Time) error {
	tx.Later(fmt.Sprintf("set conversation %d status", id), `UPDATE conversations SET status = ?, status_at = ?
		WHERE account_id = ? AND conversation_id = ? AND status_at <= ?`, status, ms(at), account, id, ms(at))
	return nil
}

// MapDify stores the Dify conversation of a Chatwoot conversation for a route.
func (tx *Tx) MapDify(account, id, route int64, difyConversation string) error {
	tx.Later(fmt.Sprintf("map conversation %d", id), `UPDATE conversations SET dify_conversation_id = ?, route_id = ?
		WHERE account_id = ? AND conversation_id = ?`, difyConversation, route, account, id)
	return nil
}

// CountAnswer adds one to the conversation's answers.
func (tx *Tx) CountAnswer(account, id int64) error {
	tx.Later(fmt.Sprintf("count an answer in conversation %d", id),
		"UPDATE conversations SET answers = answers + 1, last_activity_at = ? WHERE account_id = ? AND conversation_id = ?",
		ms(tx.now), account, id)
	return nil
}

// ConversationFilter selects conversations for listing.
type ConversationFilter struct {
	InboxID int64
	State   string
	Limit   int
}

// ListConversations returns conversations, most recently active first.
func (db *DB) ListConversations(ctx context.Context, f ConversationFilter) ([]Conversation, error) {
	where := []string{"1=1"}
	var args []any
	if f.InboxID != 0 {
		where = append(where, "inbox_id = ?")
		args = append(args, f.InboxID)
	}
	if f.State != "" {
		where = append(where, "state = ?")
		args = append(args, f.State)
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	args = append(args, f.Limit)
	rows, err := db.query(ctx, "SELECT "+convCols+" FROM conversations WHERE "+strings.Join(where, " AND ")+
		" ORDER BY last_activity_at DESC, conversation_id DESC LIMIT ?", args...)
	if err != nil {
		return nil, fmt.Errorf("list conversations: %w", err)
	}
	return scanConvs(rows)
}

func scanConvs(rows Rows) ([]Conversation, error) {
	defer rows.Close()
	var out []Conversation
	for rows.Next() {
		c, err := scanConv(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// ResetConversation forgets the Dify conversation of every conversation with
// that id (in any account) so the next message starts a fresh one.
func (db *DB) ResetConversation(ctx context.Context, id int64) error {
	return db.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec("UPDATE conversations SET dify_conversation_id = '' WHERE conversation_id = ?", id)
		if err != nil {
			return fmt.Errorf("reset conversation %d: %w", id, err)
		}
		return mustAffect(res, fmt.Sprintf("conversation %d", id))
	})
}

// ConversationsByID returns the conversations with display id id, in every
// account bridge has seen it in.
func (db *DB) ConversationsByID(ctx context.Context, id int64) ([]Conversation, error) {
	rows, err := db.query(ctx, "SELECT "+convCols+" FROM conversations WHERE conversation_id = ? ORDER BY account_id", id)
	if err != nil {
		return nil, fmt.Errorf("read conversation %d: %w", id, err)
	}
	return scanConvs(rows)
}
