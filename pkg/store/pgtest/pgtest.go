// Package pgtest gives a test a PostgreSQL database of its own: a fresh
// schema on the server BRIDGE_TEST_POSTGRES names, dropped when the test
// ends. Only tests import it.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// Env names the variable holding the server's URL, e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const Env = "BRIDGE_TEST_POSTGRES"

// Enabled reports whether PostgreSQL tests run.
func Enabled() bool { return os.Getenv(Env) != "" }

// URL returns the URL of a fresh, empty schema (its search_path) on the
// server, dropped with everything in it when t ends. It skips t when Env is
// unset, and fails it when Env is set and the server cannot be used: a
// PostgreSQL suite that was asked for never passes by not running.
func URL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(Env)
	if base == "" {
		t.Skip(Env + " is not set: no PostgreSQL server to test against")
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("%s: %v", Env, err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	schema := "t_" + strings.ToLower(rand.Text()[:16])
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("%s is set but the server cannot be used: %v", Env, err)
	}
	t.Cleanup(func() { Drop(t, base, schema) })
	return WithSchema(t, base, schema)
}

// WithSchema is base with its search_path set to schema.
func WithSchema(t testing.TB, base, schema string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", Env, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Drop removes schema and everything in it.
func Drop(t testing.TB, base, schema string) {
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
		return
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
	}
}
