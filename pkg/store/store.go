// Package store keeps bridge's routes, conversation mappings and the event
// journal, in one SQLite file (the default: one binary, one file) or in a
// PostgreSQL database that several bridge processes share.
//
// SQLite: every write of a running server goes through one writer goroutine
// that batches whatever is waiting into a single transaction (group
// commit), so concurrent webhooks share one fsync instead of queueing for
// one each. The database runs in WAL mode with synchronous=FULL: a commit
// has been fsync'd to the WAL when Write returns, so an acknowledged event
// survives a power loss, not only a crash of the process.
//
// PostgreSQL: see postgres.go. Each write is a transaction of its own on a
// pool of connections, committed with synchronous_commit on; PostgreSQL
// flushes the commits of concurrent transactions with one WAL fsync.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql migrations/postgres/*.sql
var migrations embed.FS

// migrationGlob is where each backend's numbered migrations are.
func (d dialect) migrationGlob() string {
	if d == postgresDialect {
		return "migrations/postgres/*.sql"
	}
	return "migrations/*.sql"
}

// BusyTimeout bounds how long a statement waits for another process's write
// lock. It stays well inside the webhook handler's budget (Chatwoot gives up
// after 5 s).
const BusyTimeout = 2 * time.Second

// RetryFor is how long Write keeps trying a write that failed for a
// transient reason (the file locked by another process past BusyTimeout, a
// full disk, an I/O error) before it reports the failure. A write with a
// deadline of its own (a webhook's) stops at that deadline.
const RetryFor = 10 * time.Second

// WAL policy: see dsn.
const (
	walAutocheckpoint = 1000     // pages (4 MiB)
	walSizeLimit      = 64 << 20 // bytes
	checkpointEvery   = 10 * time.Second
)

// maxBatch caps how many writes share one transaction, so one commit never
// holds up the first writer in line for long.
const maxBatch = 512

// ErrNotFound is returned when a row asked for by id does not exist.
var ErrNotFound = errors.New("not found")

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("store closed")

// ErrSchemaAhead is returned by Open when the database holds migrations
// this binary does not know: a newer bridge wrote it, and this one could
// misread what it does not know about.
var ErrSchemaAhead = errors.New("database schema is newer than this bridge")

// DB is an open bridge database.
type DB struct {
	// Path names the database: the SQLite file, or the PostgreSQL URL with
	// its password masked.
	Path string
	// Now is the clock for every timestamp the store writes (UTC).
	Now func() time.Time

	dialect  dialect
	readOnly bool
	owner    string        // this process, as lease_owner records it
	leaseTTL time.Duration // how long a claim lasts without renewal
	poolSize int
	pg       *pgState // PostgreSQL only

	redact   func(string) string
	busy     time.Duration
	retryFor time.Duration
	fault    atomic.Pointer[func() error]
	retries  atomic.Int64

	w *sql.DB // the one writing connection
	r *sql.DB // readers

	reqs    chan *writeReq
	stop    chan struct{}
	exited  chan struct{}
	wg      sync.WaitGroup
	closed  atomic.Bool
	commits atomic.Int64
	syncs   atomic.Int64
	writes  atomic.Int64

	// OnCommit, when set before Open returns work, is called after each
	// committed batch (workers use it to wake on new events).
	onCommit atomic.Pointer[func()]

	rstmts stmtCache // prepared on the reader pool
	wstmts stmtCache // prepared on the writer connection
	wanted []string  // writer only: queries to prepare after the commit
}

type writeReq struct {
	fn      func(*Tx) error
	done    chan error
	nosync  bool
	noRetry bool
}

// Option tunes Open.
type Option func(*DB)

// WithRedactor masks the free text the store writes (reasons, last errors,
// trace details, delivery ids, the bodies of rejected requests) with fn, so
// a credential echoed by an upstream never reaches the file.
func WithRedactor(fn func(string) string) Option { return func(db *DB) { db.redact = fn } }

// WithBusyTimeout sets how long a statement waits for another process's
// lock (default BusyTimeout).
func WithBusyTimeout(d time.Duration) Option { return func(db *DB) { db.busy = d } }

// WithRetry sets how long Write retries a transient failure (default
// RetryFor); 0 or less reports the first failure.
func WithRetry(d time.Duration) Option { return func(db *DB) { db.retryFor = d } }

// WithLease sets how long a claim on an event lasts without renewal
// (default LeaseTTL): the time after which another process sharing the
// database resumes the event of a process that died.
func WithLease(d time.Duration) Option {
	return func(db *DB) {
		if d > 0 {
			db.leaseTTL = d
		}
	}
}

// WithPool sets how many connections to PostgreSQL the store keeps at
// most (default 16); SQLite ignores it.
func WithPool(n int) Option {
	return func(db *DB) {
		if n > 0 {
			db.poolSize = n
		}
	}
}

// WithNow sets the clock before the writer starts (tests move time with
// it; setting DB.Now later would race with the writer).
func WithNow(now func() time.Time) Option { return func(db *DB) { db.Now = now } }

// SetCommitFault makes every commit call fn first; an error from it fails
// the commit as a full disk would (transient, retried by Write). nil
// removes it. It is the seam through which tests make the journal
// unwritable for a while.
func (db *DB) SetCommitFault(fn func() error) {
	if fn == nil {
		db.fault.Store(nil)
		return
	}
	db.fault.Store(&fn)
}

// text is s as the store writes it: masked by the redactor.
func (db *DB) text(s string) string {
	if db.redact == nil || s == "" {
		return s
	}
	return db.redact(s)
}

// Tx is a write transaction handed to a Write callback.
type Tx struct {
	tx  *sql.Tx
	ctx context.Context
	db  *DB
	now time.Time

	// PostgreSQL only: the transaction made an event ready for a worker,
	// and other processes are told once it commits.
	wake bool
	pg   *pgTx // PostgreSQL: the pipelined transaction

	laterErr error // SQLite: the first failure of a Later statement
}

// Now is the time the batch began; all rows written in it share the clock.
func (t *Tx) Now() time.Time { return t.now }

// Exec runs a statement in the transaction. The query is written with `?`
// placeholders (see dialect.go).
func (t *Tx) Exec(query string, args ...any) (sql.Result, error) {
	if t.pg != nil {
		tag, _, err := t.pg.roundTrip(rebind(query), pgArgs(args), false)
		if err != nil {
			return nil, err
		}
		return pgResult{tag}, nil
	}
	if s := t.stmt(query); s != nil {
		return s.ExecContext(t.ctx, args...)
	}
	return t.tx.ExecContext(t.ctx, query, args...)
}

// Later runs a statement whose result the caller does not need; what names
// it in an error. On PostgreSQL it waits for the transaction's next round
// trip (see pgtx.go); should it fail, that round trip fails with its error,
// and so does the write. On SQLite it runs at once, and a failure fails the
// write when its function returns.
func (t *Tx) Later(what, query string, args ...any) {
	t.later(what, query, args, nil)
}

func (t *Tx) later(what, query string, args []any, repair func(*Tx) error) {
	if t.pg != nil {
		t.pg.pending = append(t.pg.pending, later{what: what, sql: rebind(query), args: pgArgs(args), repair: repair})
		return
	}
	res, err := t.Exec(query, args...)
	if err == nil && repair != nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			err = repair(t)
		}
	}
	if err != nil && t.laterErr == nil {
		t.laterErr = fmt.Errorf("%s: %w", what, err)
	}
}

// QueryRow runs a query in the transaction.
func (t *Tx) QueryRow(query string, args ...any) Row {
	if t.pg != nil {
		_, rows, err := t.pg.roundTrip(rebind(query), pgArgs(args), true)
		if err != nil {
			return errRow{err}
		}
		return firstRow{rows}
	}
	if s := t.stmt(query); s != nil {
		return s.QueryRowContext(t.ctx, args...)
	}
	return t.tx.QueryRowContext(t.ctx, query, args...)
}

// Query runs a query in the transaction.
func (t *Tx) Query(query string, args ...any) (Rows, error) {
	if t.pg != nil {
		_, rows, err := t.pg.roundTrip(rebind(query), pgArgs(args), true)
		if err != nil {
			return nil, err
		}
		return rows, nil
	}
	if s := t.stmt(query); s != nil {
		return s.QueryContext(t.ctx, args...)
	}
	return t.tx.QueryContext(t.ctx, query, args...)
}

func dsn(path string, writer bool, busy time.Duration) string {
	q := []string{
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(FULL)",
		"_pragma=foreign_keys(1)",
		"_pragma=busy_timeout(" + strconv.Itoa(int(busy/time.Millisecond)) + ")",
	}
	if writer {
		q = append(q, "_txlock=immediate",
			// The WAL policy: SQLite checkpoints (PASSIVE) at the commit that
			// takes the WAL past walAutocheckpoint pages, the writer adds one
			// when it has been idle (checkpointEvery), and a WAL that grew
			// past walSizeLimit while readers held a checkpoint back is cut
			// back to that size when it restarts.
			"_pragma=wal_autocheckpoint("+strconv.Itoa(walAutocheckpoint)+")",
			"_pragma=journal_size_limit("+strconv.Itoa(walSizeLimit)+")")
	}
	return "file:" + path + "?" + strings.Join(q, "&")
}

// IsPostgres reports whether a database setting names a PostgreSQL
// database (a postgres:// or postgresql:// URL) rather than a SQLite file.
func IsPostgres(database string) bool {
	d := strings.ToLower(strings.TrimSpace(database))
	return strings.HasPrefix(d, "postgres://") || strings.HasPrefix(d, "postgresql://")
}

// SQLitePath is the file a database setting names: the setting itself, or
// what follows an explicit "sqlite:" (sqlite:bridge.db,
// sqlite:///var/lib/bridge/bridge.db).
func SQLitePath(database string) string {
	if p, ok := strings.CutPrefix(database, "sqlite:"); ok {
		if rest, ok := strings.CutPrefix(p, "//"); ok {
			return rest
		}
		return p
	}
	return database
}

// Display is a database setting as it may be shown or logged: a SQLite
// path as is, a PostgreSQL URL with its password masked.
func Display(database string) string {
	if !IsPostgres(database) {
		return SQLitePath(database)
	}
	return redactURL(database)
}

// Open opens the database a setting names: a PostgreSQL URL (see
// IsPostgres), or a SQLite file, created with mode 0600 if needed. It
// applies pending migrations, refuses a schema newer than this binary
// knows (ErrSchemaAhead), and starts the writer.
//
// An existing SQLite file that group or others may read is tightened to
// 0600: it holds customer messages and may hold Dify keys.
func Open(ctx context.Context, database string, opts ...Option) (*DB, error) {
	if IsPostgres(database) {
		return openPostgres(ctx, database, opts...)
	}
	path := SQLitePath(database)
	if path == "" {
		return nil, errors.New("open database: empty path")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open database %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	tighten(path)
	db := newDB(path, sqliteDialect)
	for _, o := range opts {
		o(db)
	}
	db.w, err = sql.Open("sqlite", dsn(path, true, db.busy))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.w.SetMaxOpenConns(1)
	db.w.SetMaxIdleConns(1)
	db.w.SetConnMaxLifetime(0)
	db.r, err = sql.Open("sqlite", dsn(path, false, db.busy))
	if err != nil {
		_ = db.w.Close() // the open error is the one worth reporting
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.r.SetMaxOpenConns(4)
	db.r.SetMaxIdleConns(4)
	if err := db.migrate(ctx); err != nil {
		_ = db.w.Close() // the migration error is the one worth reporting
		_ = db.r.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.wg.Go(db.writer)
	return db, nil
}

// newDB is a DB with the defaults both backends share.
func newDB(path string, d dialect) *DB {
	return &DB{Path: path, Now: time.Now, dialect: d, reqs: make(chan *writeReq, maxBatch), stop: make(chan struct{}),
		exited: make(chan struct{}), busy: BusyTimeout, retryFor: RetryFor, leaseTTL: LeaseTTL, poolSize: defaultPool,
		owner: newOwner()}
}

// tighten takes group and other permissions off the database and its WAL
// files (SQLite gives those the database's mode). A file bridge does not own
// keeps its mode; doctor reports it.
func tighten(path string) {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o077 != 0 {
			_ = os.Chmod(p, fi.Mode().Perm()&0o700) // best effort: doctor warns about a file still readable by others
		}
	}
}

// Close stops the writer after the writes already queued, then closes the
// connections.
func (db *DB) Close() error {
	if db.closed.Swap(true) {
		return nil
	}
	close(db.stop)
	db.wg.Wait()
	if db.dialect == postgresDialect {
		return db.closePostgres()
	}
	// Fold the WAL back so a copied file is self-contained.
	_, _ = db.w.Exec("PRAGMA wal_checkpoint(TRUNCATE)") // best effort: the WAL is replayed on next open anyway
	return errors.Join(db.wstmts.close(), db.rstmts.close(), db.w.Close(), db.r.Close())
}

// Commits reports how many transactions the writer committed and how many
// Write calls they carried; their ratio shows group commit at work.
func (db *DB) Commits() (commits, writes int64) { return db.commits.Load(), db.writes.Load() }

// Syncs reports how many of those commits were fsync'd (the others carried
// only NoSync writes).
func (db *DB) Syncs() int64 { return db.syncs.Load() }

// Retries reports how many times a write was tried again after a transient
// failure (a lock held by another process, a full disk).
func (db *DB) Retries() int64 { return db.retries.Load() }

// OnCommit registers fn to run after every committed batch.
func (db *DB) OnCommit(fn func()) { db.onCommit.Store(&fn) }

// Write runs fn in a transaction shared with whatever other writes are
// waiting, and returns once that transaction is durable. fn runs inside a
// savepoint: an error from it undoes its own changes only.
func (db *DB) Write(ctx context.Context, fn func(*Tx) error) error {
	return db.write(ctx, &writeReq{fn: fn, done: make(chan error, 1)})
}

// WriteNoSync is Write for records whose loss costs nothing, such as the
// webhooks bridge ignores: it returns once the transaction is committed
// (visible, and kept if the process dies), but the commit may skip its
// fsync, so a power loss can take the record back. A transaction is
// fsync'd unless every write in it came through WriteNoSync, and the next
// fsync'd commit makes earlier ones durable too.
func (db *DB) WriteNoSync(ctx context.Context, fn func(*Tx) error) error {
	return db.write(ctx, &writeReq{fn: fn, done: make(chan error, 1), nosync: true})
}

// write runs req, and tries again with backoff while it fails for a
// transient reason, for up to retryFor. The retries happen here, in the one
// write path, so that no caller turns a short lock or a full disk into a
// lost answer; a caller with a deadline (a webhook) gets the failure in
// time to answer it.
func (db *DB) write(ctx context.Context, req *writeReq) error {
	var deadline time.Time
	for attempt := 0; ; attempt++ {
		err := db.writeOnce(ctx, req)
		if err == nil || req.noRetry || db.retryFor <= 0 || !IsTransient(err) {
			return err
		}
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(db.retryFor)
		}
		wait := min(50*time.Millisecond<<min(attempt, 5), time.Second)
		if now.Add(wait).After(deadline) {
			return err
		}
		if dl, ok := ctx.Deadline(); ok && dl.Sub(now) < wait+db.busy {
			// Another try could not finish before the caller's deadline.
			return err
		}
		db.retries.Add(1)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		case <-db.stop:
			t.Stop()
			return err
		}
	}
}

func (db *DB) writeOnce(ctx context.Context, req *writeReq) error {
	if db.closed.Load() {
		return ErrClosed
	}
	if db.readOnly {
		return ErrReadOnly
	}
	if db.dialect == postgresDialect {
		return db.pgWrite(ctx, req)
	}
	select {
	case db.reqs <- req:
	case <-db.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued the write will be committed or failed; wait for the verdict
	// even if ctx ends, so a caller never acknowledges what it cannot know.
	select {
	case err := <-req.done:
		return err
	case <-db.exited:
		select {
		case err := <-req.done:
			return err
		default:
			return ErrClosed // queued after the writer's last drain: never run
		}
	}
}

func (db *DB) writer() {
	defer close(db.exited)
	batch := make([]*writeReq, 0, maxBatch)
	tick := time.NewTicker(checkpointEvery)
	defer tick.Stop()
	var checkpointed int64
	for {
		batch = batch[:0]
		select {
		case <-tick.C:
			// Backfill what a busy period left in the WAL, between
			// transactions; PASSIVE never waits for readers.
			if c := db.commits.Load(); c != checkpointed {
				checkpointed = c
				_, _ = db.w.Exec("PRAGMA wal_checkpoint(PASSIVE)") // best effort: the next automatic checkpoint retries
			}
			continue
		case req := <-db.reqs:
			batch = append(batch, req)
		case <-db.stop:
			// Drain what was queued before the stop.
			for {
				select {
				case req := <-db.reqs:
					db.commit([]*writeReq{req})
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case req := <-db.reqs:
				batch = append(batch, req)
			default:
				break fill
			}
		}
		db.commit(batch)
	}
}

func (db *DB) commit(batch []*writeReq) {
	defer db.prepareWanted()
	ctx := context.Background()
	errs := make([]error, len(batch))
	fail := func(err error) {
		for _, r := range batch {
			r.done <- err
		}
	}
	sync := false
	for _, r := range batch {
		sync = sync || !r.nosync
	}
	if !sync {
		// In WAL mode synchronous=NORMAL commits without an fsync; the next
		// FULL commit's fsync covers these frames too, and a checkpoint
		// still syncs the WAL first. The level can change only between
		// transactions.
		if _, err := db.w.ExecContext(ctx, "PRAGMA synchronous = NORMAL"); err != nil {
			sync = true // commit durably instead
		} else {
			defer db.restoreSync(ctx)
		}
	}
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		fail(fmt.Errorf("begin: %w", err))
		return
	}
	t := &Tx{tx: tx, ctx: ctx, db: db, now: db.Now().UTC()}
	if len(batch) == 1 {
		// Alone in the transaction: its error undoes the whole of it, with
		// no savepoint needed.
		if err := safeCall(batch[0].fn, t); err != nil {
			_ = tx.Rollback() // the write's own error is the one to report
			batch[0].done <- err
			return
		}
	} else {
		for i, r := range batch {
			if _, err := t.Exec("SAVEPOINT w"); err != nil {
				errs[i] = err
				continue
			}
			errs[i] = safeCall(r.fn, t)
			if errs[i] != nil {
				if _, err := t.Exec("ROLLBACK TO w"); err != nil {
					_ = tx.Rollback() // the savepoint failure is reported to everyone
					fail(fmt.Errorf("rollback to savepoint: %w", err))
					return
				}
			}
			if _, err := t.Exec("RELEASE w"); err != nil {
				_ = tx.Rollback() // the release failure is reported to everyone
				fail(fmt.Errorf("release savepoint: %w", err))
				return
			}
		}
	}
	if fn := db.fault.Load(); fn != nil {
		if err := (*fn)(); err != nil {
			_ = tx.Rollback() // the injected failure is the one to report
			fail(fmt.Errorf("commit: %w", &injectedError{err}))
			return
		}
	}
	if err := tx.Commit(); err != nil {
		fail(fmt.Errorf("commit: %w", err))
		return
	}
	if sync {
		db.syncs.Add(1)
	}
	db.commits.Add(1)
	db.writes.Add(int64(len(batch)))
	for i, r := range batch {
		r.done <- errs[i]
	}
	if fn := db.onCommit.Load(); fn != nil {
		(*fn)()
	}
}

// restoreSync puts the writer back at synchronous=FULL after a NoSync
// commit. A connection that cannot be set back is closed, and the next
// write opens a fresh one with the DSN's synchronous=FULL.
func (db *DB) restoreSync(ctx context.Context) {
	if _, err := db.w.ExecContext(ctx, "PRAGMA synchronous = FULL"); err != nil {
		db.w.SetMaxIdleConns(0)
		db.w.SetMaxIdleConns(1)
	}
}

func safeCall(fn func(*Tx) error, t *Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("write panicked: %v", r)
		}
	}()
	t.laterErr = nil
	if err = fn(t); err == nil {
		err = t.laterErr
	}
	return err
}

// Durability reports the journal mode and synchronous level in force on the
// writer connection, the one every commit goes through ("wal", "FULL"). On
// PostgreSQL they are "postgres" and the synchronous_commit a write
// transaction runs with ("on"), with ", fsync off" added when the server
// does not flush at all.
func (db *DB) Durability(ctx context.Context) (journalMode, synchronous string, err error) {
	if db.dialect == postgresDialect {
		return db.pgDurability(ctx)
	}
	var level int
	err = db.Write(ctx, func(tx *Tx) error {
		if err := tx.QueryRow("PRAGMA journal_mode").Scan(&journalMode); err != nil {
			return err
		}
		return tx.QueryRow("PRAGMA synchronous").Scan(&level)
	})
	if err != nil {
		return "", "", fmt.Errorf("read durability settings: %w", err)
	}
	names := []string{"OFF", "NORMAL", "FULL", "EXTRA"}
	if level < 0 || level >= len(names) {
		return journalMode, strconv.Itoa(level), nil
	}
	return journalMode, names[level], nil
}

// Reader runs read queries (and, for tests and repairs, statements outside
// the writer) on the reader pool, written in the shared dialect with `?`
// placeholders. On SQLite reads never wait on the writer in WAL mode.
func (db *DB) Reader() *Reader { return &Reader{db: db} }

// Reader is the query side of a DB; see DB.Reader.
type Reader struct{ db *DB }

func (r *Reader) prep(query string, args []any) (string, []any) {
	if r.db.dialect == postgresDialect {
		return rebind(query), pgArgs(args)
	}
	return query, args
}

// QueryContext runs a query.
func (r *Reader) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	query, args = r.prep(query, args)
	return r.db.r.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a query for one row.
func (r *Reader) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	query, args = r.prep(query, args)
	return r.db.r.QueryRowContext(ctx, query, args...)
}

// QueryRow is QueryRowContext without a context.
func (r *Reader) QueryRow(query string, args ...any) *sql.Row {
	return r.QueryRowContext(context.Background(), query, args...)
}

// ExecContext runs a statement outside the writer: only tests and repairs
// do, never a running server.
func (r *Reader) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	query, args = r.prep(query, args)
	return r.db.r.ExecContext(ctx, query, args...)
}

// Ping checks that the database answers and is writable: it runs a write
// through the writer that inserts and removes a row, so the commit reaches
// the disk (a write that changes nothing commits nothing, and would not
// notice a full disk or a read-only file system). It tries once: it reports
// how the journal is now, not whether it recovers.
func (db *DB) Ping(ctx context.Context) error {
	return db.write(ctx, &writeReq{done: make(chan error, 1), noRetry: true, fn: func(tx *Tx) error {
		if _, err := tx.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (-1, 'ping', 0)"); err != nil {
			return err
		}
		_, err := tx.Exec("DELETE FROM schema_migrations WHERE version = -1")
		return err
	}})
}

// migrate applies the migrations the database lacks, each in a
// transaction of its own that also records it. On PostgreSQL each first
// takes a lock that every process sharing the database takes, so replicas
// starting together apply each migration once. It then refuses a schema
// newer than this binary knows.
func (db *DB) migrate(ctx context.Context) error {
	names, err := fs.Glob(migrations, db.dialect.migrationGlob())
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		if err := db.applyMigration(ctx, name); err != nil {
			return err
		}
	}
	applied, known, err := db.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if applied > known {
		return fmt.Errorf("%w (version %d, this bridge knows up to %d): upgrade bridge", ErrSchemaAhead, applied, known)
	}
	return nil
}

func (db *DB) applyMigration(ctx context.Context, name string) error {
	base := filepath.Base(name)
	v, err := migrationVersion(base)
	if err != nil {
		return err
	}
	const create = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`
	q := db.sqlFor
	if db.dialect == sqliteDialect {
		// Outside a transaction: an existing table is no write, so a start
		// while another process holds the write lock waits only if there is
		// something to migrate.
		if _, err := db.w.ExecContext(ctx, create); err != nil {
			return fmt.Errorf("create migrations table: %w", err)
		}
	}
	// Applied already (the common case): no write, no lock.
	var n int
	if err := db.w.QueryRowContext(ctx, q("SELECT count(*) FROM schema_migrations WHERE version = ?"), v).Scan(&n); err == nil && n > 0 {
		return nil
	}
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migration %s: %w", base, err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit; otherwise the error below is the one worth reporting
	if db.dialect == postgresDialect {
		// A migration (an index on a big journal) may take longer than the
		// store's usual bounds, and so may waiting for another process's.
		if _, err := tx.ExecContext(ctx, "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0"); err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", db.pg.lockKey("migrate")); err != nil {
			return fmt.Errorf("migration %s: lock: %w", base, err)
		}
	}
	if _, err := tx.ExecContext(ctx, create); err != nil {
		return fmt.Errorf("create migrations table: %w", err)
	}
	if err := tx.QueryRowContext(ctx, q("SELECT count(*) FROM schema_migrations WHERE version = ?"), v).Scan(&n); err != nil {
		return fmt.Errorf("migration %s: %w", base, err)
	}
	if n > 0 {
		return nil
	}
	body, err := migrations.ReadFile(name)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return fmt.Errorf("migration %s: %w", base, err)
	}
	if _, err := tx.ExecContext(ctx, q("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"),
		v, base, db.Now().UnixMilli()); err != nil {
		return fmt.Errorf("migration %s: %w", base, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migration %s: %w", base, err)
	}
	return nil
}

func migrationVersion(base string) (int, error) {
	v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
	if err != nil {
		return 0, fmt.Errorf("migration %s: bad name: %w", base, err)
	}
	return v, nil
}

// KnownVersions lists the migration numbers this binary has for a backend
// ("sqlite" or "postgres"), in order.
func KnownVersions(backend string) []int {
	d := sqliteDialect
	if backend == "postgres" {
		d = postgresDialect
	}
	names, _ := fs.Glob(migrations, d.migrationGlob()) // the pattern is constant and valid
	var out []int
	for _, name := range names {
		if v, err := migrationVersion(filepath.Base(name)); err == nil {
			out = append(out, v)
		}
	}
	sort.Ints(out)
	return out
}

// SchemaVersion reports the newest applied migration and the newest this
// binary knows.
func (db *DB) SchemaVersion(ctx context.Context) (applied, known int, err error) {
	if err := db.r.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&applied); err != nil {
		return 0, 0, fmt.Errorf("read schema version: %w", err)
	}
	if vs := KnownVersions(db.Backend()); len(vs) > 0 {
		known = vs[len(vs)-1]
	}
	return applied, known, nil
}

// Backend names the kind of database: "sqlite" or "postgres".
func (db *DB) Backend() string {
	if db.dialect == postgresDialect {
		return "postgres"
	}
	return "sqlite"
}

// Writers reports how many writes can run at once: one on SQLite (its one
// writer, which batches them), the pool's connections on PostgreSQL.
func (db *DB) Writers() int {
	if db.dialect == postgresDialect {
		return db.poolSize
	}
	return 1
}

// Shared reports whether other bridge processes may use the database at
// the same time as this one (PostgreSQL): events are then claimed with
// leases that other processes take over when they run out.
func (db *DB) Shared() bool { return db.dialect == postgresDialect }

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}
