package store

import (
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// The store's SQL is written once, in the dialect the two backends share:
// `?` placeholders, standard upserts (ON CONFLICT … DO UPDATE with the
// target table named), INSERT … RETURNING. What remains is adapted at run
// time for PostgreSQL by rebind (placeholders, SQLite's index hints) and, for
// the few functions whose names differ, by the dialect's snippets below. The
// schemas are not portable (types, identity columns, partial index syntax
// aside, SQLite's table rebuilds), so each backend has its own numbered
// migrations: migrations/*.sql for SQLite and migrations/postgres/*.sql,
// the same numbers for both.

type dialect int

const (
	sqliteDialect dialect = iota
	postgresDialect
)

// greatest is the scalar maximum of its arguments.
func (d dialect) greatest() string {
	if d == postgresDialect {
		return "greatest"
	}
	return "max"
}

// contains is a condition true when the comma-separated list in column
// holds the item bound to the placeholder.
func (d dialect) contains(column string) string {
	if d == postgresDialect {
		return "strpos(',' || " + column + " || ',', ',' || ? || ',') > 0"
	}
	return "instr(',' || " + column + " || ',', ',' || ? || ',') > 0"
}

// nowMS is the database server's clock in Unix milliseconds. Leases are
// timed by it, so that replicas whose clocks differ agree on when one ends.
func (d dialect) nowMS() string {
	if d == postgresDialect {
		return "(extract(epoch from clock_timestamp()) * 1000)::bigint"
	}
	return "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
}

// indexHint matches SQLite's INDEXED BY clause, which PostgreSQL's planner
// does without.
var indexHint = regexp.MustCompile(`(?i)\s+INDEXED\s+BY\s+[A-Za-z_][A-Za-z0-9_]*`)

// rebound caches queries already rewritten for PostgreSQL: the store runs
// a fixed set, and callers' raw SQL is just as repetitive.
var rebound sync.Map // string → string

// rebind rewrites a query of the shared dialect for PostgreSQL: `?`
// placeholders become $1, $2, … (not inside quotes or comments), and
// INDEXED BY hints are dropped.
func rebind(q string) string {
	if v, ok := rebound.Load(q); ok {
		return v.(string)
	}
	src := indexHint.ReplaceAllString(q, "")
	var sb strings.Builder
	sb.Grow(len(src) + 16)
	n := 0
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(src) {
				if src[j] == c {
					if j+1 < len(src) && src[j+1] == c { // doubled quote: still inside
						j += 2
						continue
					}
					break
				}
				j++
			}
			sb.WriteString(src[i:min(j+1, len(src))])
			i = j
		case c == '-' && i+1 < len(src) && src[i+1] == '-':
			j := strings.IndexByte(src[i:], '\n')
			if j < 0 {
				j = len(src) - i
			}
			sb.WriteString(src[i : i+j])
			i += j - 1
		case c == '?':
			n++
			sb.WriteByte('$')
			sb.WriteString(strconv.Itoa(n))
		default:
			sb.WriteByte(c)
		}
	}
	out := sb.String()
	rebound.Store(q, out)
	return out
}

// pgArgs makes arguments fit PostgreSQL's text type, which refuses a NUL
// byte and invalid UTF-8 that SQLite stores as given: a webhook carrying
// either must be journaled, not answered 500 forever. Payloads are bytea
// and kept exactly.
func pgArgs(args []any) []any {
	copied := false
	for i, a := range args {
		s, ok := a.(string)
		if !ok || (strings.IndexByte(s, 0) < 0 && utf8.ValidString(s)) {
			continue
		}
		if !copied { // never change the caller's slice
			args, copied = append([]any(nil), args...), true
		}
		args[i] = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	}
	return args
}

// sqlFor is query in the dialect of db.
func (db *DB) sqlFor(query string) string {
	if db.dialect == postgresDialect {
		return rebind(query)
	}
	return query
}
