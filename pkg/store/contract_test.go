package store

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/store/pgtest"
)

// backend is one kind of database the contract suite runs against.
type backend struct {
	name string
	// database returns the setting of a fresh, empty database for t.
	database func(t *testing.T) string
}

func (b backend) open(t *testing.T, opts ...Option) *DB {
	t.Helper()
	db, err := Open(t.Context(), b.database(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

var (
	sqliteBackend = backend{name: "sqlite", database: func(t *testing.T) string {
		return filepath.Join(t.TempDir(), "bridge.db")
	}}
	postgresBackend = backend{name: "postgres", database: func(t *testing.T) string { return pgtest.URL(t) }}
)

// TestContract runs what the store promises against every backend:
// SQLite always, PostgreSQL when BRIDGE_TEST_POSTGRES names a server (and
// then the run fails if the server cannot be used).
func TestContract(t *testing.T) {
	tests := []struct {
		name string
		fn   func(*testing.T, backend)
	}{
		{"ReopenKeepsData", testReopenKeepsData},
		{"WriteErrorUndoesOnlyItsOwnChanges", testWriteErrorUndoesOnlyItsOwnChanges},
		{"SchemaAheadRefused", testSchemaAheadRefused},
		{"EventsAndSteps", testEventsAndSteps},
		{"RetentionDeletesOnlyOldIgnored", testRetentionDeletesOnlyOldIgnored},
		{"Conversations", testConversations},
		{"Routes", testRoutes},
		{"RouteIDsAreNeverReused", testRouteIDsAreNeverReused},
		{"StatusSnapshots", testStatusSnapshots},
		{"Intents", testIntents},
		{"ConversationTrace", testConversationTrace},
		{"ConversationMessages", testConversationMessages},
		{"OpenReadOnlyReadsAndRefusesWrites", testOpenReadOnlyReadsAndRefusesWrites},
		{"CommitFault", testCommitFault},
		{"RedactorMasksWhatIsWritten", testRedactorMasksWhatIsWritten},
		{"StaleWorking", testStaleWorking},
		{"ClaimOnce", testClaimOnce},
		{"ConcurrentHops", testConcurrentHops},
		{"TextThatIsNotUTF8", testTextThatIsNotUTF8},
		{"Durable", testDurable},
		{"FairQueueQueries", testFairQueueQueries},
		{"RouteMaxInFlight", testRouteMaxInFlight},
		{"OwnershipJournal", testOwnershipJournal},
		{"ConvLifecycle", testConvLifecycle},
		{"IdleHuman", testIdleHuman},
		{"RouteLifecycleSettings", testRouteLifecycleSettings},
		{"Stats", testStats},
		{"PruneOwnership", testPruneOwnership},
		{"RichMessageTables", testRichMessageTables},
		{"IngestView", testIngestView},
		{"LaterFailureFailsWrite", testLaterFailureFailsWrite},
		{"Writers", testWriters},
	}
	shared := []struct {
		name string
		fn   func(*testing.T, backend)
	}{
		{"ClaimKeepsConversationOrder", testClaimKeepsConversationOrder},
		{"ConversationLockSerialises", testConversationLockSerialises},
		{"IngestViewSeesTheWebhookBefore", testIngestViewSeesTheWebhookBefore},
		{"ConnectionLostMidWrite", testConnectionLostMidWrite},
		{"RecordPostLockOrder", testRecordPostLockOrder},
		{"LeaseExpiresAndIsReclaimed", testLeaseExpiresAndIsReclaimed},
		{"LeasesRenewedAndReleased", testLeasesRenewedAndReleased},
		{"Signals", testSignals},
		{"ConcurrentMigrations", testConcurrentMigrations},
	}
	for _, b := range []backend{sqliteBackend, postgresBackend} {
		t.Run(b.name, func(t *testing.T) {
			if b.name == "postgres" && !pgtest.Enabled() {
				t.Skip(pgtest.Env + " is not set")
			}
			parallel := func(t *testing.T) {
				if b.name == "postgres" {
					t.Parallel() // each test has a schema of its own
				}
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { parallel(t); tc.fn(t, b) })
			}
			if b.name == "postgres" {
				for _, tc := range shared {
					t.Run(tc.name, func(t *testing.T) { parallel(t); tc.fn(t, b) })
				}
			}
		})
	}
}

// TestMigrationsHaveTwins: every migration number exists for both backends,
// so a schema version means the same on each.
func TestMigrationsHaveTwins(t *testing.T) {
	lite, pg := KnownVersions("sqlite"), KnownVersions("postgres")
	if !slices.Equal(lite, pg) {
		t.Fatalf("migrations: SQLite has %v, PostgreSQL %v; add the missing twin under migrations/ or migrations/postgres/", lite, pg)
	}
	if len(lite) == 0 {
		t.Fatal("no migrations embedded")
	}
}

func TestDatabaseSettings(t *testing.T) {
	for _, tc := range []struct {
		in       string
		postgres bool
		path     string
		display  string
	}{
		{"bridge.db", false, "bridge.db", "bridge.db"},
		{"sqlite:bridge.db", false, "bridge.db", "bridge.db"},
		{"sqlite:///var/lib/bridge/bridge.db", false, "/var/lib/bridge/bridge.db", "/var/lib/bridge/bridge.db"},
		{"postgres://bridge:s3cretpw@db:5432/bridge?sslmode=require", true, "", "postgres://bridge:xxxxx@db:5432/bridge?sslmode=require"},
		{"postgresql://db/bridge", true, "", "postgresql://db/bridge"},
	} {
		if got := IsPostgres(tc.in); got != tc.postgres {
			t.Errorf("IsPostgres(%q) = %v", tc.in, got)
		}
		if !tc.postgres {
			if got := SQLitePath(tc.in); got != tc.path {
				t.Errorf("SQLitePath(%q) = %q, want %q", tc.in, got, tc.path)
			}
		}
		if got := Display(tc.in); got != tc.display {
			t.Errorf("Display(%q) = %q, want %q", tc.in, got, tc.display)
		}
	}
	if got := URLPassword("postgres://bridge:s3cretpw@db/bridge"); got != "s3cretpw" {
		t.Errorf("URLPassword = %q", got)
	}
}

func TestRebind(t *testing.T) {
	for in, want := range map[string]string{
		"SELECT a FROM t WHERE x = ? AND y = ?":                       "SELECT a FROM t WHERE x = $1 AND y = $2",
		"SELECT '?' || \"a?b\" FROM t WHERE x = ? -- why?\nAND y = ?": "SELECT '?' || \"a?b\" FROM t WHERE x = $1 -- why?\nAND y = $2",
		"SELECT id FROM events INDEXED BY events_queue WHERE id > ?":  "SELECT id FROM events WHERE id > $1",
		"SELECT 'it''s ?' WHERE a = ?":                                "SELECT 'it''s ?' WHERE a = $1",
	} {
		if got := rebind(in); got != want {
			t.Errorf("rebind(%q) = %q, want %q", in, got, want)
		}
	}
}

func testReopenKeepsData(t *testing.T, b backend) {
	path := b.database(t)
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	r := &Route{InboxID: 3, DifyKey: "app-x", Enabled: true}
	if err := db.AddRoute(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rs, err := db.Routes(t.Context())
	if err != nil || len(rs) != 1 || rs[0].InboxID != 3 {
		t.Fatalf("routes after reopen = %+v, %v", rs, err)
	}
	applied, known, err := db.SchemaVersion(t.Context())
	if err != nil || applied != known || known < 11 {
		t.Errorf("schema applied=%d known=%d err=%v", applied, known, err)
	}
}

// testWriteErrorUndoesOnlyItsOwnChanges: writes running at the same time,
// one of which fails; the others land, the failed one leaves nothing.
func testWriteErrorUndoesOnlyItsOwnChanges(t *testing.T, b backend) {
	db := b.open(t)
	boom := errors.New("boom")
	var wg sync.WaitGroup
	goods := make([]*Event, 20)
	for i := range goods {
		goods[i] = &Event{Status: StatusIgnored, Reason: "good"}
		wg.Go(func() {
			if err := db.Write(t.Context(), func(tx *Tx) error { return tx.InsertEvent(goods[i]) }); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			err := db.Write(t.Context(), func(tx *Tx) error {
				if err := tx.InsertEvent(&Event{Status: StatusIgnored, Reason: "bad"}); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Errorf("err = %v, want boom", err)
			}
		})
	}
	wg.Wait()
	for _, g := range goods {
		if _, err := db.Event(t.Context(), g.ID); err != nil {
			t.Errorf("good event lost: %v", err)
		}
	}
	evs, err := db.ListEvents(t.Context(), EventFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Reason == "bad" {
			t.Errorf("failed write left its row behind: %+v", e)
		}
	}
	if len(evs) != len(goods) {
		t.Errorf("%d events, want %d", len(evs), len(goods))
	}
}

// testSchemaAheadRefused: a database a newer bridge migrated is refused, not
// misread.
func testSchemaAheadRefused(t *testing.T, b backend) {
	path := b.database(t)
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Reader().ExecContext(t.Context(),
		"INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err := Open(t.Context(), path); !errors.Is(err, ErrSchemaAhead) {
		if err == nil {
			_ = db.Close()
		}
		t.Fatalf("Open of a schema at version 9999: %v, want ErrSchemaAhead", err)
	}
}

func testClaimOnce(t *testing.T, b backend) {
	db := b.open(t)
	id := insertAccepted(t, db)
	if err := db.Write(t.Context(), func(tx *Tx) error { return tx.Claim(id) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Write(t.Context(), func(tx *Tx) error { return tx.Claim(id) }); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("second claim: %v, want ErrNotClaimable", err)
	}
	e, err := db.Event(t.Context(), id)
	if err != nil || e.Status != StatusWorking || e.Attempts != 1 {
		t.Fatalf("claimed event = %+v, %v", e, err)
	}
	var owner string
	if err := db.Reader().QueryRow("SELECT lease_owner FROM events WHERE id = ?", id).Scan(&owner); err != nil || owner != db.Owner() {
		t.Errorf("lease owner %q, %v; want %q", owner, err, db.Owner())
	}
}

// testConcurrentHops: hops added to one trace by writes running at the
// same time all land, numbered 1..n.
func testConcurrentHops(t *testing.T, b backend) {
	db := b.open(t)
	id := insertAccepted(t, db)
	const n = 30
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := db.Write(t.Context(), func(tx *Tx) error {
				return tx.AddHop(Hop{EventID: id, Stage: "s", Outcome: "o", Detail: strings.Repeat("x", i)})
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	hops, err := db.Hops(t.Context(), id)
	if err != nil || len(hops) != n {
		t.Fatalf("%d hops, %v; want %d", len(hops), err, n)
	}
	for i, h := range hops {
		if h.Seq != i+1 {
			t.Errorf("hop %d has seq %d", i, h.Seq)
		}
	}
}

// testTextThatIsNotUTF8: a message with a NUL byte or broken UTF-8 is
// journaled (PostgreSQL's text refuses both), its payload kept exactly.
func testTextThatIsNotUTF8(t *testing.T, b backend) {
	db := b.open(t)
	body := []byte("{\"content\":\"a\\u0000b\xff\"}")
	e := &Event{Status: StatusAccepted, Kind: KindMessage, AccountID: 1, ConversationID: 2, MessageID: 3,
		Text: "a\x00b\xffc", Reason: "r\x00", Payload: body}
	if err := db.Write(t.Context(), func(tx *Tx) error { return tx.InsertEvent(e) }); err != nil {
		t.Fatal(err)
	}
	got, err := db.Event(t.Context(), e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Payload) != string(body) {
		t.Errorf("payload %q, want %q", got.Payload, body)
	}
	if !strings.HasPrefix(got.Text, "a") || !strings.HasSuffix(got.Text, "c") {
		t.Errorf("text %q", got.Text)
	}
}

// testDurable: writes commit with the backend's full durability.
func testDurable(t *testing.T, b backend) {
	db := b.open(t)
	mode, sync, err := db.Durability(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{"sqlite": {"wal", "FULL"}, "postgres": {"postgres", "on"}}[b.name]
	if mode != want[0] || sync != want[1] {
		t.Errorf("durability %s/%s, want %s/%s", mode, sync, want[0], want[1])
	}
	if b.name != "postgres" {
		return // SQLite's NoSync: TestNoSync
	}
	// WriteNoSync commits without waiting for the flush; Write waits.
	for nosync, want := range map[bool]string{false: "on", true: "off"} {
		write := db.Write
		if nosync {
			write = db.WriteNoSync
		}
		var got string
		if err := write(t.Context(), func(tx *Tx) error {
			return tx.QueryRow("SELECT current_setting('synchronous_commit')").Scan(&got)
		}); err != nil || got != want {
			t.Errorf("nosync=%v: synchronous_commit %q, %v; want %q", nosync, got, err, want)
		}
	}
}

// ---- shared databases only ----

func insertIn(t *testing.T, db *DB, account, conv int64) int64 {
	t.Helper()
	e := &Event{Status: StatusAccepted, Kind: KindMessage, AccountID: account, ConversationID: conv, MessageID: time.Now().UnixNano()}
	if err := db.Write(t.Context(), func(tx *Tx) error { return tx.InsertEvent(e) }); err != nil {
		t.Fatal(err)
	}
	return e.ID
}

func claim(db *DB, id int64) error {
	return db.Write(context.Background(), func(tx *Tx) error { return tx.Claim(id) })
}

// testClaimKeepsConversationOrder: two processes on one database. An event
// is claimable only once every earlier event of its conversation finished,
// whichever process asks; other conversations are not held up.
func testClaimKeepsConversationOrder(t *testing.T, b backend) {
	url := b.database(t)
	a, err := Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	o, err := Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	first, second, other := insertIn(t, a, 1, 5), insertIn(t, a, 1, 5), insertIn(t, a, 1, 6)
	if err := claim(o, second); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("claim of the second event while the first waits: %v, want ErrNotClaimable", err)
	}
	if err := claim(a, first); err != nil {
		t.Fatal(err)
	}
	if err := claim(o, second); !errors.Is(err, ErrNotClaimable) {
		t.Fatalf("claim of the second event while the first is worked on: %v, want ErrNotClaimable", err)
	}
	if err := claim(o, other); err != nil {
		t.Fatalf("another conversation is held up: %v", err)
	}
	if err := a.Write(t.Context(), func(tx *Tx) error { return tx.UpdateEvent(first, EventUpdate{Status: StatusAnswered}) }); err != nil {
		t.Fatal(err)
	}
	if err := claim(o, second); err != nil {
		t.Fatalf("claim once the first finished: %v", err)
	}
}

// testConversationLockSerialises: a write reading a conversation (as a
// webhook's does) waits for another write that read the same conversation
// to commit, whether or not the conversation exists yet.
func testConversationLockSerialises(t *testing.T, b backend) {
	var seen Conversation
	lockRace(t, b.open(t),
		func(tx *Tx) error { _, _, err := tx.Conversation(1, 77); return err },
		func(tx *Tx) error { return tx.TouchConversation(1, 77, 3, 4, "pending", time.Time{}, true) },
		func(tx *Tx) (err error) { seen, _, err = tx.Conversation(1, 77); return err })
	if seen.MessagesIn != 1 || seen.InboxID != 3 {
		t.Errorf("the second write read %+v, not what the first committed", seen)
	}
}

// lockRace runs two writes on a conversation not seen yet: the first runs
// lock, holds the lock while the second starts second and waits on it,
// then runs rest and commits.
func lockRace(t *testing.T, db *DB, lock, rest, second func(*Tx) error) {
	t.Helper()
	release, holding := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- db.Write(context.Background(), func(tx *Tx) error {
			if err := lock(tx); err != nil {
				return err
			}
			close(holding)
			<-release
			return rest(tx)
		})
	}()
	<-holding
	other := make(chan error, 1)
	go func() { other <- db.Write(context.Background(), second) }()
	waitUntil(t, "the second write waits on the conversation's lock", func() bool {
		var n int
		err := db.Reader().QueryRow("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").Scan(&n)
		return err == nil && n > 0
	})
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-other; err != nil {
		t.Fatal(err)
	}
}

// testLeaseExpiresAndIsReclaimed: a process that dies holding an event
// (its renewals stop) loses the lease after the lease time; another
// process reclaims the event, which is then claimable again, while a lease
// that is renewed stays, also through the reset at start.
func testLeaseExpiresAndIsReclaimed(t *testing.T, b backend) {
	url := b.database(t)
	dead, err := Open(t.Context(), url, WithLease(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	live, err := Open(t.Context(), url, WithLease(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	id, held := insertIn(t, dead, 1, 5), insertIn(t, live, 1, 6)
	if err := claim(dead, id); err != nil {
		t.Fatal(err)
	}
	if err := claim(live, held); err != nil {
		t.Fatal(err)
	}
	if exp, err := live.ExpiredLeases(t.Context(), 10); err != nil || len(exp) != 0 {
		t.Fatalf("expired leases right after the claims: %v, %v", exp, err)
	}
	// The dead process renews nothing; the live one keeps renewing.
	waitUntil(t, "the dead process's lease runs out", func() bool {
		if lost, err := live.RenewLeases(t.Context(), []int64{held}); err != nil || len(lost) != 0 {
			t.Fatalf("renewal of a live lease: lost %v, %v", lost, err)
		}
		exp, err := live.ExpiredLeases(t.Context(), 10)
		return err == nil && slices.Equal(exp, []int64{id})
	})
	// A third process starting resets only the expired lease.
	starting, err := Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer starting.Close()
	if n, err := starting.ResetWorking(t.Context()); err != nil || n != 1 {
		t.Fatalf("ResetWorking = %d, %v; want only the expired one", n, err)
	}
	if e, _ := live.Event(t.Context(), held); e.Status != StatusWorking {
		t.Fatalf("the live process's event is %s, want working", e.Status)
	}
	if err := claim(live, id); err != nil {
		t.Fatalf("claim after the lease ran out: %v", err)
	}
	// The dead process comes back: its lease is gone.
	if lost, err := dead.RenewLeases(t.Context(), []int64{id}); err != nil || !slices.Equal(lost, []int64{id}) {
		t.Fatalf("renewal of a lease another process took: lost %v, %v", lost, err)
	}
	var owner string
	var took bool
	if err := live.Write(t.Context(), func(tx *Tx) (err error) {
		owner, took, err = tx.ReclaimExpired(id)
		return err
	}); err != nil || took {
		t.Fatalf("ReclaimExpired of a live lease: took=%v owner=%q %v", took, owner, err)
	}
}

// testLeasesRenewedAndReleased: renewing pushes a lease's end forward and
// reclaiming an expired one names its owner; a stopping process gives its
// leases back at once.
func testLeasesRenewedAndReleased(t *testing.T, b backend) {
	url := b.database(t)
	db, err := Open(t.Context(), url, WithLease(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	id, other := insertIn(t, db, 1, 5), insertIn(t, db, 1, 6)
	for _, x := range []int64{id, other} {
		if err := claim(db, x); err != nil {
			t.Fatal(err)
		}
	}
	until := func() int64 {
		var v int64
		if err := db.Reader().QueryRow("SELECT lease_until FROM events WHERE id = ?", id).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	u0 := until()
	waitUntil(t, "a renewal moves the lease's end", func() bool {
		if lost, err := db.RenewLeases(t.Context(), []int64{id}); err != nil || len(lost) != 0 {
			t.Fatalf("renew: lost %v, %v", lost, err)
		}
		return until() > u0
	})
	// Expire the other one by hand, as if its process had stopped renewing.
	if _, err := db.Reader().ExecContext(t.Context(), "UPDATE events SET lease_until = 0 WHERE id = ?", other); err != nil {
		t.Fatal(err)
	}
	var owner string
	var took bool
	if err := db.Write(t.Context(), func(tx *Tx) (err error) {
		owner, took, err = tx.ReclaimExpired(other)
		return err
	}); err != nil || !took || owner != db.Owner() {
		t.Fatalf("ReclaimExpired: took=%v owner=%q %v; want taken from %q", took, owner, err, db.Owner())
	}
	if n, err := db.ReleaseLeases(t.Context()); err != nil || n != 1 {
		t.Fatalf("ReleaseLeases = %d, %v", n, err)
	}
	for _, x := range []int64{id, other} {
		if e, _ := db.Event(t.Context(), x); e.Status != StatusAccepted {
			t.Errorf("event %d is %s, want accepted", x, e.Status)
		}
	}
}

// testSignals: a process is told when another makes an event ready and
// when another sends a takeover; never of its own.
func testSignals(t *testing.T, b backend) {
	url := b.database(t)
	a, err := Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	o, err := Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	type sig struct{ kind, payload string }
	var mu sync.Mutex
	var got, own []sig
	o.Subscribe(func(kind, payload string) {
		mu.Lock()
		got = append(got, sig{kind, payload})
		mu.Unlock()
	})
	a.Subscribe(func(kind, payload string) {
		mu.Lock()
		own = append(own, sig{kind, payload})
		mu.Unlock()
	})
	has := func(want sig) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(got, want)
	}
	// The listener may connect after the first signal: keep sending.
	waitUntil(t, "a work signal arrives", func() bool {
		insertIn(t, a, 1, 5)
		return has(sig{SignalWork, ""})
	})
	waitUntil(t, "a takeover signal arrives", func() bool {
		a.Notify(SignalTakeover, "1:5")
		return has(sig{SignalTakeover, "1:5"})
	})
	mu.Lock()
	defer mu.Unlock()
	if len(own) != 0 {
		t.Errorf("the sender heard its own signals: %v", own)
	}
}

// testConcurrentMigrations: replicas starting together on an empty
// database apply each migration once and all open.
func testConcurrentMigrations(t *testing.T, b backend) {
	url := b.database(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			db, err := Open(context.Background(), url)
			if err != nil {
				t.Error(err)
				return
			}
			_ = db.Close()
		})
	}
	wg.Wait()
	db := func() *DB {
		db, err := Open(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		return db
	}()
	defer db.Close()
	var n, distinct int
	if err := db.Reader().QueryRow("SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != distinct || n != len(KnownVersions("postgres")) {
		t.Errorf("%d migration rows, %d distinct; want %d", n, distinct, len(KnownVersions("postgres")))
	}
}
