package store

// PostgreSQL backend, through pgx: its database/sql driver (stdlib) keeps
// the pool, and serves reads, so that Reader and the scan helpers are the
// same for both backends; a write transaction runs on the native side of
// its pool connection, pipelined (pgtx.go); a native connection of its own
// carries LISTEN, which database/sql cannot express.
//
// Writes: each Write is a transaction of its own on a pool connection,
// committed with synchronous_commit on (set on every connection, whatever
// the server's or role's default), so Write returns after the commit
// record is flushed. There is no writer goroutine: PostgreSQL already
// flushes the commits of concurrent transactions with one WAL write and
// fsync, and batching several webhooks into one transaction would make two
// replicas' batches lock the same conversations in opposite orders and
// deadlock.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// LeaseTTL is how long a claim on an event lasts unless the process holding
// it renews it, which it does every third of that: the longest an event of
// a process that died waits before another process resumes it.
const LeaseTTL = 15 * time.Second

// defaultPool is how many connections a store keeps to PostgreSQL at most.
const defaultPool = 16

// pgState is what only a PostgreSQL store has.
type pgState struct {
	cfg    *pgx.ConnConfig
	schema string // current_schema(): namespaces locks and notifications
	// nosync is a pool whose connections commit without waiting for the
	// WAL flush (synchronous_commit off), for WriteNoSync: a SET LOCAL in
	// each transaction would cost a round trip.
	nosync *sql.DB

	notifier *notifier
}

// redactURL masks the password of a database URL.
func redactURL(dsn string) string {
	u, err := url.Parse(strings.TrimSpace(dsn))
	if err != nil {
		return "postgres://(unparseable URL)"
	}
	return u.Redacted()
}

// URLPassword is the password a PostgreSQL URL carries ("" if none), for
// the redactor: it must never be shown.
func URLPassword(dsn string) string {
	u, err := url.Parse(strings.TrimSpace(dsn))
	if err != nil || u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	return p
}

func pgConfig(dsn string, readOnly bool) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(strings.TrimSpace(dsn))
	if err != nil {
		// pgx's message quotes the URL: keep only what follows it.
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return nil, fmt.Errorf("bad PostgreSQL URL: %s", msg)
	}
	// Durability is the store's promise, not the server's default to give.
	cfg.RuntimeParams["synchronous_commit"] = "on"
	// Bounds kept by the server rather than by a context on every query
	// (which costs pgx and database/sql a goroutine per statement): a
	// statement, a lock wait, a transaction whose client went quiet. The
	// URL may set others.
	for k, v := range map[string]string{"application_name": "bridge", "statement_timeout": "30s", "lock_timeout": "10s",
		"idle_in_transaction_session_timeout": "60s"} {
		if cfg.RuntimeParams[k] == "" {
			cfg.RuntimeParams[k] = v
		}
	}
	if readOnly {
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
	}
	return cfg, nil
}

func openPostgres(ctx context.Context, dsn string, opts ...Option) (*DB, error) {
	db := newDB(redactURL(dsn), postgresDialect)
	for _, o := range opts {
		o(db)
	}
	if err := db.connectPostgres(ctx, dsn, false); err != nil {
		return nil, err
	}
	if err := db.migrate(ctx); err != nil {
		_ = db.closePostgres() // the migration error is the one worth reporting
		return nil, fmt.Errorf("open database %s: %w", db.Path, err)
	}
	db.pg.notifier = newNotifier(db)
	db.wg.Go(db.pg.notifier.run)
	close(db.exited) // no writer goroutine: writes run on the caller's goroutine
	return db, nil
}

func openPostgresReadOnly(ctx context.Context, dsn string) (*DB, error) {
	db := newDB(redactURL(dsn), postgresDialect)
	db.readOnly = true
	db.poolSize = 4
	if err := db.connectPostgres(ctx, dsn, true); err != nil {
		return nil, err
	}
	if err := db.checkReadable(ctx); err != nil {
		_ = db.closePostgres() // nothing was read
		return nil, err
	}
	close(db.exited)
	return db, nil
}

// connectPostgres opens the pool and checks the server answers.
func (db *DB) connectPostgres(ctx context.Context, dsn string, readOnly bool) error {
	cfg, err := pgConfig(dsn, readOnly)
	if err != nil {
		return fmt.Errorf("open database %s: %w", db.Path, err)
	}
	pool := stdlib.OpenDB(*cfg)
	pool.SetMaxOpenConns(db.poolSize)
	pool.SetMaxIdleConns(db.poolSize)
	pool.SetConnMaxIdleTime(5 * time.Minute)
	db.w, db.r = pool, pool
	db.pg = &pgState{cfg: cfg}
	if !readOnly {
		async := cfg.Copy()
		async.RuntimeParams["synchronous_commit"] = "off"
		db.pg.nosync = stdlib.OpenDB(*async)
		db.pg.nosync.SetMaxOpenConns(max(db.poolSize/2, 2))
		db.pg.nosync.SetMaxIdleConns(max(db.poolSize/2, 2))
		db.pg.nosync.SetConnMaxIdleTime(5 * time.Minute)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.QueryRowContext(pctx, "SELECT current_schema()").Scan(&db.pg.schema); err != nil {
		_ = db.closePostgres() // the connection error is the one worth reporting
		return fmt.Errorf("open database %s: %w", db.Path, err)
	}
	return nil
}

func (db *DB) closePostgres() error {
	var err error
	if db.pg.nosync != nil {
		err = db.pg.nosync.Close()
	}
	return errors.Join(err, db.w.Close())
}

// lockKey is the advisory lock key of name in this schema: tests and
// tenants sharing one database in different schemas never wait on each
// other.
func (p *pgState) lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(p.schema))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return int64(h.Sum64())
}

// channel is the NOTIFY channel of this schema.
func (p *pgState) channel() string {
	c := "bridge_" + p.schema
	if len(c) > 63 {
		h := fnv.New64a()
		h.Write([]byte(p.schema))
		c = fmt.Sprintf("bridge_%x", h.Sum64())
	}
	return c
}

// conversationKey is the advisory lock of one conversation.
func (p *pgState) conversationKey(account, conv int64) int64 {
	return p.lockKey(fmt.Sprintf("conversation %d %d", account, conv))
}

// pgWrite runs one write in a transaction of its own. The pool slot is
// waited for within ctx; once the transaction began it runs to its verdict
// whatever ctx does (bounded by the server's statement and lock timeouts),
// so that a caller never acknowledges, or reports as failed, a write it
// cannot know the fate of.
func (db *DB) pgWrite(ctx context.Context, req *writeReq) error {
	pool := db.w
	if req.nosync {
		// Committed (visible, kept if the process dies) but not waited
		// for: the next synchronous commit flushes it too.
		pool = db.pg.nosync
	}
	t := &Tx{ctx: context.WithoutCancel(ctx), db: db, now: db.Now().UTC()}
	repairs, err := db.pgRun(ctx, pool, req.fn, t)
	if err != nil {
		return err
	}
	if !req.nosync {
		db.syncs.Add(1)
	}
	db.commits.Add(1)
	db.writes.Add(1)
	if t.wake {
		db.pg.notifier.work()
	}
	if fn := db.onCommit.Load(); fn != nil {
		(*fn)()
	}
	for _, fn := range repairs {
		// A statement that lost a race to a concurrent writer (a hop's
		// seq) is made again on its own, after the write it rode with.
		// The write itself is committed: its caller must hear so, so the
		// repair is best effort (with the retries of every write).
		_ = db.write(ctx, &writeReq{fn: fn, nosync: req.nosync})
	}
	return nil
}

func (db *DB) pgDurability(ctx context.Context) (journalMode, synchronous string, err error) {
	var fsync string
	err = db.Write(ctx, func(tx *Tx) error {
		if err := tx.QueryRow("SELECT current_setting('synchronous_commit')").Scan(&synchronous); err != nil {
			return err
		}
		return tx.QueryRow("SELECT current_setting('fsync')").Scan(&fsync)
	})
	if err != nil {
		return "", "", fmt.Errorf("read durability settings: %w", err)
	}
	if fsync != "on" {
		synchronous += ", fsync " + fsync
	}
	return "postgres", synchronous, nil
}

// ---- notifications between processes sharing the database ----

// Signals other processes sharing a PostgreSQL database are sent.
const (
	// SignalWork: an event became ready for a worker (accepted, put back
	// in the queue, or the one before it in its conversation finished).
	// The store sends it by itself after such a commit.
	SignalWork = "work"
	// SignalTakeover: a human took a conversation over; the payload is
	// "account:conversation". A process streaming an answer for it stops.
	SignalTakeover = "takeover"
)

// Notify tells the other processes sharing the database of something
// (SignalTakeover and the like), without waiting: it is a hint that saves
// them a poll, never the only way they learn it. On SQLite, which one
// process serves, it does nothing.
func (db *DB) Notify(kind, payload string) {
	if db.pg == nil || db.pg.notifier == nil {
		return
	}
	db.pg.notifier.send(kind + "|" + payload)
}

// Subscribe calls fn with the signals other processes sharing the database
// send (kind, payload), from one goroutine, until Close. A connection lost
// and found again is reported as a SignalWork, since signals may have been
// missed meanwhile. On SQLite fn is never called.
func (db *DB) Subscribe(fn func(kind, payload string)) {
	if db.pg == nil || db.readOnly || db.closed.Load() {
		return
	}
	db.wg.Go(func() { db.listen(fn) })
}

// notifier sends NOTIFYs from one goroutine, outside any write: a NOTIFY in
// the committing transaction would serialise commits on PostgreSQL's
// notification queue lock. Work signals are coalesced (at most one per
// workEvery); others are sent in order.
type notifier struct {
	db      *DB
	kick    chan struct{}
	mu      sync.Mutex
	pending bool
	queue   []string
}

const (
	workEvery     = 5 * time.Millisecond
	maxQueuedSigs = 1024
)

func newNotifier(db *DB) *notifier { return &notifier{db: db, kick: make(chan struct{}, 1)} }

func (n *notifier) work() {
	n.mu.Lock()
	n.pending = true
	n.mu.Unlock()
	n.wake()
}

func (n *notifier) send(msg string) {
	n.mu.Lock()
	if len(n.queue) < maxQueuedSigs { // beyond that the receivers' polls catch up
		n.queue = append(n.queue, msg)
	}
	n.mu.Unlock()
	n.wake()
}

func (n *notifier) wake() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *notifier) run() {
	var last time.Time
	for {
		select {
		case <-n.kick:
		case <-n.db.stop:
			n.flush(true) // a last work signal, e.g. for the leases given back at shutdown
			return
		}
		if wait := workEvery - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-n.db.stop:
				t.Stop()
				n.flush(true)
				return
			}
		}
		last = time.Now()
		n.flush(false)
	}
}

func (n *notifier) flush(final bool) {
	n.mu.Lock()
	msgs := n.queue
	n.queue = nil
	if n.pending {
		msgs = append(msgs, SignalWork+"|")
		n.pending = false
	}
	n.mu.Unlock()
	if len(msgs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ch := n.db.pg.channel()
	for _, m := range msgs {
		// Best effort: a lost signal costs a receiver at most its poll.
		_, _ = n.db.w.ExecContext(ctx, "SELECT pg_notify($1, $2)", ch, n.db.owner+"|"+m)
		if final && ctx.Err() != nil {
			return
		}
	}
}

// listen holds a LISTEN connection until Close, reconnecting after a loss.
func (db *DB) listen(fn func(kind, payload string)) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-db.stop:
		case <-ctx.Done():
		}
		cancel()
	}()
	defer cancel()
	backoff := 100 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		conn, err := pgx.ConnectConfig(ctx, db.pg.cfg.Copy())
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{db.pg.channel()}.Sanitize())
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			if !first {
				fn(SignalWork, "") // whatever was sent while the connection was down
			}
			err = db.receive(ctx, conn, fn)
		}
		if conn != nil {
			cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(cctx) // the connection is being replaced or the store closed
			ccancel()
		}
		if ctx.Err() != nil {
			return
		}
		_ = err // the poll covers the time without a listener
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (db *DB) receive(ctx context.Context, conn *pgx.Conn, fn func(kind, payload string)) error {
	prefix := db.owner + "|"
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if strings.HasPrefix(n.Payload, prefix) {
			continue // this process's own
		}
		_, rest, ok := strings.Cut(n.Payload, "|")
		if !ok {
			continue
		}
		kind, payload, _ := strings.Cut(rest, "|")
		fn(kind, payload)
	}
}

// errCommitUnknown marks a commit whose outcome is unknown: the connection
// failed after COMMIT was sent. It is a storage failure but never retried,
// since the write may have landed.
var errCommitUnknown = errors.New("outcome unknown")

func commitError(err error) error {
	if isPgError(err) || errors.Is(err, sql.ErrTxDone) {
		return err // the server refused the commit: nothing landed
	}
	return fmt.Errorf("%w: %w", errCommitUnknown, err)
}
