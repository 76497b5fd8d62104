package config

import (
	"errors"
	"strconv"
	"strings"
)

// ErrNotFound means a config file named with --config does not exist.
var ErrNotFound = errors.New("config file not found")

// Error is a configuration problem, located by file and key:
//
//	bridge.toml: dify.timeout: invalid duration "abc" (want a number with a unit, e.g. "45s" or "2m")
//
// File is "" when the value did not come from a file (environment, flag or
// default); Key is "" when the problem is the file as a whole. Value is the
// offending value as written; it is never shown for secret keys.
type Error struct {
	File string
	// Flag is the command-line flag that set the value (--listen), "" when
	// it did not come from a flag; the message then names the flag, not
	// the key.
	Flag  string
	Key   string
	Value string
	Err   error

	// hint follows the message in parentheses: what would be valid, a
	// suggestion for a misspelt key, or where the value came from.
	hint string
}

// Error formats the problem as "file: key: what "value" (hint)".
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	switch {
	case e.Flag != "":
		b.WriteString(e.Flag)
		b.WriteString(": ")
	case e.Key != "":
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("invalid value")
	}
	if e.Value != "" && !isSecretKey(e.Key) {
		b.WriteString(" ")
		b.WriteString(strconv.Quote(e.Value))
	}
	if e.hint != "" {
		b.WriteString(" (")
		b.WriteString(e.hint)
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the underlying error, so errors.Is(err, ErrNotFound) works.
func (e *Error) Unwrap() error { return e.Err }
