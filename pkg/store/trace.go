package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// TracedEvent is an acted-on event with its trace and the posts it made or
// meant to make, as the Dashboard App shows them.
type TracedEvent struct {
	Event
	Hops  []Hop
	Posts []Intent
}

// ConversationTrace returns the newest limit acted-on events (not ignored,
// not rejected) of a conversation, newest first, each with its hops and
// posts. The three reads share one snapshot, so an event never shows hops
// it did not have yet.
func (db *DB) ConversationTrace(ctx context.Context, account, conv int64, limit int) ([]TracedEvent, error) {
	if limit <= 0 {
		limit = 20
	}
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read trace of conversation %d: %w", conv, err)
	}
	defer func() { _ = tx.Rollback() }() // read-only: there is nothing to undo
	// The events_conversation index (account_id, conversation_id, id) serves
	// the newest-first walk; the hop and intent reads take the same ids.
	const ids = `SELECT id FROM events WHERE account_id = ? AND conversation_id = ?
		AND status NOT IN ('ignored', 'rejected') ORDER BY id DESC LIMIT ?`
	rows, err := tx.QueryContext(ctx, db.sqlFor("SELECT "+eventCols+" FROM events WHERE id IN ("+ids+") ORDER BY id DESC"),
		account, conv, limit)
	if err != nil {
		return nil, fmt.Errorf("read trace of conversation %d: %w", conv, err)
	}
	var out []TracedEvent
	at := map[int64]int{}
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("read trace of conversation %d: %w", conv, err)
		}
		at[e.ID] = len(out)
		out = append(out, TracedEvent{Event: e})
	}
	if err := closeRows(rows); err != nil {
		return nil, fmt.Errorf("read trace of conversation %d: %w", conv, err)
	}
	if len(out) == 0 {
		return nil, nil
	}

	rows, err = tx.QueryContext(ctx, db.sqlFor(`SELECT event_id, seq, at, stage, outcome, detail, duration_ms
		FROM hops WHERE event_id IN (`+ids+`) ORDER BY event_id, seq`), account, conv, limit)
	if err != nil {
		return nil, fmt.Errorf("read hops of conversation %d: %w", conv, err)
	}
	for rows.Next() {
		var h Hop
		var ms int64
		var d float64
		if err := rows.Scan(&h.EventID, &h.Seq, &ms, &h.Stage, &h.Outcome, &h.Detail, &d); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read hops of conversation %d: %w", conv, err)
		}
		h.At = fromMS(ms)
		h.Duration = time.Duration(d * float64(time.Millisecond))
		if i, ok := at[h.EventID]; ok {
			out[i].Hops = append(out[i].Hops, h)
		}
	}
	if err := closeRows(rows); err != nil {
		return nil, fmt.Errorf("read hops of conversation %d: %w", conv, err)
	}

	rows, err = tx.QueryContext(ctx, db.sqlFor("SELECT "+intentCols+" FROM intents WHERE event_id IN ("+ids+") ORDER BY event_id, at, step"),
		account, conv, limit)
	if err != nil {
		return nil, fmt.Errorf("read posts of conversation %d: %w", conv, err)
	}
	for rows.Next() {
		in, err := scanIntent(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("read posts of conversation %d: %w", conv, err)
		}
		if i, ok := at[in.EventID]; ok {
			out[i].Posts = append(out[i].Posts, in)
		}
	}
	if err := closeRows(rows); err != nil {
		return nil, fmt.Errorf("read posts of conversation %d: %w", conv, err)
	}
	return out, nil
}

// ConversationMessages returns the newest limit message_created webhooks of
// a conversation that were not rejected (acted on or ignored, payload
// included), newest first: where the last thing a customer said is found,
// whoever held the conversation then.
func (db *DB) ConversationMessages(ctx context.Context, account, conv int64, limit int) ([]Event, error) {
	rows, err := db.query(ctx, "SELECT "+eventCols+` FROM events WHERE account_id = ? AND conversation_id = ?
		AND event = 'message_created' AND status != 'rejected' ORDER BY id DESC LIMIT ?`, account, conv, limit)
	if err != nil {
		return nil, fmt.Errorf("read messages of conversation %d: %w", conv, err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("read messages of conversation %d: %w", conv, err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func closeRows(rows Rows) error {
	if err := rows.Err(); err != nil {
		rows.Close()
		return err
	}
	return rows.Close()
}
