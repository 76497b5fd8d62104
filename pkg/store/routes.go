package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Route modes.
const (
	ModeAuto  = "auto"
	ModeDraft = "draft"
)

// Route maps one Chatwoot inbox to one Dify app.
type Route struct {
	ID      int64
	Name    string
	InboxID int64
	DifyURL string // "" = the configured default
	// DifyKey is stored in the database file (mode 0600); DifyKeyEnv names an
	// environment variable read at run time instead, so the key is never stored.
	DifyKey    string
	DifyKeyEnv string
	Inputs     map[string]string
	Mode       string
	// Keywords, HandoffTeam and HandoffLabels override the [handoff] defaults
	// when set (nil = use the default).
	Keywords      []string
	HandoffTeam   *int64
	HandoffLabels []string
	Enabled       bool
	AppName       string
	AppMode       string
	Options       RouteOptions
	CreatedAt     time.Time
	UpdatedAt     time.Time
	// MaxInFlight caps the route's events in progress at once (0: no cap
	// beyond worker.concurrency).
	MaxInFlight int
}

// ErrDuplicateInbox is returned when an inbox already has a route.
var ErrDuplicateInbox = errors.New("inbox already has a route")

const routeCols = `id, name, inbox_id, dify_url, dify_key, dify_key_env, inputs, mode, keywords,
	handoff_team, handoff_labels, enabled, app_name, app_mode, created_at, updated_at, max_in_flight, options`

func scanRoute(sc interface{ Scan(...any) error }) (Route, error) {
	var r Route
	var inputs string
	var keywords, labels sql.NullString
	var team sql.NullInt64
	var created, updated int64
	var enabled int
	var options string
	if err := sc.Scan(&r.ID, &r.Name, &r.InboxID, &r.DifyURL, &r.DifyKey, &r.DifyKeyEnv, &inputs, &r.Mode,
		&keywords, &team, &labels, &enabled, &r.AppName, &r.AppMode, &created, &updated, &r.MaxInFlight, &options); err != nil {
		return r, err
	}
	var err error
	if r.Options, err = parseRouteOptions(r.ID, options); err != nil {
		return r, err
	}
	r.Enabled = enabled != 0
	r.CreatedAt, r.UpdatedAt = fromMS(created), fromMS(updated)
	if inputs != "" {
		if err := json.Unmarshal([]byte(inputs), &r.Inputs); err != nil {
			return r, fmt.Errorf("route %d inputs: %w", r.ID, err)
		}
	}
	if keywords.Valid {
		if err := json.Unmarshal([]byte(keywords.String), &r.Keywords); err != nil {
			return r, fmt.Errorf("route %d keywords: %w", r.ID, err)
		}
		if r.Keywords == nil {
			r.Keywords = []string{}
		}
	}
	if labels.Valid {
		if err := json.Unmarshal([]byte(labels.String), &r.HandoffLabels); err != nil {
			return r, fmt.Errorf("route %d labels: %w", r.ID, err)
		}
		if r.HandoffLabels == nil {
			r.HandoffLabels = []string{}
		}
	}
	if team.Valid {
		v := team.Int64
		r.HandoffTeam = &v
	}
	return r, nil
}

func nullJSON(v []string) (any, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// AddRoute stores a new route and sets its ID.
func (db *DB) AddRoute(ctx context.Context, r *Route) error {
	if r.Mode == "" {
		r.Mode = ModeAuto
	}
	inputs, err := json.Marshal(r.Inputs)
	if err != nil {
		return err
	}
	if r.Inputs == nil {
		inputs = []byte("{}")
	}
	kw, err := nullJSON(r.Keywords)
	if err != nil {
		return err
	}
	lb, err := nullJSON(r.HandoffLabels)
	if err != nil {
		return err
	}
	var team any
	if r.HandoffTeam != nil {
		team = *r.HandoffTeam
	}
	options, err := r.Options.json()
	if err != nil {
		return err
	}
	return db.Write(ctx, func(tx *Tx) error {
		now := ms(tx.Now())
		err := tx.QueryRow(`INSERT INTO routes (name, inbox_id, dify_url, dify_key, dify_key_env, inputs, mode,
			keywords, handoff_team, handoff_labels, enabled, app_name, app_mode, created_at, updated_at, max_in_flight, options)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			r.Name, r.InboxID, r.DifyURL, r.DifyKey, r.DifyKeyEnv, string(inputs), r.Mode, kw, team, lb,
			boolInt(r.Enabled), r.AppName, r.AppMode, now, now, max(r.MaxInFlight, 0), options).Scan(&r.ID)
		if err != nil {
			if isUniqueViolation(err, "routes.inbox_id", "routes_inbox_id_key") {
				return fmt.Errorf("inbox %d: %w", r.InboxID, ErrDuplicateInbox)
			}
			return fmt.Errorf("insert route: %w", err)
		}
		r.CreatedAt, r.UpdatedAt = tx.Now(), tx.Now()
		return nil
	})
}

// Routes lists every route by id.
func (db *DB) Routes(ctx context.Context) ([]Route, error) {
	rows, err := db.query(ctx, "SELECT "+routeCols+" FROM routes ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	defer rows.Close()
	var out []Route
	for rows.Next() {
		r, err := scanRoute(rows)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Route returns one route by id.
func (db *DB) Route(ctx context.Context, id int64) (Route, error) {
	r, err := scanRoute(db.queryRow(ctx, "SELECT "+routeCols+" FROM routes WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("route %d: %w", id, ErrNotFound)
	}
	return r, err
}

// RemoveRoute deletes a route. Its conversations keep their history.
func (db *DB) RemoveRoute(ctx context.Context, id int64) error {
	return db.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec("DELETE FROM routes WHERE id = ?", id)
		if err != nil {
			return fmt.Errorf("remove route %d: %w", id, err)
		}
		return mustAffect(res, fmt.Sprintf("route %d", id))
	})
}

// SetRouteEnabled enables or disables a route.
func (db *DB) SetRouteEnabled(ctx context.Context, id int64, enabled bool) error {
	return db.Write(ctx, func(tx *Tx) error {
		res, err := tx.Exec("UPDATE routes SET enabled = ?, updated_at = ? WHERE id = ?", boolInt(enabled), ms(tx.Now()), id)
		if err != nil {
			return fmt.Errorf("update route %d: %w", id, err)
		}
		return mustAffect(res, fmt.Sprintf("route %d", id))
	})
}

func mustAffect(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
