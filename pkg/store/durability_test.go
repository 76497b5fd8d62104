package store

import (
	"os"
	"sync"
	"testing"
	"time"
)

// TestDurabilitySettings: the writer connection, the one every commit goes
// through, runs WAL with synchronous=FULL (2): a commit is fsync'd when
// Write returns.
func TestDurabilitySettings(t *testing.T) {
	db := mustOpen(t)
	mode, level, err := db.Durability(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || level != "FULL" {
		t.Errorf("journal_mode=%s synchronous=%s, want wal and FULL", mode, level)
	}
	var n int
	err = db.Write(t.Context(), func(tx *Tx) error { return tx.QueryRow("PRAGMA synchronous").Scan(&n) })
	if err != nil || n != 2 {
		t.Errorf("PRAGMA synchronous on the writer = %d, %v; want 2", n, err)
	}
}

// TestNoSync: a transaction carrying only WriteNoSync writes commits
// without an fsync; one durable write in the batch makes it fsync'd; and
// the writer is back at synchronous=FULL afterwards.
func TestNoSync(t *testing.T) {
	db := mustOpen(t)
	ctx := t.Context()
	insert := func(nosync bool) error {
		fn := func(tx *Tx) error { return tx.InsertEvent(&Event{Status: StatusIgnored, Reason: "test"}) }
		if nosync {
			return db.WriteNoSync(ctx, fn)
		}
		return db.Write(ctx, fn)
	}
	c0, s0 := db.commits.Load(), db.Syncs()
	if err := insert(true); err != nil {
		t.Fatal(err)
	}
	if c, s := db.commits.Load()-c0, db.Syncs()-s0; c != 1 || s != 0 {
		t.Errorf("NoSync write alone: %d commits, %d fsync'd; want 1, 0", c, s)
	}
	if _, level, err := db.Durability(ctx); err != nil || level != "FULL" {
		t.Errorf("after a NoSync commit synchronous=%s, %v; want FULL", level, err)
	}

	// A NoSync write sharing a transaction with a durable one is fsync'd
	// with it.
	release := make(chan struct{})
	started := make(chan struct{})
	go func() {
		_ = db.Write(ctx, func(tx *Tx) error { close(started); <-release; return nil })
	}()
	<-started
	var wg sync.WaitGroup
	wg.Go(func() { _ = insert(true) })
	wg.Go(func() { _ = insert(false) })
	for len(db.reqs) < 2 {
		time.Sleep(time.Millisecond) // polling a queue length, not timing behaviour
	}
	c1, s1 := db.commits.Load(), db.Syncs()
	close(release)
	wg.Wait()
	if c, s := db.commits.Load()-c1, db.Syncs()-s1; s != c || c < 1 {
		t.Errorf("mixed batch: %d commits, %d fsync'd; want every commit fsync'd", c, s)
	}
	n, err := db.ListEvents(ctx, EventFilter{Limit: 10})
	if err != nil || len(n) != 3 {
		t.Errorf("events = %d, %v; want 3", len(n), err)
	}
}

// TestWALStaysBounded: under steady appends the write-ahead log is
// checkpointed and reused instead of growing with the journal.
func TestWALStaysBounded(t *testing.T) {
	db := mustOpen(t)
	payload := make([]byte, 4096)
	for range 20 {
		err := db.Write(t.Context(), func(tx *Tx) error {
			for range 200 {
				if err := tx.InsertEvent(&Event{Status: StatusAnswered, Payload: payload}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	st, err := os.Stat(db.Path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	main, err := os.Stat(db.Path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 16<<20 || main.Size() < 16<<20 {
		t.Errorf("after 16 MiB of events: WAL %d bytes, database %d bytes; want the WAL under 16 MiB and the data in the database", st.Size(), main.Size())
	}
}
