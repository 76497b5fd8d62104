package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Leases. An event a worker drives is `working` with lease_owner naming the
// process and lease_until (Unix ms, the database's clock) when its claim
// ends. The worker driving it renews the lease every third of the lease
// time (RenewLeases); an event whose lease ran out belongs to a process that died or lost
// the database for longer than that, and any process sharing the database
// puts it back in the queue (ReclaimExpired), whence the next claim resumes
// it, with the steps and posts in doubt its journal records.
//
// A lease is per event, not per conversation: only the oldest open event of
// a conversation can be claimed (see Claim), so the lease of that event is
// the conversation's. Rows rather than advisory locks, because a row lease
// ends at a bounded time even when the holder's host vanishes without
// closing its connection (a session lock lasts until TCP gives up, which
// can be hours), works through a transaction-pooling proxy, and is visible
// in the journal (who holds what, until when).

// newOwner names this process in lease_owner: host, pid and a random part,
// so a restarted process never takes its predecessor's leases for its own.
func newOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "bridge"
	}
	return host + ":" + strconv.Itoa(os.Getpid()) + ":" + rand.Text()[:8]
}

// Owner is how this process appears in the lease_owner of the events it
// drives.
func (db *DB) Owner() string { return db.owner }

// LeaseTTL is how long a claim of this store lasts without renewal.
func (db *DB) LeaseTTL() time.Duration { return db.leaseTTL }

// leaseUntil is the SQL for a lease that ends one lease time from now.
func (db *DB) leaseUntil() string {
	return db.dialect.nowMS() + " + " + strconv.FormatInt(db.leaseTTL.Milliseconds(), 10)
}

// RenewLeases extends by a lease time the leases this process holds on ids
// and returns those it no longer holds: another process reclaimed them
// after this one failed to renew in time, and drives them now. A process
// driving events renews them every third of the lease time.
func (db *DB) RenewLeases(ctx context.Context, ids []int64) (lost []int64, err error) {
	if len(ids) == 0 {
		return nil, nil
	}
	kept := make(map[int64]bool, len(ids))
	err = db.WriteNoSync(ctx, func(tx *Tx) error {
		clear(kept)
		// One statement per id keeps the SQL portable; a process holds a
		// handful of events at a time.
		for _, id := range ids {
			res, err := tx.Exec(`UPDATE events SET lease_until = `+db.leaseUntil()+`
				WHERE id = ? AND status = 'working' AND lease_owner = ?`, id, db.owner)
			if err != nil {
				return fmt.Errorf("renew lease of event %d: %w", id, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n > 0 {
				kept[id] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if !kept[id] {
			lost = append(lost, id)
		}
	}
	return lost, nil
}

// ExpiredLeases returns up to limit working events whose lease ran out,
// oldest first: their process died, or lost the database for longer than
// a lease.
func (db *DB) ExpiredLeases(ctx context.Context, limit int) ([]int64, error) {
	rows, err := db.query(ctx, `SELECT id FROM events INDEXED BY events_queue
		WHERE status IN ('accepted', 'working') AND status = 'working' AND lease_until < `+db.dialect.nowMS()+`
		ORDER BY id LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("list expired leases: %w", err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list expired leases: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// ReclaimExpired puts a working event whose lease ran out back in the
// queue, and reports whether it did (a lease renewed meanwhile keeps it
// where it is). It returns the owner whose lease ran out.
func (tx *Tx) ReclaimExpired(id int64) (owner string, ok bool, err error) {
	err = tx.QueryRow(`SELECT lease_owner FROM events WHERE id = ? AND status = 'working' AND lease_until < `+
		tx.db.dialect.nowMS()+tx.forUpdate(), id).Scan(&owner)
	if err != nil {
		if isNoRows(err) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("reclaim event %d: %w", id, err)
	}
	if _, err := tx.Exec(`UPDATE events SET status = 'accepted', lease_owner = '', lease_until = 0, updated_at = ?
		WHERE id = ?`, ms(tx.now), id); err != nil {
		return "", false, fmt.Errorf("reclaim event %d: %w", id, err)
	}
	tx.wake = true
	return owner, true, nil
}

// ReleaseLeases puts back in the queue the working events this process
// holds, for another process to resume at once: a stopping server calls it
// once its workers have stopped. It reports how many went back.
func (db *DB) ReleaseLeases(ctx context.Context) (int64, error) {
	var n int64
	err := db.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec(`UPDATE events SET status = 'accepted', lease_owner = '', lease_until = 0, updated_at = ?
			WHERE status = 'working' AND lease_owner = ?`, ms(tx.now), db.owner)
		if err != nil {
			return fmt.Errorf("release leases: %w", err)
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		tx.wake = n > 0
		return nil
	})
	return n, err
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// forUpdate locks the rows a query reads for the rest of the transaction
// (PostgreSQL; SQLite's single writer needs no row locks).
func (tx *Tx) forUpdate() string {
	if tx.db.dialect == postgresDialect {
		return " FOR UPDATE"
	}
	return ""
}
