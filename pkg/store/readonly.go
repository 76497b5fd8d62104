package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"
)

// ErrReadOnly is returned by Write on a database opened with OpenReadOnly.
var ErrReadOnly = errors.New("database opened read-only")

// ErrSchemaBehind is returned by OpenReadOnly when the database lacks
// migrations this binary knows: only a writing open may apply them.
var ErrSchemaBehind = errors.New("database schema is older than this bridge")

// OpenReadOnly opens an existing database for reading only: it never
// creates the file (or schema), applies no migration, and every Write fails
// with ErrReadOnly. A missing SQLite file is an error wrapping
// fs.ErrNotExist.
func OpenReadOnly(ctx context.Context, database string) (*DB, error) {
	if IsPostgres(database) {
		return openPostgresReadOnly(ctx, database)
	}
	path := SQLitePath(database)
	if path == "" {
		return nil, errors.New("open database: empty path")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("open database %s: is a directory: %w", path, fs.ErrInvalid)
	}
	q := "file:" + path + "?mode=ro&_pragma=busy_timeout(" + strconv.Itoa(int(BusyTimeout/time.Millisecond)) + ")"
	r, err := sql.Open("sqlite", q)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	db := newDB(path, sqliteDialect)
	db.w, db.r, db.readOnly = r, r, true
	if err := db.checkReadable(ctx); err != nil {
		_ = r.Close() // nothing was read
		return nil, err
	}
	close(db.exited) // no writer: writes are refused before they queue
	return db, nil
}

// checkReadable makes sure a read-only database is a bridge database with
// every migration this binary knows.
func (db *DB) checkReadable(ctx context.Context) error {
	applied, known, err := db.SchemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("open database %s: not a bridge database: %w", db.Path, err)
	}
	if applied < known {
		return fmt.Errorf("open database %s: %w (version %d, this bridge has %d)", db.Path, ErrSchemaBehind, applied, known)
	}
	return nil
}
