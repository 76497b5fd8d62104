package store

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// maxCachedStmts bounds each statement cache. The store's queries are a
// fixed set (plus a few dozen shapes of UpdateEvent); anything beyond runs
// unprepared.
const maxCachedStmts = 256

// stmtCache keeps prepared statements by query text, so that hot queries
// are parsed and planned once instead of on every call. SQLite re-prepares
// a statement by itself when the schema changes under it.
type stmtCache struct {
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func (c *stmtCache) get(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[query]
}

// prepare returns the cached statement for query, preparing it on pool if
// needed; nil when the cache is full or preparing failed (the caller then
// runs the query unprepared and sees the error there).
func (c *stmtCache) prepare(ctx context.Context, pool *sql.DB, query string) *sql.Stmt {
	if s := c.get(query); s != nil {
		return s
	}
	c.mu.Lock()
	full := len(c.m) >= maxCachedStmts
	c.mu.Unlock()
	if full {
		return nil
	}
	s, err := pool.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[query]; old != nil {
		_ = s.Close() // another caller prepared it first; the statement was never used
		return old
	}
	if c.m == nil {
		c.m = make(map[string]*sql.Stmt)
	}
	c.m[query] = s
	return s
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, s := range c.m {
		errs = append(errs, s.Close())
	}
	c.m = nil
	return errors.Join(errs...)
}

// query runs a read through a cached prepared statement. On PostgreSQL
// pgx keeps its own cache of prepared statements on each connection.
func (db *DB) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if db.dialect == postgresDialect {
		return db.r.QueryContext(ctx, rebind(query), pgArgs(args)...)
	}
	if s := db.rstmts.prepare(ctx, db.r, query); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return db.r.QueryContext(ctx, query, args...)
}

// queryRow is query for one row.
func (db *DB) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if db.dialect == postgresDialect {
		return db.r.QueryRowContext(ctx, rebind(query), pgArgs(args)...)
	}
	if s := db.rstmts.prepare(ctx, db.r, query); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return db.r.QueryRowContext(ctx, query, args...)
}

// stmt returns query as a statement of the transaction, prepared once on
// the writer connection. The writer has a single connection, busy while a
// transaction is open, so a query seen for the first time runs unprepared
// and is prepared after the commit (prepareWanted).
func (t *Tx) stmt(query string) *sql.Stmt {
	if s := t.db.wstmts.get(query); s != nil {
		return t.tx.StmtContext(t.ctx, s)
	}
	if len(t.db.wanted) < maxCachedStmts {
		t.db.wanted = append(t.db.wanted, query)
	}
	return nil
}

// prepareWanted prepares, between transactions, the statements the last
// ones ran unprepared. Only the writer goroutine calls it.
func (db *DB) prepareWanted() {
	for _, q := range db.wanted {
		db.wstmts.prepare(context.Background(), db.w, q)
	}
	db.wanted = db.wanted[:0]
}
