package store

import (
	"strings"
	"testing"
	"time"
)

// TestFairQueueUsesIndexes: the dispatcher's queries seek the partial queue
// indexes of migration 0020 without INDEXED BY (PostgreSQL has no such
// clause), so SQLite must choose them on its own; none may scan the events
// table.
func TestFairQueueUsesIndexes(t *testing.T) {
	db := mustOpen(t)
	for _, tc := range []struct {
		name, query string
		args        []any
		want        []string
	}{
		{"QueueRoutes", qQueueRoutes, []any{0}, []string{"SEARCH events USING COVERING INDEX events_route_queue (route_id>?)"}},
		{"RouteQueue", qRouteQueue, []any{1, 0, 64}, []string{"SEARCH events USING COVERING INDEX events_route_queue (route_id=? AND id>?)"}},
		{"ConversationHead", qConversationHead, []any{1, 2}, []string{
			"SEARCH h USING COVERING INDEX events_conversation_queue (account_id=? AND conversation_id=?)",
			"SEARCH l USING COVERING INDEX events_conversation_queue (account_id=? AND conversation_id=?)"}},
		{"ConversationOpenEvents", qConversationOpenEvents, []any{1, 2, 0, 64}, []string{
			"(account_id=? AND conversation_id=? AND id>?)"}},
		{"LastEventID", qLastEventID, nil, []string{"SEARCH events"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := queryPlan(t, db, tc.query, tc.args...)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("plan = %q, want %q", got, w)
				}
			}
			if strings.Contains(got, "SCAN events") || strings.Contains(got, "SCAN h") || strings.Contains(got, "TEMP B-TREE") {
				t.Errorf("plan = %q: scans the table or sorts", got)
			}
		})
	}
}

func queryPlan(t *testing.T, db *DB, query string, args ...any) string {
	t.Helper()
	rows, err := db.Reader().QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "; ")
}

// queueEvent journals an open (or finished) event of a conversation.
func queueEvent(t *testing.T, db *DB, route, conv int64, status string, notBefore time.Time) int64 {
	t.Helper()
	e := &Event{Event: "message_created", Kind: KindMessage, AccountID: 1, InboxID: route, ConversationID: conv,
		RouteID: route, Status: status, NotBefore: notBefore}
	if err := db.Write(t.Context(), func(tx *Tx) error { return tx.InsertEvent(e) }); err != nil {
		t.Fatal(err)
	}
	return e.ID
}

func testFairQueueQueries(t *testing.T, b backend) {
	ctx := t.Context()
	db := b.open(t)
	if id, err := db.LastEventID(ctx); err != nil || id != 0 {
		t.Fatalf("LastEventID of an empty journal = %d, %v", id, err)
	}
	if rs, err := db.QueueRoutes(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("QueueRoutes of an empty journal = %v, %v", rs, err)
	}
	soon := time.Now().Add(time.Hour).Truncate(time.Millisecond).UTC()
	queueEvent(t, db, 3, 10, StatusAnswered, time.Time{}) // finished: not in the queue
	a1 := queueEvent(t, db, 3, 10, StatusAccepted, time.Time{})
	b1 := queueEvent(t, db, 7, 20, StatusWorking, time.Time{})
	a2 := queueEvent(t, db, 3, 11, StatusAccepted, time.Time{})
	a3 := queueEvent(t, db, 3, 10, StatusAccepted, soon)
	queueEvent(t, db, 5, 30, StatusIgnored, time.Time{})
	last := queueEvent(t, db, 0, 40, StatusRejected, time.Time{})

	if id, err := db.LastEventID(ctx); err != nil || id != last {
		t.Errorf("LastEventID = %d, %v; want %d (finished events count)", id, err, last)
	}
	rs, err := db.QueueRoutes(ctx)
	if err != nil || len(rs) != 2 || rs[0] != 3 || rs[1] != 7 {
		t.Errorf("QueueRoutes = %v, %v; want [3 7]", rs, err)
	}

	q, err := db.RouteQueue(ctx, 3, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, e := range q {
		if e.RouteID != 3 || e.AccountID != 1 || e.Status != StatusAccepted {
			t.Errorf("head %+v: want route 3, account 1, accepted", e)
		}
		ids = append(ids, e.ID)
	}
	if len(ids) != 3 || ids[0] != a1 || ids[1] != a2 || ids[2] != a3 {
		t.Errorf("RouteQueue(3) = %v, want [%d %d %d]", ids, a1, a2, a3)
	}
	if q, _ := db.RouteQueue(ctx, 3, a1, 1); len(q) != 1 || q[0].ID != a2 || q[0].ConversationID != 11 {
		t.Errorf("RouteQueue(3, after %d, 1) = %+v, want event %d of conversation 11", a1, q, a2)
	}
	if q, _ := db.RouteQueue(ctx, 3, a3, 10); len(q) != 0 {
		t.Errorf("RouteQueue past the end = %+v", q)
	}
	if q, _ := db.RouteQueue(ctx, 3, a2, 10); len(q) != 1 || !q[0].NotBefore.Equal(soon) {
		t.Errorf("RouteQueue keeps not_before: %+v, want %v", q, soon)
	}

	h, ready, ok, err := db.ConversationHead(ctx, 1, 10)
	if err != nil || !ok || h.ID != a1 || h.RouteID != 3 || h.Status != StatusAccepted || !ready.Equal(soon) {
		t.Errorf("ConversationHead(10) = %+v ready %v ok %v err %v; want event %d, ready at the newest debounce %v", h, ready, ok, err, a1, soon)
	}
	h, ready, ok, err = db.ConversationHead(ctx, 1, 20)
	if err != nil || !ok || h.ID != b1 || h.Status != StatusWorking || !ready.IsZero() {
		t.Errorf("ConversationHead(20) = %+v ready %v ok %v err %v; want working event %d", h, ready, ok, err, b1)
	}
	if _, _, ok, err := db.ConversationHead(ctx, 1, 30); ok || err != nil {
		t.Errorf("ConversationHead of a conversation with no open event: ok %v err %v", ok, err)
	}
	if _, _, ok, _ := db.ConversationHead(ctx, 2, 10); ok {
		t.Error("ConversationHead matched another account's conversation")
	}

	evs, err := db.ConversationOpenEvents(ctx, 1, 10, a1, 10)
	if err != nil || len(evs) != 1 || evs[0].ID != a3 || evs[0].Kind != KindMessage {
		t.Errorf("ConversationOpenEvents(10 after %d) = %+v, %v; want event %d in full", a1, evs, err, a3)
	}
	if err := db.Write(ctx, func(tx *Tx) error { return tx.UpdateEvent(a1, EventUpdate{Status: StatusAnswered}) }); err != nil {
		t.Fatal(err)
	}
	if h, _, _, _ := db.ConversationHead(ctx, 1, 10); h.ID != a3 {
		t.Errorf("after the head finished, ConversationHead = %d, want %d", h.ID, a3)
	}
}

func testRouteMaxInFlight(t *testing.T, b backend) {
	ctx := t.Context()
	db := b.open(t)
	capped := &Route{InboxID: 1, DifyKey: "app-1", MaxInFlight: 4, Enabled: true}
	free := &Route{InboxID: 2, DifyKey: "app-2", MaxInFlight: -3, Enabled: true}
	for _, r := range []*Route{capped, free} {
		if err := db.AddRoute(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := db.Route(ctx, capped.ID); err != nil || r.MaxInFlight != 4 {
		t.Errorf("Route(%d).MaxInFlight = %d, %v; want 4", capped.ID, r.MaxInFlight, err)
	}
	rs, err := db.Routes(ctx)
	if err != nil || len(rs) != 2 || rs[0].MaxInFlight != 4 || rs[1].MaxInFlight != 0 {
		t.Errorf("Routes = %+v, %v; want caps 4 and 0 (a negative cap is none)", rs, err)
	}
}
