package store

// A PostgreSQL write transaction on a native pgx connection, pipelined.
//
// Over loopback on a small machine a round trip to PostgreSQL costs far
// more CPU (two system calls and a wake-up on each side) than the
// statement it carries: a webhook's transaction of eight statements spent
// most of its time in round trips. So the transaction sends as few as it
// can, in order:
//
//   - BEGIN travels with the first statement;
//   - statements whose result the caller does not need (Tx.Later: trace
//     hops, upserts, records) wait and travel with the next statement that
//     needs an answer, or with COMMIT;
//   - a statement that needs an answer (Exec, QueryRow, Query) is sent with
//     whatever waits, in one pipeline, and its rows are read at once.
//
// A waiting statement that fails makes the next round trip fail with its
// error, and the transaction with it, as if the caller had seen it.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Row is one row of a query; Scan reports sql.ErrNoRows when it found none.
type Row interface {
	Scan(dest ...any) error
}

// Rows are the rows of a query.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// later is a statement waiting for the next round trip. repair, when set,
// runs in a transaction of its own after the commit if the statement
// changed no row (a trace hop that lost its seq to a concurrent writer).
type later struct {
	what   string
	sql    string
	args   []any
	repair func(*Tx) error
}

type pgTx struct {
	conn    *pgx.Conn
	ctx     context.Context
	begun   bool
	pending []later
	repairs []func(*Tx) error
	failed  error // the transaction is aborted: everything after fails
}

// stmt is one statement of a round trip; query: its rows are read.
type stmt struct {
	sql   string
	args  []any
	query bool
}

// result is what a statement of a round trip returned.
type result struct {
	tag  pgconn.CommandTag
	rows *bufferedRows
}

// roundTrip sends BEGIN if not sent yet, the waiting statements and q (when
// not empty), in one pipeline, and returns q's result.
func (p *pgTx) roundTrip(q string, args []any, query bool) (pgconn.CommandTag, *bufferedRows, error) {
	var stmts []stmt
	if q != "" {
		stmts = []stmt{{sql: q, args: args, query: query}}
	}
	res, err := p.send(stmts)
	if err != nil || len(res) == 0 {
		return pgconn.CommandTag{}, nil, err
	}
	return res[0].tag, res[0].rows, nil
}

// send sends BEGIN if not sent yet, the waiting statements and stmts, in
// one pipeline, and returns the results of stmts.
func (p *pgTx) send(stmts []stmt) ([]result, error) {
	if p.failed != nil {
		return nil, p.failed
	}
	b := &pgx.Batch{}
	if !p.begun {
		b.Queue("BEGIN")
	}
	for _, l := range p.pending {
		b.Queue(l.sql, l.args...)
	}
	for _, s := range stmts {
		b.Queue(s.sql, s.args...)
	}
	if b.Len() == 0 {
		return nil, nil
	}
	pending := p.pending
	p.pending = nil
	br := p.conn.SendBatch(p.ctx, b)
	err := func() error {
		if !p.begun {
			if _, err := br.Exec(); err != nil {
				// Before any statement ran: preparing one of them failed.
				return fmt.Errorf("%s: %w", describe(pending), err)
			}
			p.begun = true
		}
		for _, l := range pending {
			tag, err := br.Exec()
			if err != nil {
				return fmt.Errorf("%s: %w", l.what, err)
			}
			if l.repair != nil && tag.RowsAffected() == 0 {
				p.repairs = append(p.repairs, l.repair)
			}
		}
		return nil
	}()
	out := make([]result, len(stmts))
	for i, s := range stmts {
		if err != nil {
			break
		}
		if s.query {
			out[i].rows, err = readRows(br, p.conn)
		} else {
			out[i].tag, err = br.Exec()
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		p.failed = err
		return nil, err
	}
	return out, nil
}

// describe names the statements sent later in a failed pipeline.
func describe(pending []later) string {
	if len(pending) == 0 {
		return "begin"
	}
	whats := make([]string, len(pending))
	for i, l := range pending {
		whats[i] = l.what
	}
	return "begin, " + strings.Join(whats, ", ")
}

// readRows reads a query's rows from the pipeline, copying their raw values
// (pgx reuses its buffers), so that the connection is free before the
// caller scans them.
func readRows(br pgx.BatchResults, conn *pgx.Conn) (*bufferedRows, error) {
	rs, err := br.Query()
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	// pgx reuses the descriptions' slice for the next result: copy it.
	out := &bufferedRows{conn: conn, fields: append([]pgconn.FieldDescription(nil), rs.FieldDescriptions()...), at: -1}
	for rs.Next() {
		raw := rs.RawValues()
		row := make([][]byte, len(raw))
		for i, v := range raw {
			if v != nil {
				row[i] = append(make([]byte, 0, len(v)), v...)
			}
		}
		out.rows = append(out.rows, row)
	}
	return out, rs.Err()
}

// commit sends the waiting statements with COMMIT. A transaction that sent
// nothing has nothing to commit.
func (p *pgTx) commit() error {
	if p.failed != nil {
		return p.failed
	}
	if !p.begun && len(p.pending) == 0 {
		return nil
	}
	tag, _, err := p.roundTrip("COMMIT", nil, false)
	if err != nil {
		return err
	}
	if tag.String() != "COMMIT" {
		// PostgreSQL answers ROLLBACK to the COMMIT of an aborted
		// transaction.
		return fmt.Errorf("transaction rolled back by the server (%s)", tag.String())
	}
	return nil
}

// rollback ends the transaction if it began; false when the connection is
// in no state to be used again.
func (p *pgTx) rollback() bool {
	p.pending = nil
	if p.conn.PgConn().TxStatus() == 'I' {
		return true
	}
	_, err := p.conn.Exec(p.ctx, "ROLLBACK")
	return err == nil && p.conn.PgConn().TxStatus() == 'I'
}

// bufferedRows are a query's rows, read in full.
type bufferedRows struct {
	conn   *pgx.Conn
	fields []pgconn.FieldDescription
	rows   [][][]byte
	at     int
	err    error
}

func (r *bufferedRows) Next() bool {
	if r.at+1 >= len(r.rows) {
		r.at = len(r.rows)
		return false
	}
	r.at++
	return true
}

func (r *bufferedRows) Scan(dest ...any) error {
	if r.at < 0 || r.at >= len(r.rows) {
		return errors.New("scan called without a row")
	}
	return pgx.ScanRow(r.conn.TypeMap(), r.fields, r.rows[r.at], dest...)
}

func (r *bufferedRows) Err() error   { return r.err }
func (r *bufferedRows) Close() error { return nil }

// errRow is a Row whose query failed.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// firstRow is a Row read from buffered rows.
type firstRow struct{ rows *bufferedRows }

func (r firstRow) Scan(dest ...any) error {
	if !r.rows.Next() {
		return sql.ErrNoRows
	}
	return r.rows.Scan(dest...)
}

// pgResult is the sql.Result of a statement.
type pgResult struct{ tag pgconn.CommandTag }

func (r pgResult) LastInsertId() (int64, error) {
	return 0, errors.New("LastInsertId is not supported by PostgreSQL: use RETURNING")
}
func (r pgResult) RowsAffected() (int64, error) { return r.tag.RowsAffected(), nil }

// pgRun runs fn in a pipelined transaction on one pool connection, and
// reports the repairs its waiting statements asked for.
func (db *DB) pgRun(ctx context.Context, pool *sql.DB, fn func(*Tx) error, t *Tx) (repairs []func(*Tx) error, err error) {
	conn, err := pool.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer conn.Close()
	var txErr error // the transaction's own error; Raw's may be ErrBadConn
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(interface{ Conn() *pgx.Conn })
		if !ok {
			txErr = fmt.Errorf("begin: unexpected driver connection %T", dc)
			return txErr
		}
		p := &pgTx{conn: c.Conn(), ctx: t.ctx}
		t.pg = p
		if txErr = safeCall(fn, t); txErr == nil && p.failed == nil {
			if f := db.fault.Load(); f != nil {
				if err := (*f)(); err != nil {
					txErr = fmt.Errorf("commit: %w", &injectedError{err})
				}
			}
		}
		if txErr == nil && p.failed != nil {
			txErr = p.failed // a waiting statement failed, and the caller did not look
		}
		if txErr == nil {
			if err := p.commit(); err != nil {
				txErr = fmt.Errorf("commit: %w", commitError(err))
			}
		}
		if txErr != nil {
			if !p.rollback() {
				return driver.ErrBadConn // database/sql drops the connection
			}
			return txErr
		}
		repairs = p.repairs
		return nil
	})
	if txErr != nil {
		return nil, txErr
	}
	return repairs, err
}
