package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The queries of the fair dispatcher (pkg/bridge dispatch.go). They read
// only the open events' queue heads, from the partial indexes of migration
// 0020, and are plain SQL that PostgreSQL runs as written: each index's
// WHERE clause matches the queries', which lets either planner use it
// (TestFairQueueUsesIndexes checks SQLite's plans). The one exception is
// QueueRoutes, see there.

// openWhere selects the open events, as the partial queue indexes do.
const openWhere = `status IN ('accepted', 'working')`

const (
	// SQLite-only: INDEXED BY, without which SQLite's planner, having no
	// statistics, prefers events_status and sorts the whole open queue.
	// PostgreSQL chooses the partial index for this query by itself: drop
	// the clause there.
	qQueueRoutes = `SELECT route_id FROM events INDEXED BY events_route_queue
		WHERE ` + openWhere + ` AND route_id > ? ORDER BY route_id LIMIT 1`
	qRouteQueue = `SELECT id, account_id, conversation_id, status, not_before FROM events
		WHERE ` + openWhere + ` AND route_id = ? AND id > ? ORDER BY id LIMIT ?`
	qConversationHead = `SELECT id, route_id, status, not_before,
			(SELECT max(l.not_before) FROM events l WHERE l.` + openWhere + ` AND l.account_id = h.account_id
				AND l.conversation_id = h.conversation_id)
		FROM events h WHERE h.` + openWhere + ` AND h.account_id = ? AND h.conversation_id = ? ORDER BY h.id LIMIT 1`
	qLastEventID            = `SELECT coalesce(max(id), 0) FROM events`
	qConversationOpenEvents = `SELECT ` + eventCols + ` FROM events
		WHERE ` + openWhere + ` AND account_id = ? AND conversation_id = ? AND id > ? ORDER BY id LIMIT ?`
)

// maxQueueRoutes bounds QueueRoutes: far more routes than an installation
// has, so a loop over them always ends.
const maxQueueRoutes = 100_000

// QueueRoutes returns, in ascending order, the ids of the routes that have
// open events. Each id costs one index seek (a loose scan of
// events_route_queue), whatever the length of the queue. Its query is the
// only one of this file with SQLite-only syntax (INDEXED BY).
func (db *DB) QueueRoutes(ctx context.Context) ([]int64, error) {
	var out []int64
	after := int64(-1)
	for len(out) < maxQueueRoutes {
		var id int64
		err := db.queryRow(ctx, qQueueRoutes, after).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list routes with open events: %w", err)
		}
		out = append(out, id)
		after = id
	}
	return out, nil
}

// RouteQueue returns up to limit open events of a route with an id above
// after, oldest first, with only ID, AccountID, ConversationID, RouteID,
// Status and NotBefore set (read Event for the rest).
func (db *DB) RouteQueue(ctx context.Context, route, after int64, limit int) ([]Event, error) {
	rows, err := db.query(ctx, qRouteQueue, route, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read the queue of route %d: %w", route, err)
	}
	defer rows.Close()
	out := make([]Event, 0, min(limit, 64))
	for rows.Next() {
		e := Event{RouteID: route}
		var nb int64
		if err := rows.Scan(&e.ID, &e.AccountID, &e.ConversationID, &e.Status, &nb); err != nil {
			return nil, fmt.Errorf("read the queue of route %d: %w", route, err)
		}
		e.NotBefore = fromMS(nb)
		out = append(out, e)
	}
	return out, rows.Err()
}

// ConversationHead returns the oldest open event of a conversation, with
// only ID, AccountID, ConversationID, RouteID, Status and NotBefore set, and
// readyAt, the latest NotBefore of the conversation's open events (its
// messages are answered together once the debounce window of the newest has
// closed). ok is false when the conversation has no open event.
func (db *DB) ConversationHead(ctx context.Context, account, conv int64) (head Event, readyAt time.Time, ok bool, err error) {
	var nb, ready int64
	err = db.queryRow(ctx, qConversationHead, account, conv).Scan(&head.ID, &head.RouteID, &head.Status, &nb, &ready)
	if errors.Is(err, sql.ErrNoRows) {
		return Event{}, time.Time{}, false, nil
	}
	if err != nil {
		return Event{}, time.Time{}, false, fmt.Errorf("read the queue of conversation %d: %w", conv, err)
	}
	head.AccountID, head.ConversationID, head.NotBefore = account, conv, fromMS(nb)
	return head, fromMS(ready), true, nil
}

// LastEventID returns the highest event id (0 for an empty journal). It
// tells the dispatcher cheaply whether anything was journaled since it last
// looked.
func (db *DB) LastEventID(ctx context.Context) (int64, error) {
	var id int64
	if err := db.queryRow(ctx, qLastEventID).Scan(&id); err != nil {
		return 0, fmt.Errorf("read the last event id: %w", err)
	}
	return id, nil
}

// ConversationOpenEvents returns up to limit open events of a conversation
// with an id above after, oldest first, in full.
func (db *DB) ConversationOpenEvents(ctx context.Context, account, conv, after int64, limit int) ([]Event, error) {
	rows, err := db.query(ctx, qConversationOpenEvents, account, conv, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read the open events of conversation %d: %w", conv, err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("read the open events of conversation %d: %w", conv, err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}
