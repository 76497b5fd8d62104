package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Copying a journal from one database to another (bridge migrate): routes,
// conversations, events with their traces, posts and intents, ids kept.
//
// Each table is copied in key order, in batches that each commit on their
// own, with upserts: a copy that stopped (a crash, Ctrl-C) is run again and
// goes on after the last row the destination has; a row copied twice is
// the same row. At the end every table is compared (rows, and sums of its
// key and time columns); a table that differs (the source changed behind
// the copy, because serve still ran on it) is copied again from the start,
// then compared again.

// copyTable is one table as Copy moves it.
type copyTable struct {
	name string
	key  []string // primary key, in order
	cols []string // every column, key first
	sums []string // integer columns whose sums, with the row count, stand for the table's content
}

var copyTables = []copyTable{
	{name: "routes", key: []string{"id"}, cols: split(routeCols), sums: []string{"id", "updated_at"}},
	{name: "conversations", key: []string{"account_id", "conversation_id"}, cols: split(convCols),
		sums: []string{"conversation_id", "last_activity_at"}},
	{name: "events", key: []string{"id"}, cols: append(split(eventCols), "lease_owner", "lease_until"),
		sums: []string{"id", "updated_at"}},
	{name: "hops", key: []string{"event_id", "seq"},
		cols: []string{"event_id", "seq", "at", "stage", "outcome", "detail", "duration_ms"}, sums: []string{"event_id", "seq"}},
	{name: "posted", key: []string{"message_id"}, cols: []string{"message_id", "event_id", "step", "at"},
		sums: []string{"message_id", "event_id"}},
	{name: "intents", key: []string{"event_id", "step"}, cols: split(intentCols), sums: []string{"event_id", "message_id"}},
	{name: "transcripts", key: []string{"message_id"}, cols: []string{"message_id", "text", "at"}, sums: []string{"message_id", "at"}},
	{name: "outbox", key: []string{"event_id"}, cols: []string{"event_id", "parts", "at"}, sums: []string{"event_id", "at"}},
	{name: "answers", key: []string{"account_id", "conversation_id"},
		cols: []string{"account_id", "conversation_id", "event_id", "route_id", "dify_message_id", "dify_user", "at"},
		sums: []string{"conversation_id", "event_id", "at"}},
	{name: "route_lifecycle", key: []string{"route_id"}, cols: []string{"route_id", "settings", "updated_at"},
		sums: []string{"route_id", "updated_at"}},
	{name: "ownership", key: []string{"id"},
		cols: []string{"id", "at", "account_id", "conversation_id", "route_id", "kind", "owner", "cause", "detail", "event_id"},
		sums: []string{"id", "at"}},
	{name: "conversation_lifecycle", key: []string{"account_id", "conversation_id"},
		cols: []string{"account_id", "conversation_id", "last_human_at", "handoff_cause", "summary"},
		sums: []string{"conversation_id", "last_human_at"}},
}

func split(cols string) []string {
	var out []string
	for c := range strings.SplitSeq(cols, ",") {
		out = append(out, strings.TrimSpace(c))
	}
	return out
}

// CopyProgress says how far the copy of one table is.
type CopyProgress struct {
	Table       string
	Done, Total int64
}

// TableCheck compares one table of the source and the destination.
type TableCheck struct {
	Table  string `json:"table"`
	Source int64  `json:"source_rows"`
	Dest   int64  `json:"destination_rows"`
	Copied int64  `json:"copied_now"`
	Same   bool   `json:"same"`
}

// CopyOptions tune Copy.
type CopyOptions struct {
	Batch    int                // rows per transaction (default 500)
	Progress func(CopyProgress) // called after each batch
}

// ErrForeignJournal is returned by Copy when the destination holds events
// that are not a copy of the source's: another journal (a serve already ran
// on it), which the copy would overwrite.
var ErrForeignJournal = errors.New("the destination holds a journal that is not a copy of the source")

// Copy copies src's journal into dst (see above) and returns each table's
// comparison. Stop serve on src first: events it was driving are copied as
// waiting, for dst's processes to resume.
func Copy(ctx context.Context, src, dst *DB, o CopyOptions) ([]TableCheck, error) {
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.Progress == nil {
		o.Progress = func(CopyProgress) {}
	}
	if err := sameJournal(ctx, src, dst); err != nil {
		return nil, err
	}
	var out []TableCheck
	for _, t := range copyTables {
		check, err := copyOne(ctx, src, dst, t, o)
		if err != nil {
			return out, err
		}
		out = append(out, check)
	}
	if err := carryIDs(ctx, src, dst); err != nil {
		return out, err
	}
	return out, nil
}

func copyOne(ctx context.Context, src, dst *DB, t copyTable, o CopyOptions) (TableCheck, error) {
	check := TableCheck{Table: t.name}
	total, err := countRows(ctx, src, t.name)
	if err != nil {
		return check, err
	}
	have, err := countRows(ctx, dst, t.name)
	if err != nil {
		return check, err
	}
	last, err := lastKey(ctx, dst, t)
	if err != nil {
		return check, err
	}
	for pass := 0; pass < 2; pass++ {
		n, err := copyFrom(ctx, src, dst, t, o, last, total, have)
		check.Copied += n
		if err != nil {
			return check, err
		}
		same, s, d, err := compare(ctx, src, dst, t)
		check.Source, check.Dest, check.Same = s, d, same
		if err != nil || same {
			return check, err
		}
		// The source changed behind what was copied: all of it again.
		last, have = nil, 0
	}
	return check, nil
}

// copyFrom copies the rows of t after key last (all when nil), batch by
// batch, and returns how many it wrote.
func copyFrom(ctx context.Context, src, dst *DB, t copyTable, o CopyOptions, last []any, total, have int64) (int64, error) {
	keys := strings.Join(t.key, ", ")
	after := "(" + keys + ") > (" + strings.TrimSuffix(strings.Repeat("?, ", len(t.key)), ", ") + ")"
	var sets []string
	for _, c := range t.cols[len(t.key):] {
		sets = append(sets, c+" = excluded."+c)
	}
	upsert := " ON CONFLICT (" + keys + ") DO UPDATE SET " + strings.Join(sets, ", ")
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(t.cols)), ", ") + ")"
	var copied int64
	for {
		q := "SELECT " + strings.Join(t.cols, ", ") + " FROM " + t.name
		args := []any{}
		if last != nil {
			q += " WHERE " + after
			args = append(args, last...)
		}
		q += " ORDER BY " + keys + " LIMIT ?"
		args = append(args, o.Batch)
		rows, err := src.Reader().QueryContext(ctx, q, args...)
		if err != nil {
			return copied, fmt.Errorf("read %s: %w", t.name, err)
		}
		var batch [][]any
		for rows.Next() {
			vals := make([]any, len(t.cols))
			ptrs := make([]any, len(vals))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return copied, fmt.Errorf("read %s: %w", t.name, err)
			}
			batch = append(batch, vals)
		}
		if err := closeRows(rows); err != nil {
			return copied, fmt.Errorf("read %s: %w", t.name, err)
		}
		if len(batch) == 0 {
			return copied, nil
		}
		err = dst.Write(ctx, func(tx *Tx) error {
			var args []any
			for _, vals := range batch {
				args = append(args, dst.adapt(t, vals)...)
			}
			_, err := tx.Exec("INSERT INTO "+t.name+" ("+strings.Join(t.cols, ", ")+") VALUES "+
				strings.TrimSuffix(strings.Repeat(row+", ", len(batch)), ", ")+upsert, args...)
			return err
		})
		if err != nil {
			return copied, fmt.Errorf("write %s: %w", t.name, err)
		}
		copied += int64(len(batch))
		last = batch[len(batch)-1][:len(t.key)]
		o.Progress(CopyProgress{Table: t.name, Done: have + copied, Total: max(total, have+copied)})
		if len(batch) < o.Batch {
			return copied, nil
		}
	}
}

// adapt makes a row read from one backend fit the other: PostgreSQL's
// boolean and text columns take no integer and no raw bytes; an event left
// working by the source's process is waiting for the destination's.
func (db *DB) adapt(t copyTable, vals []any) []any {
	out := make([]any, len(vals))
	copy(out, vals)
	for i, c := range t.cols {
		switch v := out[i].(type) {
		case int64:
			if t.name == "intents" && c == "private" {
				out[i] = v != 0
			}
		case []byte:
			if c != "payload" && db.dialect == postgresDialect {
				out[i] = string(v)
			}
		case string:
			if t.name == "events" && c == "status" && v == StatusWorking {
				out[i] = StatusAccepted
			}
		}
		if t.name == "events" && c == "lease_owner" {
			out[i] = ""
		}
		if t.name == "events" && c == "lease_until" {
			out[i] = int64(0)
		}
	}
	return out
}

func countRows(ctx context.Context, db *DB, table string) (int64, error) {
	var n int64
	if err := db.Reader().QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s: %w", table, err)
	}
	return n, nil
}

// lastKey is the key of the last row of t in db, nil when it has none.
func lastKey(ctx context.Context, db *DB, t copyTable) ([]any, error) {
	desc := make([]string, len(t.key))
	for i, k := range t.key {
		desc[i] = k + " DESC"
	}
	vals := make([]any, len(t.key))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	err := db.Reader().QueryRowContext(ctx, "SELECT "+strings.Join(t.key, ", ")+" FROM "+t.name+
		" ORDER BY "+strings.Join(desc, ", ")+" LIMIT 1").Scan(ptrs...)
	if isNoRows(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", t.name, err)
	}
	return vals, nil
}

// compare reports whether t has the same rows in both databases, by count
// and the sums of its sum columns.
func compare(ctx context.Context, src, dst *DB, t copyTable) (same bool, srcRows, dstRows int64, err error) {
	q := "SELECT count(*)"
	for _, c := range t.sums {
		q += ", CAST(coalesce(sum(" + c + "), 0) AS BIGINT)"
	}
	q += " FROM " + t.name
	read := func(db *DB) ([]int64, error) {
		vals := make([]int64, 1+len(t.sums))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := db.Reader().QueryRowContext(ctx, q).Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("compare %s: %w", t.name, err)
		}
		return vals, nil
	}
	a, err := read(src)
	if err != nil {
		return false, 0, 0, err
	}
	b, err := read(dst)
	if err != nil {
		return false, a[0], 0, err
	}
	same = true
	for i := range a {
		same = same && a[i] == b[i]
	}
	return same, a[0], b[0], nil
}

// sameJournal refuses a destination whose events are not a copy of the
// source's: its first and last events must be the source's with those ids.
func sameJournal(ctx context.Context, src, dst *DB) error {
	var lo, hi, n int64
	if err := dst.Reader().QueryRowContext(ctx, "SELECT coalesce(min(id), 0), coalesce(max(id), 0), count(*) FROM events").Scan(&lo, &hi, &n); err != nil {
		return fmt.Errorf("read the destination: %w", err)
	}
	if n == 0 {
		return nil
	}
	for _, id := range []int64{lo, hi} {
		var a, b [2]int64
		q := "SELECT received_at, message_id FROM events WHERE id = ?"
		if err := dst.Reader().QueryRowContext(ctx, q, id).Scan(&a[0], &a[1]); err != nil {
			return fmt.Errorf("read the destination: %w", err)
		}
		err := src.Reader().QueryRowContext(ctx, q, id).Scan(&b[0], &b[1])
		if isNoRows(err) || (err == nil && a != b) {
			return fmt.Errorf("%w: its event %d is not the source's (was bridge serve already run on it?)", ErrForeignJournal, id)
		}
		if err != nil {
			return fmt.Errorf("read the source: %w", err)
		}
	}
	return nil
}

// carryIDs makes the destination hand out ids after the copied ones: route
// ids after every id the source ever used (removed routes included, since
// the journal still names them), event ids after the last event.
func carryIDs(ctx context.Context, src, dst *DB) error {
	var floor int64
	for _, q := range []string{"SELECT coalesce(max(id), 0) FROM routes", "SELECT coalesce(max(route_id), 0) FROM events",
		"SELECT coalesce(max(route_id), 0) FROM conversations"} {
		var v int64
		if err := src.Reader().QueryRowContext(ctx, q).Scan(&v); err != nil {
			return fmt.Errorf("read route ids: %w", err)
		}
		floor = max(floor, v)
	}
	if src.dialect == sqliteDialect {
		var v int64
		err := src.Reader().QueryRowContext(ctx, "SELECT seq FROM sqlite_sequence WHERE name = 'routes'").Scan(&v)
		if err != nil && !isNoRows(err) {
			return fmt.Errorf("read route ids: %w", err)
		}
		floor = max(floor, v)
	}
	return dst.Write(ctx, func(tx *Tx) error {
		if dst.dialect == postgresDialect {
			for _, q := range []string{
				"SELECT setval(pg_get_serial_sequence('routes', 'id'), greatest(?, (SELECT coalesce(max(id), 0) FROM routes), 1), ? > 0 OR EXISTS (SELECT 1 FROM routes))",
				"SELECT setval(pg_get_serial_sequence('events', 'id'), greatest((SELECT coalesce(max(id), 0) FROM events), 1), EXISTS (SELECT 1 FROM events))",
				"SELECT setval(pg_get_serial_sequence('ownership', 'id'), greatest((SELECT coalesce(max(id), 0) FROM ownership), 1), EXISTS (SELECT 1 FROM ownership))",
			} {
				args := []any{}
				if strings.Contains(q, "routes") {
					args = append(args, floor, floor)
				}
				if _, err := tx.Exec(q, args...); err != nil {
					return fmt.Errorf("carry ids over: %w", err)
				}
			}
			return nil
		}
		if _, err := tx.Exec(`INSERT INTO sqlite_sequence (name, seq) SELECT 'routes', 0
			WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'routes')`); err != nil {
			return fmt.Errorf("carry ids over: %w", err)
		}
		_, err := tx.Exec("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'routes'", floor)
		return err
	})
}
