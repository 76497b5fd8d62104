package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Ownership entry kinds.
const (
	OwnHandoff  = "handoff"  // bridge handed the conversation to humans
	OwnTakeover = "takeover" // an agent replied in a conversation the bot held
	OwnKeep     = "keep"     // an agent or operator kept it for humans
	OwnReturn   = "return"   // it went back to the bot
	OwnResolved = "resolved" // Chatwoot reported it resolved
	OwnReopened = "reopened" // Chatwoot reported a resolved conversation active again
)

// Ownership is one entry of a conversation's ownership journal.
type Ownership struct {
	ID             int64
	At             time.Time
	AccountID      int64
	ConversationID int64
	RouteID        int64
	Kind           string
	Owner          string // StateBot or StateHuman after the entry
	Cause          string
	Detail         string
	EventID        int64
}

// AddOwnership journals a change of holder, a resolve or a reopening, at
// the transaction's time unless o.At is set.
func (tx *Tx) AddOwnership(o Ownership) error {
	if o.At.IsZero() {
		o.At = tx.now
	}
	tx.Later(fmt.Sprintf("journal %s of conversation %d", o.Kind, o.ConversationID),
		`INSERT INTO ownership (at, account_id, conversation_id, route_id, kind, owner, cause, detail, event_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		ms(o.At), o.AccountID, o.ConversationID, o.RouteID, o.Kind, o.Owner, tx.db.text(o.Cause), tx.db.text(o.Detail), o.EventID)
	return nil
}

// OwnershipOf returns a conversation's ownership journal, oldest first, at
// most limit entries (the newest).
func (db *DB) OwnershipOf(ctx context.Context, account, conv int64, limit int) ([]Ownership, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := db.query(ctx, `SELECT id, at, account_id, conversation_id, route_id, kind, owner, cause, detail, event_id
		FROM ownership WHERE account_id = ? AND conversation_id = ? ORDER BY id DESC LIMIT ?`, account, conv, limit)
	if err != nil {
		return nil, fmt.Errorf("read ownership of conversation %d: %w", conv, err)
	}
	defer rows.Close()
	var out []Ownership
	for rows.Next() {
		var o Ownership
		var at int64
		if err := rows.Scan(&o.ID, &at, &o.AccountID, &o.ConversationID, &o.RouteID, &o.Kind, &o.Owner, &o.Cause, &o.Detail, &o.EventID); err != nil {
			return nil, err
		}
		o.At = fromMS(at)
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// ConvLifecycle is what the lifecycle remembers of one conversation.
type ConvLifecycle struct {
	LastHumanAt  time.Time
	HandoffCause string
	Summary      string
}

func (tx *Tx) ensureConvLifecycle(account, conv int64) error {
	tx.Later(fmt.Sprintf("record lifecycle of conversation %d", conv), `INSERT INTO conversation_lifecycle (account_id, conversation_id) VALUES (?, ?)
		ON CONFLICT (account_id, conversation_id) DO NOTHING`, account, conv)
	return nil
}

// NoteHuman records that a human wrote in the conversation at at.
func (tx *Tx) NoteHuman(account, conv int64, at time.Time) error {
	if err := tx.ensureConvLifecycle(account, conv); err != nil {
		return fmt.Errorf("note human activity in conversation %d: %w", conv, err)
	}
	tx.Later(fmt.Sprintf("note human activity in conversation %d", conv), `UPDATE conversation_lifecycle SET last_human_at = ?
		WHERE account_id = ? AND conversation_id = ? AND last_human_at < ?`, ms(at), account, conv, ms(at))
	return nil
}

// SetHandoffCause records why the conversation was last handed off ("" once
// the bot took it back and dealt with that).
func (tx *Tx) SetHandoffCause(account, conv int64, cause string) error {
	if err := tx.ensureConvLifecycle(account, conv); err != nil {
		return fmt.Errorf("record handoff cause of conversation %d: %w", conv, err)
	}
	tx.Later(fmt.Sprintf("record handoff cause of conversation %d", conv),
		`UPDATE conversation_lifecycle SET handoff_cause = ? WHERE account_id = ? AND conversation_id = ?`, cause, account, conv)
	return nil
}

// SetEpisodeSummary keeps the summary the next fresh Dify conversation
// receives ("" clears it).
func (tx *Tx) SetEpisodeSummary(account, conv int64, summary string) error {
	if err := tx.ensureConvLifecycle(account, conv); err != nil {
		return fmt.Errorf("keep summary of conversation %d: %w", conv, err)
	}
	tx.Later(fmt.Sprintf("keep summary of conversation %d", conv),
		`UPDATE conversation_lifecycle SET summary = ? WHERE account_id = ? AND conversation_id = ?`, tx.db.text(summary), account, conv)
	return nil
}

// ConvLifecycleOf reads what the lifecycle remembers of a conversation
// (zero when nothing).
func (db *DB) ConvLifecycleOf(ctx context.Context, account, conv int64) (ConvLifecycle, error) {
	var c ConvLifecycle
	var at int64
	err := db.queryRow(ctx, `SELECT last_human_at, handoff_cause, summary FROM conversation_lifecycle
		WHERE account_id = ? AND conversation_id = ?`, account, conv).Scan(&at, &c.HandoffCause, &c.Summary)
	if errors.Is(err, sql.ErrNoRows) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read lifecycle of conversation %d: %w", conv, err)
	}
	c.LastHumanAt = fromMS(at)
	return c, nil
}

// IdleHuman lists conversations of an inbox that humans hold, taken since
// before and without a human message since before: the candidates of the
// idle return.
func (db *DB) IdleHuman(ctx context.Context, inbox int64, before time.Time) ([]Conversation, error) {
	rows, err := db.query(ctx, "SELECT "+prefixed("c.", convCols)+` FROM conversations c
		LEFT JOIN conversation_lifecycle l ON l.account_id = c.account_id AND l.conversation_id = c.conversation_id
		WHERE c.inbox_id = ? AND c.state = 'human' AND c.state_at < ? AND COALESCE(l.last_human_at, 0) < ?
		ORDER BY c.state_at LIMIT 100`, inbox, ms(before), ms(before))
	if err != nil {
		return nil, fmt.Errorf("list idle conversations of inbox %d: %w", inbox, err)
	}
	return scanConvs(rows)
}

// RouteLifecycle returns a route's stored lifecycle settings ("" when it
// has none).
func (db *DB) RouteLifecycle(ctx context.Context, route int64) (string, error) {
	var s string
	err := db.queryRow(ctx, "SELECT settings FROM route_lifecycle WHERE route_id = ?", route).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read lifecycle of route %d: %w", route, err)
	}
	return s, nil
}

// RouteLifecycles returns every route's stored settings by route id.
func (db *DB) RouteLifecycles(ctx context.Context) (map[int64]string, error) {
	rows, err := db.query(ctx, "SELECT route_id, settings FROM route_lifecycle")
	if err != nil {
		return nil, fmt.Errorf("read route lifecycles: %w", err)
	}
	defer rows.Close()
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var s string
		if err := rows.Scan(&id, &s); err != nil {
			return nil, err
		}
		out[id] = s
	}
	return out, rows.Err()
}

// SetRouteLifecycle stores a route's settings; the route must exist.
func (db *DB) SetRouteLifecycle(ctx context.Context, route int64, settings string) error {
	return db.Write(ctx, func(tx *Tx) error {
		var n int
		if err := tx.QueryRow("SELECT count(*) FROM routes WHERE id = ?", route).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("route %d: %w", route, ErrNotFound)
		}
		_, err := tx.Exec(`INSERT INTO route_lifecycle (route_id, settings, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (route_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at`,
			route, settings, ms(tx.now))
		if err != nil {
			return fmt.Errorf("store lifecycle of route %d: %w", route, err)
		}
		_, err = tx.Exec("UPDATE routes SET updated_at = ? WHERE id = ?", ms(tx.now), route)
		return err
	})
}

func prefixed(p, cols string) string {
	out := make([]byte, 0, len(cols)+64)
	start := true
	for i := 0; i < len(cols); i++ {
		ch := cols[i]
		if start && ch != ' ' && ch != '\n' && ch != '\t' {
			out = append(out, p...)
			start = false
		}
		if ch == ',' {
			start = true
		}
		out = append(out, ch)
	}
	return string(out)
}

// Turn is one customer message bridge acted on and the answer it posted
// ("" when none was posted).
type Turn struct {
	EventID  int64
	At       time.Time
	Customer string
	Answer   string
}

const recentTurnsSQL = `SELECT e.id, e.received_at, e.text, COALESCE(i.content, '') FROM events e
	LEFT JOIN intents i ON i.event_id = e.id AND i.step = 'answer'
	WHERE e.account_id = ? AND e.conversation_id = ? AND e.kind = 'message' AND e.merged_into = 0
	ORDER BY e.id DESC LIMIT ?`

func scanTurns(rows Rows) ([]Turn, error) {
	defer rows.Close()
	var out []Turn
	for rows.Next() {
		var t Turn
		var at int64
		if err := rows.Scan(&t.EventID, &at, &t.Customer, &t.Answer); err != nil {
			return nil, err
		}
		t.At = fromMS(at)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// RecentTurns returns the conversation's last limit turns, oldest first.
func (db *DB) RecentTurns(ctx context.Context, account, conv int64, limit int) ([]Turn, error) {
	rows, err := db.query(ctx, recentTurnsSQL, account, conv, limit)
	if err != nil {
		return nil, fmt.Errorf("read turns of conversation %d: %w", conv, err)
	}
	return scanTurns(rows)
}

// RecentTurns is the same inside a write transaction.
func (tx *Tx) RecentTurns(account, conv int64, limit int) ([]Turn, error) {
	rows, err := tx.Query(recentTurnsSQL, account, conv, limit)
	if err != nil {
		return nil, fmt.Errorf("read turns of conversation %d: %w", conv, err)
	}
	return scanTurns(rows)
}

// ConvLifecycle reads what the lifecycle remembers of a conversation inside
// a write transaction (zero when nothing).
func (tx *Tx) ConvLifecycle(account, conv int64) (ConvLifecycle, error) {
	var c ConvLifecycle
	var at int64
	err := tx.QueryRow(`SELECT last_human_at, handoff_cause, summary FROM conversation_lifecycle
		WHERE account_id = ? AND conversation_id = ?`, account, conv).Scan(&at, &c.HandoffCause, &c.Summary)
	if errors.Is(err, sql.ErrNoRows) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read lifecycle of conversation %d: %w", conv, err)
	}
	c.LastHumanAt = fromMS(at)
	return c, nil
}
