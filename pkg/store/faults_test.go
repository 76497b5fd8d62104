package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// holdLock takes the database's write lock from a second connection, as
// another process (a CLI command, a backup) would, until release is called.
func holdLock(t *testing.T, path string) (release func()) {
	t.Helper()
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if done {
			return
		}
		done = true
		if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
			t.Error(err)
		}
		_ = conn.Close()  // the lock is gone with the rollback
		_ = other.Close() // as above
	}
	t.Cleanup(release)
	return release
}

// waitUntil polls cond until it holds or the test's patience runs out.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openWith(t *testing.T, opts ...Option) *DB {
	t.Helper()
	db, err := Open(t.Context(), filepath.Join(t.TempDir(), "bridge.db"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func insertAccepted(t *testing.T, db *DB) int64 {
	t.Helper()
	// A conversation of its own, so that no event waits for another.
	n := time.Now().UnixNano()
	e := &Event{Status: StatusAccepted, Kind: KindMessage, AccountID: 1, ConversationID: n, MessageID: n}
	if err := db.Write(t.Context(), func(tx *Tx) error { return tx.InsertEvent(e) }); err != nil {
		t.Fatal(err)
	}
	return e.ID
}

// TestWriteOutlastsALock: a write that meets another connection's lock for
// longer than the busy timeout is tried again until the lock goes, instead
// of failing (which used to throw good answers away).
func TestWriteOutlastsALock(t *testing.T) {
	db := openWith(t, WithBusyTimeout(50*time.Millisecond), WithRetry(10*time.Second))
	id := insertAccepted(t, db)
	release := holdLock(t, db.Path)
	errc := make(chan error, 1)
	go func() {
		errc <- db.Write(context.Background(), func(tx *Tx) error {
			return tx.UpdateEvent(id, EventUpdate{AddStep: "answer"})
		})
	}()
	waitUntil(t, "the write met the lock and retried", func() bool { return db.Retries() > 0 })
	release()
	if err := <-errc; err != nil {
		t.Fatalf("write after the lock went: %v", err)
	}
	e, err := db.Event(t.Context(), id)
	if err != nil || !e.HasStep("answer") {
		t.Fatalf("event %d steps %q, %v: the write did not land", id, e.Steps, err)
	}
}

// TestWriteGivesUpInTime: the retries are bounded, by the store's window and
// by the caller's deadline, and the failure says it is the database's.
func TestWriteGivesUpInTime(t *testing.T) {
	t.Run("RetryWindow", func(t *testing.T) {
		db := openWith(t, WithBusyTimeout(20*time.Millisecond), WithRetry(200*time.Millisecond))
		holdLock(t, db.Path)
		err := db.Write(t.Context(), func(tx *Tx) error { _, err := tx.Exec("DELETE FROM posted"); return err })
		if !IsStorage(err) || !IsTransient(err) {
			t.Fatalf("write under a lock held past the retry window: %v; want a transient storage error", err)
		}
		if db.Retries() == 0 {
			t.Error("no retry before giving up")
		}
	})
	t.Run("CallerDeadline", func(t *testing.T) {
		db := openWith(t, WithBusyTimeout(20*time.Millisecond), WithRetry(time.Hour))
		holdLock(t, db.Path)
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		err := db.Write(ctx, func(tx *Tx) error { _, err := tx.Exec("DELETE FROM posted"); return err })
		if !IsStorage(err) {
			t.Fatalf("write: %v; want a storage error once the caller's deadline is near", err)
		}
	})
	t.Run("LogicErrorsAreNotRetried", func(t *testing.T) {
		db := openWith(t)
		err := db.Write(t.Context(), func(tx *Tx) error { return tx.UpdateEvent(12345, EventUpdate{AddStep: "x"}) })
		if !errors.Is(err, ErrNotFound) || IsStorage(err) || db.Retries() != 0 {
			t.Fatalf("update of a missing event: %v (storage %v, retries %d); want ErrNotFound, not retried", err, IsStorage(err), db.Retries())
		}
	})
}

// TestCommitFault: the seam that makes the journal unwritable fails commits
// as a full disk does; Write retries through a short outage, Ping reports
// the outage at once.
func testCommitFault(t *testing.T, b backend) {
	db := b.open(t, WithRetry(5*time.Second))
	full := errors.New("disk full (injected)")
	var left atomic.Int32
	left.Store(3)
	db.SetCommitFault(func() error {
		if left.Add(-1) >= 0 {
			return full
		}
		return nil
	})
	id := insertAccepted(t, db)
	if db.Retries() < 3 {
		t.Errorf("retries = %d, want at least 3 (one per failed commit)", db.Retries())
	}
	if _, err := db.Event(t.Context(), id); err != nil {
		t.Fatalf("the event written through the outage is missing: %v", err)
	}

	db.SetCommitFault(func() error { return full })
	before := db.Retries()
	err := db.Ping(t.Context())
	if !errors.Is(err, full) || !IsStorage(err) || !IsTransient(err) {
		t.Fatalf("Ping with the disk full: %v; want the injected failure as a transient storage error", err)
	}
	if db.Retries() != before {
		t.Error("Ping retried; it must report how the journal is now")
	}
	db.SetCommitFault(nil)
	if err := db.Ping(t.Context()); err != nil {
		t.Fatalf("Ping after the fault was removed: %v", err)
	}
}

// TestOpenTightensMode: a database created 0644 by an older version or by
// hand is made 0600 when opened, with its WAL files.
func TestOpenTightensMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	insertAccepted(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err = Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	insertAccepted(t, db) // the WAL exists from here on
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", filepath.Base(p), fi.Mode().Perm())
		}
	}
}

// testRedactorMasksWhatIsWritten: reasons, errors, trace details, delivery
// ids and refused bodies are masked before they reach the database (for
// SQLite, the bytes of the file and its WAL).
func testRedactorMasksWhatIsWritten(t *testing.T, b backend) {
	const secret = "Zq8v3JxYwK2mN7pRsecret"
	mask := func(s string) string { return strings.ReplaceAll(s, secret, "****") }
	database := b.database(t)
	db, err := Open(t.Context(), database, WithRedactor(mask))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	e := &Event{Status: StatusRejected, HTTPStatus: 401, Reason: "bad token " + secret, DeliveryID: "d-" + secret,
		Payload: []byte(`{"token":"` + secret + `"}`)}
	acc := &Event{Status: StatusAccepted, Kind: KindMessage, AccountID: 1, ConversationID: 2, MessageID: 3}
	err = db.Write(t.Context(), func(tx *Tx) error {
		if err := tx.InsertEvent(e); err != nil {
			return err
		}
		if err := tx.InsertEvent(acc); err != nil {
			return err
		}
		if err := tx.AddHop(Hop{EventID: acc.ID, Stage: "dify", Outcome: "error", Detail: "dify 401: Bearer " + secret}); err != nil {
			return err
		}
		msg := "chatwoot said " + secret
		if err := tx.UpdateEvent(acc.ID, EventUpdate{Status: StatusFailed, Reason: &msg, LastError: &msg}); err != nil {
			return err
		}
		return tx.SetConversationState(1, 2, StateHuman, "AI failed: "+secret)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every text column the writes above touched, read back.
	for _, q := range []string{
		"SELECT reason || delivery_id || last_error || coalesce(payload, '') FROM events",
		"SELECT outcome || detail FROM hops",
		"SELECT state_reason FROM conversations",
	} {
		if b.name == "postgres" {
			q = strings.ReplaceAll(q, "coalesce(payload, '')", "coalesce(convert_from(payload, 'UTF8'), '')")
		}
		rows, err := db.Reader().QueryContext(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(v, secret) {
				t.Errorf("%s: a row holds the secret: %q", q, v)
			}
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if b.name != "sqlite" {
		return
	}
	for _, p := range []string{db.Path, db.Path + "-wal"} {
		raw, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("%s holds the secret", filepath.Base(p))
		}
	}
}

// TestStaleWorking: a working event with no progress for a while is listed,
// counted and can be put back in the queue; progress (a trace step) makes it
// fresh again.
func testStaleWorking(t *testing.T, b backend) {
	db := b.open(t)
	clock := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return clock }
	fresh, stale := insertAccepted(t, db), insertAccepted(t, db)
	for _, id := range []int64{stale, fresh} {
		if err := db.Write(t.Context(), func(tx *Tx) error { return tx.Claim(id) }); err != nil {
			t.Fatal(err)
		}
	}
	clock = clock.Add(5 * time.Minute)
	if err := db.Write(t.Context(), func(tx *Tx) error { return tx.AddHop(Hop{EventID: fresh, Stage: "dify", Outcome: "answer"}) }); err != nil {
		t.Fatal(err)
	}
	cutoff := clock.Add(-time.Minute)
	got, err := db.StaleWorking(t.Context(), cutoff, 10)
	if err != nil || len(got) != 1 || got[0].ID != stale {
		t.Fatalf("StaleWorking = %+v, %v; want only event %d", got, err, stale)
	}
	if n, oldest, err := db.CountStaleWorking(t.Context(), cutoff); err != nil || n != 1 || oldest != stale {
		t.Fatalf("CountStaleWorking = %d, %d, %v; want 1, %d", n, oldest, err, stale)
	}
	var took [2]bool
	err = db.Write(t.Context(), func(tx *Tx) error {
		var err error
		if took[0], err = tx.Reclaim(fresh, cutoff); err != nil {
			return err
		}
		took[1], err = tx.Reclaim(stale, cutoff)
		return err
	})
	if err != nil || took[0] || !took[1] {
		t.Fatalf("Reclaim fresh=%v stale=%v, %v; want only the stale one", took[0], took[1], err)
	}
	if e, _ := db.Event(t.Context(), stale); e.Status != StatusAccepted {
		t.Errorf("reclaimed event is %s, want accepted", e.Status)
	}
}

// TestWriteOutlastsAFullDisk: the journal on a small file system that fills
// up. A write fails with a transient storage error while the disk is full,
// and a write under way when space comes back lands. It needs to mount a
// tmpfs (root); elsewhere TestCommitFault covers the same path through the
// store's seam.
func TestWriteOutlastsAFullDisk(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	db, err := Open(t.Context(), filepath.Join(dir, "bridge.db"), WithRetry(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	insertAccepted(t, db)

	filler := filepath.Join(dir, "filler")
	fill := func() {
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		chunk := make([]byte, 64<<10)
		for {
			if _, err := f.Write(chunk); err != nil {
				break // ENOSPC: the file system is full
			}
		}
	}
	fill()
	// Rows big enough to need new pages, so the WAL must grow.
	big := func(tx *Tx) error {
		_, err := tx.Exec("INSERT INTO posted (message_id, event_id, step, at) VALUES (?, 1, ?, 0)",
			time.Now().UnixNano(), strings.Repeat("x", 64<<10))
		return err
	}
	if err := db.Ping(t.Context()); !IsStorage(err) || !IsTransient(err) {
		t.Fatalf("Ping on a full disk: %v; want a transient storage error", err)
	}

	// Space comes back while a write is retrying: it lands.
	errc := make(chan error, 1)
	before := db.Retries()
	go func() { errc <- db.Write(context.Background(), big) }()
	waitUntil(t, "the write met the full disk", func() bool { return db.Retries() > before })
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write once space came back: %v", err)
	}
}
