package store

import (
	"context"
	"fmt"
	"time"
)

// PruneOwnership deletes the ownership entries older than t of
// conversations bridge never acted in: every event of theirs was ignored
// or rejected, so retention deletes those events, and their entries
// (resolves and reopenings Chatwoot reported of a conversation humans had
// from the start, say) would outlive them. It looks at up to limit entries
// with ids above after, in id order, up to the first one not older than t,
// and returns the id of the last one it looked at (after when none) and how
// many went.
//
// An entry kept is not worth a second look, so callers carry on from last:
// bridge deletes only ignored and rejected events, so a conversation it
// acted in stays one. The standard SQL here runs on every journal backend.
func (db *DB) PruneOwnership(ctx context.Context, after int64, t time.Time, limit int) (last, deleted int64, err error) {
	// A deletion lost to a power cut costs nothing: the next start looks
	// at every entry again.
	err = db.WriteNoSync(ctx, func(tx *Tx) error {
		last, deleted = after, 0
		rows, err := tx.Query("SELECT id, at FROM ownership WHERE id > ? ORDER BY id LIMIT ?", after, limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id, at int64
			if err := rows.Scan(&id, &at); err != nil {
				rows.Close()
				return err
			}
			if at >= ms(t) {
				break
			}
			last = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if last == after {
			return nil
		}
		res, err := tx.Exec(`DELETE FROM ownership WHERE id > ? AND id <= ? AND NOT EXISTS (
			SELECT 1 FROM events e WHERE e.account_id = ownership.account_id AND e.conversation_id = ownership.conversation_id
			AND e.status NOT IN ('ignored', 'rejected'))`, after, last)
		if err != nil {
			return err
		}
		deleted, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return after, 0, fmt.Errorf("prune ownership entries: %w", err)
	}
	return last, deleted, nil
}
