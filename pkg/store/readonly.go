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
// creates the file, applies no migration, and every Write fails with
// ErrReadOnly. A missing file is an error wrapping fs.ErrNotExist.
func OpenReadOnly(ctx context.Context, path string) (*DB, error) {
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
	db := &DB{Path: path, Now: time.Now, w: r, r: r, reqs: make(chan *writeReq), stop: make(chan struct{}), exited: make(chan struct{})}
	applied, known, err := db.SchemaVersion(ctx)
	if err != nil {
		_ = r.Close() // the read error is the one worth reporting
		return nil, fmt.Errorf("open database %s: not a bridge database: %w", path, err)
	}
	if applied < known {
		_ = r.Close() // nothing was read
		return nil, fmt.Errorf("open database %s: %w (version %d, this bridge has %d)", path, ErrSchemaBehind, applied, known)
	}
	// Writes are answered, not queued: the refusing writer stands in for
	// the real one so that Write and Close need no special case.
	db.wg.Go(func() {
		defer close(db.exited)
		for {
			select {
			case req := <-db.reqs:
				req.done <- ErrReadOnly
			case <-db.stop:
				return
			}
		}
	})
	return db, nil
}
