package store

import (
	"database/sql"
	"database/sql/driver"
	"errors"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// injectedError is a commit failure injected through SetCommitFault; it
// behaves as a full disk does.
type injectedError struct{ err error }

func (e *injectedError) Error() string { return e.err.Error() }
func (e *injectedError) Unwrap() error { return e.err }

// IsStorage reports whether err is a failure of the database itself
// (locked, full, I/O error, closed, or any other SQLite error), as opposed
// to a write refused by its own logic (ErrNotFound, ErrNotClaimable) or an
// error of an upstream. Callers use it so that a failure of bridge's own
// journal is never reported as the AI's or Chatwoot's.
func IsStorage(err error) bool {
	if err == nil {
		return false
	}
	var se *sqlite.Error
	var ie *injectedError
	return errors.As(err, &se) || errors.As(err, &ie) || errors.Is(err, ErrClosed) ||
		errors.Is(err, sql.ErrConnDone) || errors.Is(err, driver.ErrBadConn)
}

// IsTransient reports whether a storage failure may go away by itself: the
// file locked by another process, a full disk, an I/O error.
func IsTransient(err error) bool {
	var ie *injectedError
	if errors.As(err, &ie) {
		return true
	}
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff { // the primary code of an extended one
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_PROTOCOL:
		return true
	}
	return false
}
