package store

import (
	"fmt"
	"testing"
	"time"
)

// TestPruneOwnership: entries older than the cut of conversations bridge
// never acted in go, in batches that carry on from the last entry looked
// at; those of conversations it acted in (or is about to), and younger
// ones, stay.
func testPruneOwnership(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	t0 := time.Date(2030, 1, 1, 9, 0, 0, 0, time.UTC)
	cut := t0.Add(24 * time.Hour)
	type conv struct{ account, id int64 }
	ignoredOnly, acted, noEvents, otherAccount, waiting := conv{1, 1}, conv{1, 2}, conv{1, 3}, conv{2, 2}, conv{1, 4}
	err := db.Write(ctx, func(tx *Tx) error {
		for _, e := range []struct {
			c      conv
			status string
		}{
			{ignoredOnly, StatusIgnored}, {ignoredOnly, StatusRejected},
			{acted, StatusIgnored}, {acted, StatusAnswered},
			{otherAccount, StatusIgnored},
			{waiting, StatusIgnored}, {waiting, StatusAccepted},
		} {
			if err := tx.InsertEvent(&Event{AccountID: e.c.account, ConversationID: e.c.id, Status: e.status, ReceivedAt: t0}); err != nil {
				return err
			}
		}
		add := func(c conv, kind string, at time.Time) error {
			return tx.AddOwnership(Ownership{At: at, AccountID: c.account, ConversationID: c.id, RouteID: 1, Kind: kind, Owner: StateHuman})
		}
		for i, c := range []conv{ignoredOnly, acted, noEvents, otherAccount, waiting, ignoredOnly, acted, noEvents} {
			if err := add(c, OwnResolved, t0.Add(time.Duration(i)*time.Minute)); err != nil {
				return err
			}
		}
		// Younger than the cut; an entry after it waits for it.
		if err := add(ignoredOnly, OwnKeep, cut.Add(time.Hour)); err != nil {
			return err
		}
		return add(noEvents, OwnReopened, t0)
	})
	if err != nil {
		t.Fatal(err)
	}
	left := func() string {
		rows, err := db.query(ctx, "SELECT account_id, conversation_id, kind FROM ownership ORDER BY id")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := ""
		for rows.Next() {
			var a, c int64
			var k string
			if err := rows.Scan(&a, &c, &k); err != nil {
				t.Fatal(err)
			}
			out += fmt.Sprintf("%d/%d %s; ", a, c, k)
		}
		return out
	}

	var after, total int64
	calls := 0
	for {
		last, n, err := db.PruneOwnership(ctx, after, cut, 3)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		total += n
		if last == after {
			break
		}
		if last-after > 3 {
			t.Fatalf("one batch looked at entries %d to %d, over the limit of 3", after+1, last)
		}
		after = last
	}
	if after != 8 || total != 5 || calls != 4 {
		t.Errorf("stopped after entry %d, %d deleted in %d calls; want 8, 5 in 4", after, total, calls)
	}
	if got, want := left(), "1/2 resolved; 1/4 resolved; 1/2 resolved; 1/1 keep; 1/3 reopened; "; got != want {
		t.Errorf("left %q, want %q", got, want)
	}

	// Past the younger entry, the walk goes on from where it stopped.
	last, n, err := db.PruneOwnership(ctx, after, cut.Add(2*time.Hour), 3)
	if err != nil || last != 10 || n != 2 {
		t.Errorf("later: last %d, %d deleted, %v; want 10, 2", last, n, err)
	}
	if got, want := left(), "1/2 resolved; 1/4 resolved; 1/2 resolved; "; got != want {
		t.Errorf("left %q, want %q", got, want)
	}
}
