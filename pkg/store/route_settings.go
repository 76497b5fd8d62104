package store

import (
	"context"
	"fmt"
)

// SetRouteSettings changes a route's cap on events in progress and its
// message options in place, keeping its id (and so its queue and history).
func (db *DB) SetRouteSettings(ctx context.Context, id int64, maxInFlight int, o RouteOptions) error {
	opts, err := o.json()
	if err != nil {
		return err
	}
	return db.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec("UPDATE routes SET max_in_flight = ?, options = ?, updated_at = ? WHERE id = ?",
			max(maxInFlight, 0), opts, ms(tx.Now()), id)
		if err != nil {
			return fmt.Errorf("update route %d: %w", id, err)
		}
		return mustAffect(res, fmt.Sprintf("route %d", id))
	})
}
