package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Event states, as `bridge events list` shows them.
const (
	StatusRejected   = "rejected"
	StatusIgnored    = "ignored"
	StatusAccepted   = "accepted"
	StatusWorking    = "working"
	StatusAnswered   = "answered"
	StatusHandedOff  = "handed_off"
	StatusSuperseded = "superseded"
	StatusFailed     = "failed"
)

// Event kinds of acted-on events.
const (
	KindMessage  = "message"  // a customer message to answer
	KindTakeover = "takeover" // a human replied: open the conversation
	// KindReopen: Chatwoot reopened a human-held conversation as a bot
	// status, and the route does not give it back that way: open it again
	// for the humans.
	KindReopen = "reopen"
)

// Statuses lists every event state.
var Statuses = []string{StatusRejected, StatusIgnored, StatusAccepted, StatusWorking, StatusAnswered,
	StatusHandedOff, StatusSuperseded, StatusFailed}

// Event is one journal row.
type Event struct {
	ID              int64
	ReceivedAt      time.Time
	DeliveryID      string
	Event           string
	Kind            string
	AccountID       int64
	InboxID         int64
	ConversationID  int64
	MessageID       int64
	ContactID       int64
	RouteID         int64
	Status          string
	Reason          string
	HTTPStatus      int
	Payload         []byte
	Text            string
	Attempts        int
	LastError       string
	PostedMessageID int64
	Steps           string
	MergedInto      int64
	NotBefore       time.Time
	UpdatedAt       time.Time
	FinishedAt      time.Time
}

// Finished reports whether the event reached a final state.
func (e *Event) Finished() bool {
	switch e.Status {
	case StatusAccepted, StatusWorking:
		return false
	}
	return true
}

// HasStep reports whether a side effect of the event was already carried out.
func (e *Event) HasStep(step string) bool {
	for s := range strings.SplitSeq(e.Steps, ",") {
		if s == step {
			return true
		}
	}
	return false
}

// Hop is one step of an event's trace.
type Hop struct {
	EventID  int64
	Seq      int
	At       time.Time
	Stage    string
	Outcome  string
	Detail   string
	Duration time.Duration
}

const eventCols = `id, received_at, delivery_id, event, kind, account_id, inbox_id, conversation_id, message_id,
	contact_id, route_id, status, reason, http_status, payload, text, attempts, last_error, posted_message_id,
	steps, merged_into, not_before, updated_at, finished_at`

func scanEvent(sc interface{ Scan(...any) error }) (Event, error) {
	var e Event
	var recv, nb, upd, fin int64
	err := sc.Scan(&e.ID, &recv, &e.DeliveryID, &e.Event, &e.Kind, &e.AccountID, &e.InboxID, &e.ConversationID,
		&e.MessageID, &e.ContactID, &e.RouteID, &e.Status, &e.Reason, &e.HTTPStatus, &e.Payload, &e.Text,
		&e.Attempts, &e.LastError, &e.PostedMessageID, &e.Steps, &e.MergedInto, &nb, &upd, &fin)
	e.ReceivedAt, e.NotBefore, e.UpdatedAt, e.FinishedAt = fromMS(recv), fromMS(nb), fromMS(upd), fromMS(fin)
	return e, err
}

// InsertEvent journals an event and sets its ID. ReceivedAt defaults to the
// batch clock.
func (tx *Tx) InsertEvent(e *Event) error {
	if e.ReceivedAt.IsZero() {
		e.ReceivedAt = tx.now
	}
	if e.HTTPStatus == 0 {
		e.HTTPStatus = 200
	}
	e.UpdatedAt = tx.now
	if e.Finished() && e.FinishedAt.IsZero() {
		e.FinishedAt = tx.now
	}
	err := tx.QueryRow(`INSERT INTO events (received_at, delivery_id, event, kind, account_id, inbox_id,
		conversation_id, message_id, contact_id, route_id, status, reason, http_status, payload, text,
		not_before, updated_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		ms(e.ReceivedAt), tx.db.text(e.DeliveryID), e.Event, e.Kind, e.AccountID, e.InboxID, e.ConversationID, e.MessageID,
		e.ContactID, e.RouteID, e.Status, tx.db.text(e.Reason), e.HTTPStatus, tx.db.payload(e), e.Text, ms(e.NotBefore),
		ms(e.UpdatedAt), ms(e.FinishedAt)).Scan(&e.ID)
	if err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	if e.Status == StatusAccepted {
		tx.wake = true
	}
	return nil
}

// payload is the body stored with e: as received for a webhook bridge
// decided on, masked for a refused request, which anyone can send.
func (db *DB) payload(e *Event) []byte {
	if e.Status != StatusRejected || db.redact == nil || len(e.Payload) == 0 {
		return e.Payload
	}
	s := string(e.Payload)
	if m := db.redact(s); m != s {
		return []byte(m)
	}
	return e.Payload
}

const (
	qSeenMessage = `SELECT 1 FROM events WHERE message_id = ? AND status NOT IN ('rejected', 'ignored') LIMIT 1`
	qIsPosted    = "SELECT 1 FROM posted WHERE message_id = ?"
)

// SeenMessage reports whether a Chatwoot message id was already acted on.
func (tx *Tx) SeenMessage(messageID int64) (bool, error) {
	var one int
	err := tx.QueryRow(qSeenMessage, messageID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// AddHop appends a hop to an event's trace.
func (tx *Tx) AddHop(h Hop) error {
	if h.At.IsZero() {
		h.At = tx.now
	}
	if tx.pg != nil {
		// Sent with the next round trip. Should a concurrent writer take
		// the same seq (see addHop), the hop is added again after the
		// commit, in a transaction of its own.
		tx.later(fmt.Sprintf("add hop to event %d", h.EventID), qAddHop, hopArgs(tx, h),
			func(tx *Tx) error { return tx.addHop(h) })
		return nil
	}
	return tx.addHop(h)
}

const qAddHop = `INSERT INTO hops (event_id, seq, at, stage, outcome, detail, duration_ms)
	VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM hops WHERE event_id = ?), ?, ?, ?, ?, ?)
	ON CONFLICT (event_id, seq) DO NOTHING`

func hopArgs(tx *Tx, h Hop) []any {
	return []any{h.EventID, h.EventID, ms(h.At), h.Stage, tx.db.text(h.Outcome), tx.db.text(h.Detail),
		float64(h.Duration) / float64(time.Millisecond)}
}

func (tx *Tx) addHop(h Hop) error {
	// Two writers adding to one trace at once (on PostgreSQL, where writes
	// run side by side) may pick the same seq: the loser waits for the
	// winner's commit, finds the row taken, and its next statement, with a
	// fresh snapshot, takes the next seq. Every round lands one writer.
	for range 64 {
		res, err := tx.Exec(qAddHop, hopArgs(tx, h)...)
		if err != nil {
			return fmt.Errorf("add hop to event %d: %w", h.EventID, err)
		}
		if n, err := res.RowsAffected(); err != nil || n > 0 {
			return err
		}
	}
	return fmt.Errorf("add hop to event %d: its trace keeps growing under this write", h.EventID)
}

// EventUpdate changes an event's state; zero fields are left alone.
type EventUpdate struct {
	Status          string
	Reason          *string
	LastError       *string
	AddAttempt      bool
	PostedMessageID int64
	AddStep         string
	MergedInto      int64
	NotBefore       *time.Time
}

// UpdateEvent applies u to event id.
func (tx *Tx) UpdateEvent(id int64, u EventUpdate) error {
	sets := []string{"updated_at = ?"}
	args := []any{ms(tx.now)}
	if u.Status != "" {
		sets = append(sets, "status = ?")
		args = append(args, u.Status)
		fin := int64(0)
		if u.Status != StatusAccepted && u.Status != StatusWorking {
			fin = ms(tx.now)
		}
		sets = append(sets, "finished_at = ?")
		args = append(args, fin)
		// An event made working is this process's to drive; any other
		// state ends whatever lease it had.
		if u.Status == StatusWorking {
			sets = append(sets, "lease_owner = ?", "lease_until = "+tx.db.leaseUntil())
			args = append(args, tx.db.owner)
		} else {
			sets = append(sets, "lease_owner = ''", "lease_until = 0")
			tx.wake = true
		}
	}
	if u.Reason != nil {
		sets = append(sets, "reason = ?")
		args = append(args, tx.db.text(*u.Reason))
	}
	if u.LastError != nil {
		sets = append(sets, "last_error = ?")
		args = append(args, tx.db.text(*u.LastError))
	}
	if u.AddAttempt {
		sets = append(sets, "attempts = attempts + 1")
	}
	if u.PostedMessageID != 0 {
		sets = append(sets, "posted_message_id = ?")
		args = append(args, u.PostedMessageID)
	}
	if u.AddStep != "" {
		sets = append(sets, `steps = CASE WHEN steps = '' THEN ?
			WHEN `+tx.db.dialect.contains("steps")+` THEN steps ELSE steps || ',' || ? END`)
		args = append(args, u.AddStep, u.AddStep, u.AddStep)
	}
	if u.MergedInto != 0 {
		sets = append(sets, "merged_into = ?")
		args = append(args, u.MergedInto)
	}
	if u.NotBefore != nil {
		sets = append(sets, "not_before = ?")
		args = append(args, ms(*u.NotBefore))
	}
	args = append(args, id)
	res, err := tx.Exec("UPDATE events SET "+strings.Join(sets, ", ")+" WHERE id = ?", args...)
	if err != nil {
		return fmt.Errorf("update event %d: %w", id, err)
	}
	return mustAffect(res, fmt.Sprintf("event %d", id))
}

// ErrNotClaimable is returned by Claim when the event is no longer waiting
// (another worker, or a replay in another process, took it).
var ErrNotClaimable = errors.New("event is not waiting")

// Claim moves an accepted event to working, counts the attempt and takes
// its lease for this process, only if it is still accepted, so two
// processes never drive the same event, and only if no earlier event of its
// conversation is still open, so each conversation is answered one event at
// a time in arrival order whatever a dispatcher (or, on a shared database,
// another process) proposes. On PostgreSQL it also skips (SKIP LOCKED) a row
// another process is claiming or changing at that moment instead of waiting
// for it. An event refused for any of these reasons is not claimable now
// (ErrNotClaimable) and the dispatcher moves on.
func (tx *Tx) Claim(id int64) error {
	q := `UPDATE events SET status = 'working', attempts = attempts + 1, updated_at = ?,
		lease_owner = ?, lease_until = ` + tx.db.leaseUntil() + ` WHERE id = ? AND status = 'accepted'
		AND NOT EXISTS (SELECT 1 FROM events o WHERE o.account_id = events.account_id
			AND o.conversation_id = events.conversation_id AND o.id < events.id AND o.status IN ('accepted', 'working'))`
	if tx.db.dialect == postgresDialect {
		q = `UPDATE events SET status = 'working', attempts = attempts + 1, updated_at = ?,
			lease_owner = ?, lease_until = ` + tx.db.leaseUntil() + `
			WHERE id = (SELECT e.id FROM events e WHERE e.id = ? AND e.status = 'accepted'
				AND NOT EXISTS (SELECT 1 FROM events o WHERE o.account_id = e.account_id
					AND o.conversation_id = e.conversation_id AND o.id < e.id AND o.status IN ('accepted', 'working'))
				FOR UPDATE SKIP LOCKED)`
	}
	res, err := tx.Exec(q, ms(tx.now), tx.db.owner, id)
	if err != nil {
		return fmt.Errorf("claim event %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("event %d: %w", id, ErrNotClaimable)
	}
	return nil
}

// RecordPosted remembers a Chatwoot message bridge posted, so its webhook is
// recognised as bridge's own.
func (tx *Tx) RecordPosted(messageID, eventID int64, step string) error {
	tx.Later(fmt.Sprintf("record posted message %d", messageID), `INSERT INTO posted (message_id, event_id, step, at) VALUES (?, ?, ?, ?)
		ON CONFLICT (message_id) DO NOTHING`, messageID, eventID, step, ms(tx.now))
	return nil
}

// IsPosted reports whether bridge posted the Chatwoot message id.
func (tx *Tx) IsPosted(messageID int64) (bool, error) {
	var one int
	err := tx.QueryRow(qIsPosted, messageID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// Event reads one event.
func (db *DB) Event(ctx context.Context, id int64) (Event, error) {
	e, err := scanEvent(db.queryRow(ctx, "SELECT "+eventCols+" FROM events WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fmt.Errorf("event %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return e, fmt.Errorf("read event %d: %w", id, err)
	}
	return e, nil
}

// Event reads one event inside a write transaction.
func (tx *Tx) Event(id int64) (Event, error) {
	e, err := scanEvent(tx.QueryRow("SELECT "+eventCols+" FROM events WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return e, fmt.Errorf("event %d: %w", id, ErrNotFound)
	}
	return e, err
}

// Hops reads an event's trace in order.
func (db *DB) Hops(ctx context.Context, id int64) ([]Hop, error) {
	rows, err := db.query(ctx, `SELECT event_id, seq, at, stage, outcome, detail, duration_ms
		FROM hops WHERE event_id = ? ORDER BY seq`, id)
	if err != nil {
		return nil, fmt.Errorf("read trace of event %d: %w", id, err)
	}
	defer rows.Close()
	var out []Hop
	for rows.Next() {
		var h Hop
		var at int64
		var d float64
		if err := rows.Scan(&h.EventID, &h.Seq, &at, &h.Stage, &h.Outcome, &h.Detail, &d); err != nil {
			return nil, err
		}
		h.At = fromMS(at)
		h.Duration = time.Duration(d * float64(time.Millisecond))
		out = append(out, h)
	}
	return out, rows.Err()
}

// EventFilter selects events for listing.
type EventFilter struct {
	Status         string
	ConversationID int64
	Since          time.Time
	Limit          int
	BeforeID       int64
}

// ListEvents returns events newest first.
func (db *DB) ListEvents(ctx context.Context, f EventFilter) ([]Event, error) {
	where := []string{"1=1"}
	var args []any
	if f.Status != "" {
		where = append(where, "status = ?")
		args = append(args, f.Status)
	}
	if f.ConversationID != 0 {
		where = append(where, "conversation_id = ?")
		args = append(args, f.ConversationID)
	}
	if !f.Since.IsZero() {
		where = append(where, "received_at >= ?")
		args = append(args, ms(f.Since))
	}
	if f.BeforeID != 0 {
		where = append(where, "id < ?")
		args = append(args, f.BeforeID)
	}
	if f.Limit <= 0 {
		f.Limit = 50
	}
	args = append(args, f.Limit)
	rows, err := db.query(ctx, "SELECT "+eventCols+" FROM events WHERE "+strings.Join(where, " AND ")+
		" ORDER BY id DESC LIMIT ?", args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// OpenEvents returns up to limit acted-on events that have not finished,
// oldest first, starting after id after.
func (db *DB) OpenEvents(ctx context.Context, after int64, limit int) ([]Event, error) {
	rows, err := db.query(ctx, "SELECT "+eventCols+` FROM events INDEXED BY events_queue
		WHERE status IN ('accepted', 'working') AND id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list open events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// OpenEventHeads is OpenEvents reading only ID, AccountID, ConversationID,
// Status and NotBefore, from the covering index of the open queue: what a
// dispatcher needs to choose, without reading payloads it will not use.
// Read the full event (Event) of those it takes.
func (db *DB) OpenEventHeads(ctx context.Context, after int64, limit int) ([]Event, error) {
	rows, err := db.query(ctx, `SELECT id, account_id, conversation_id, status, not_before FROM events INDEXED BY events_queue
		WHERE status IN ('accepted', 'working') AND id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list open events: %w", err)
	}
	defer rows.Close()
	out := make([]Event, 0, min(limit, 64))
	for rows.Next() {
		var e Event
		var nb int64
		if err := rows.Scan(&e.ID, &e.AccountID, &e.ConversationID, &e.Status, &nb); err != nil {
			return nil, fmt.Errorf("list open events: %w", err)
		}
		e.NotBefore = fromMS(nb)
		out = append(out, e)
	}
	return out, rows.Err()
}

// CountOpen counts acted-on events that have not finished (the queue depth).
func (db *DB) CountOpen(ctx context.Context) (int, error) {
	var n int
	err := db.queryRow(ctx, "SELECT count(*) FROM events INDEXED BY events_queue WHERE status IN ('accepted', 'working')").Scan(&n)
	return n, err
}

// ResetWorking returns events left `working` by a stopped process to
// `accepted`, so they are resumed. On SQLite, which one serve uses, that is
// every working event; on a shared database only those whose lease ran
// out and those of this process (its workers have not started), since the
// others are being driven by live processes.
func (db *DB) ResetWorking(ctx context.Context) (int64, error) {
	var n int64
	err := db.Write(ctx, func(tx *Tx) error {
		q := "UPDATE events SET status = 'accepted', lease_owner = '', lease_until = 0, updated_at = ? WHERE status = 'working'"
		args := []any{ms(tx.now)}
		if db.Shared() {
			// Called before this process's workers start: its own leases
			// are left from an earlier run of them.
			q += " AND (lease_until < " + db.dialect.nowMS() + " OR lease_owner = ?)"
			args = append(args, db.owner)
		}
		res, err := tx.Exec(q, args...)
		if err != nil {
			return fmt.Errorf("reset working events: %w", err)
		}
		n, err = res.RowsAffected()
		tx.wake = n > 0
		return err
	})
	return n, err
}

// DeleteIgnoredBefore deletes up to limit ignored and rejected events
// received before t, with their traces, and reports how many went.
func (db *DB) DeleteIgnoredBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	var n int64
	err := db.Write(ctx, func(tx *Tx) error {
		const sel = `SELECT id FROM events INDEXED BY events_prunable
			WHERE status IN ('ignored', 'rejected') AND received_at < ? ORDER BY received_at LIMIT ?`
		if _, err := tx.Exec("DELETE FROM hops WHERE event_id IN ("+sel+")", ms(t), limit); err != nil {
			return fmt.Errorf("delete old hops: %w", err)
		}
		res, err := tx.Exec("DELETE FROM events WHERE id IN ("+sel+")", ms(t), limit)
		if err != nil {
			return fmt.Errorf("delete old events: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// lastTouch is when a working event last showed progress: its row changed
// or its trace grew (trace steps do not touch the row).
func (d dialect) lastTouch() string {
	return d.greatest() + `(events.updated_at, coalesce((SELECT max(at) FROM hops WHERE hops.event_id = events.id), 0))`
}

// StaleEvent is a working event and when it last showed progress.
type StaleEvent struct {
	ID        int64
	LastTouch time.Time
}

// StaleWorking returns up to limit events that are `working` and have shown
// no progress since before, oldest first: claimed by a worker that is gone,
// or stuck.
func (db *DB) StaleWorking(ctx context.Context, before time.Time, limit int) ([]StaleEvent, error) {
	rows, err := db.query(ctx, `SELECT id, `+db.dialect.lastTouch()+` AS touched FROM events INDEXED BY events_queue
		WHERE status IN ('accepted', 'working') AND status = 'working' AND `+db.dialect.lastTouch()+` < ? ORDER BY id LIMIT ?`, ms(before), limit)
	if err != nil {
		return nil, fmt.Errorf("list stale working events: %w", err)
	}
	defer rows.Close()
	var out []StaleEvent
	for rows.Next() {
		var s StaleEvent
		var t int64
		if err := rows.Scan(&s.ID, &t); err != nil {
			return nil, fmt.Errorf("list stale working events: %w", err)
		}
		s.LastTouch = fromMS(t)
		out = append(out, s)
	}
	return out, rows.Err()
}

// CountStaleWorking counts the events StaleWorking would return, and names
// the oldest (0 when none).
func (db *DB) CountStaleWorking(ctx context.Context, before time.Time) (n int, oldest int64, err error) {
	var o sql.NullInt64
	err = db.queryRow(ctx, `SELECT count(*), min(id) FROM events INDEXED BY events_queue
		WHERE status IN ('accepted', 'working') AND status = 'working' AND `+db.dialect.lastTouch()+` < ?`, ms(before)).Scan(&n, &o)
	if err != nil {
		return 0, 0, fmt.Errorf("count stale working events: %w", err)
	}
	return n, o.Int64, nil
}

// Reclaim puts a working event that has shown no progress since before back
// in the queue, and reports whether it did: an event that moved on meanwhile
// is left alone.
func (tx *Tx) Reclaim(id int64, before time.Time) (bool, error) {
	res, err := tx.Exec(`UPDATE events SET status = 'accepted', lease_owner = '', lease_until = 0, updated_at = ?
		WHERE id = ? AND status = 'working' AND `+tx.db.dialect.lastTouch()+` < ?`, ms(tx.now), id, ms(before))
	if err != nil {
		return false, fmt.Errorf("reclaim event %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	tx.wake = tx.wake || n > 0
	return n > 0, err
}
