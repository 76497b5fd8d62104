package store

import (
	"strings"
	"testing"
)

// TestQueuePathUsesIndexes: the queries run at start and on every dispatch
// search an index instead of scanning the journal, so start-up and the
// dispatcher stay fast however large the journal grows.
func TestQueuePathUsesIndexes(t *testing.T) {
	db := mustOpen(t)
	for _, tc := range []struct {
		name  string
		query string
		args  []any
		want  string
	}{
		{"ResetWorking", "UPDATE events SET status = 'accepted', updated_at = ? WHERE status = 'working'", []any{0}, "USING INDEX events_status"},
		{"OpenEventHeads", `SELECT id, account_id, conversation_id, status, not_before FROM events INDEXED BY events_queue
			WHERE status IN ('accepted', 'working') AND id > ? ORDER BY id LIMIT ?`, []any{0, 10}, "USING COVERING INDEX events_queue"},
		{"OpenEvents", "SELECT " + eventCols + ` FROM events INDEXED BY events_queue
			WHERE status IN ('accepted', 'working') AND id > ? ORDER BY id LIMIT ?`, []any{0, 10}, "USING INDEX events_queue"},
		{"CountOpen", "SELECT count(*) FROM events INDEXED BY events_queue WHERE status IN ('accepted', 'working')", nil, "USING COVERING INDEX events_queue"},
		{"SeenMessage", "SELECT 1 FROM events WHERE message_id = ? AND status NOT IN ('rejected', 'ignored') LIMIT 1", []any{1}, "USING INDEX events_message"},
		{"Claim", "UPDATE events SET status = 'working' WHERE id = ? AND status = 'accepted'", []any{1}, "USING INTEGER PRIMARY KEY"},
		{"DeleteIgnoredBefore", `SELECT id FROM events INDEXED BY events_prunable
			WHERE status IN ('ignored', 'rejected') AND received_at < ? ORDER BY received_at LIMIT ?`, []any{0, 500}, "USING INDEX events_prunable (received_at<?)"},
		{"AddHop", "SELECT coalesce(max(seq), 0) + 1 FROM hops WHERE event_id = ?", []any{1}, "USING PRIMARY KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := db.Reader().QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+tc.query, tc.args...)
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
			got := strings.Join(plan, "; ")
			// "SCAN events" alone reads the whole table; a scan of the
			// partial queue index reads only the open events.
			if !strings.Contains(got, tc.want) || strings.Contains(got+";", "SCAN events;") {
				t.Errorf("plan = %q, want %q and no scan of the events table", got, tc.want)
			}
		})
	}
}
