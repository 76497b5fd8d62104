package store

import (
	"database/sql"
	"path/filepath"
	"testing"
)

func addTestRoute(t *testing.T, db *DB, inbox int64) int64 {
	t.Helper()
	r := &Route{InboxID: inbox, DifyKey: "app-x", Mode: ModeAuto, Enabled: true}
	if err := db.AddRoute(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// TestRouteIDsAreNeverReused: removing the newest route and adding another
// gives a new id, also across a reopen.
func testRouteIDsAreNeverReused(t *testing.T, b backend) {
	path := b.database(t)
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	first := addTestRoute(t, db, 1)
	second := addTestRoute(t, db, 2)
	if err := db.RemoveRoute(t.Context(), second); err != nil {
		t.Fatal(err)
	}
	third := addTestRoute(t, db, 3)
	if third == second || third <= first {
		t.Errorf("ids %d, %d (removed), then %d: reused", first, second, third)
	}
	if err := db.RemoveRoute(t.Context(), third); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(t.Context(), path); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if fourth := addTestRoute(t, db, 4); fourth <= third {
		t.Errorf("after a reopen: id %d, after %d was removed", fourth, third)
	}
}

// TestRouteIDMigrationKeepsRoutesAndHistory applies migration 0003 to a
// database built by the first two: routes keep their ids and fields, and
// ids removed before the migration, which the journal still names, are
// not handed out again.
func TestRouteIDMigrationKeepsRoutesAndHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.db")
	raw, err := sql.Open("sqlite", dsn(path, true, BusyTimeout))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, name := range []string{"migrations/0001_init.sql", "migrations/0002_queue_index.sql"} {
		body, err := migrations.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Exec(string(body)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`,
		`INSERT INTO schema_migrations VALUES (1, '0001_init.sql', 0), (2, '0002_queue_index.sql', 0)`,
		`INSERT INTO routes (id, name, inbox_id, dify_key_env, mode, enabled, app_name, created_at, updated_at)
		 VALUES (1, 'support', 3, 'SUPPORT_KEY', 'draft', 0, 'Support bot', 1, 2)`,
		// Route 7 was removed long ago; its events remain.
		`INSERT INTO events (received_at, status, route_id, updated_at) VALUES (1, 'answered', 7, 1)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r, err := db.Route(t.Context(), 1)
	if err != nil || r.Name != "support" || r.InboxID != 3 || r.DifyKeyEnv != "SUPPORT_KEY" || r.Mode != ModeDraft ||
		r.Enabled || r.AppName != "Support bot" {
		t.Fatalf("route 1 after the migration: %+v, %v", r, err)
	}
	if id := addTestRoute(t, db, 4); id != 8 {
		t.Errorf("new route id %d, want 8 (after route 7 named by the journal)", id)
	}
	if applied, known, err := db.SchemaVersion(t.Context()); err != nil || applied != known {
		t.Errorf("schema %d of %d: %v", applied, known, err)
	}
}
