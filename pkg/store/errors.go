package store

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// injectedError is a commit failure injected through SetCommitFault; it
// behaves as a full disk does.
type injectedError struct{ err error }

func (e *injectedError) Error() string { return e.err.Error() }
func (e *injectedError) Unwrap() error { return e.err }

func isPgError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe)
}

// IsStorage reports whether err is a failure of the database itself
// (locked, full, I/O error, closed, unreachable, or any other SQLite or
// PostgreSQL error), as opposed to a write refused by its own logic
// (ErrNotFound, ErrNotClaimable) or an error of an upstream. Callers use it
// so that a failure of bridge's own journal is never reported as the AI's
// or Chatwoot's.
func IsStorage(err error) bool {
	if err == nil {
		return false
	}
	var se *sqlite.Error
	var ie *injectedError
	var ce *pgconn.ConnectError
	return errors.As(err, &se) || errors.As(err, &ie) || errors.Is(err, ErrClosed) ||
		errors.Is(err, sql.ErrConnDone) || errors.Is(err, driver.ErrBadConn) ||
		isPgError(err) || errors.As(err, &ce) || errors.Is(err, errCommitUnknown) || isConnLoss(err)
}

// IsTransient reports whether a storage failure may go away by itself: the
// file locked by another process, a full disk, an I/O error; on
// PostgreSQL a serialization failure or deadlock, a server starting,
// stopping or out of connections, a connection lost before the commit.
func IsTransient(err error) bool {
	var ie *injectedError
	if errors.As(err, &ie) {
		return true
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // the primary code of an extended one
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_PROTOCOL:
			return true
		}
		return false
	}
	if errors.Is(err, errCommitUnknown) {
		return false // it may have landed: never written twice
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "40001", pe.Code == "40P01": // serialization failure, deadlock
			return true
		case pe.Code == "55P03": // lock not available
			return true
		case len(pe.Code) == 5 && pe.Code[:2] == "53": // insufficient resources: disk full, out of memory, too many connections
			return true
		case len(pe.Code) == 5 && pe.Code[:2] == "08": // connection exception
			return true
		case pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03": // shutting down, crashed, starting
			return true
		case pe.Code == "58030": // I/O error
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || errors.Is(err, driver.ErrBadConn) || isConnLoss(err)
}

// isConnLoss reports a connection to PostgreSQL that broke, timed out or
// could not be used: errors pgconn made (they all tell whether they
// happened before anything was sent), not any network error, which may be
// an upstream's.
func isConnLoss(err error) bool {
	var pgconnErr interface{ SafeToRetry() bool }
	return errors.As(err, &pgconnErr) || errors.Is(err, pgconn.ErrConnClosed) || pgconn.Timeout(err)
}

// isUniqueViolation reports a unique constraint refusing a row: sqliteName
// is how SQLite names it (table.column), pgName PostgreSQL's constraint.
func isUniqueViolation(err error, sqliteName, pgName string) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505" && pe.ConstraintName == pgName
	}
	return strings.Contains(err.Error(), "UNIQUE constraint failed: "+sqliteName)
}
