package bridge

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// testWebhookToken is the ?token= of the webhook URL in the secrets test.
const testWebhookToken = "webhook-token-SECRET-0005"

func get(t *testing.T, url string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, string(b)}
}

// lockDatabase takes the database's write lock from a second connection,
// as a sqlite3 shell left inside a transaction or a stuck backup tool would,
// and returns the function that lets it go.
func lockDatabase(t *testing.T, path string) (unlock func()) {
	t.Helper()
	if store.IsPostgres(path) {
		t.Skip("a lock on the SQLite file; PostgreSQL locks rows, not the database")
	}
	// It waits for a write in flight (an echo webhook, a trace step) to end.
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	conn, err := other.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
				t.Error(err)
			}
			_ = conn.Close() // back to the pool, closed with it
		})
	}
	t.Cleanup(unlock)
	return unlock
}

// TestReadyz: /readyz is 200 while the workers run and the database takes
// writes, and 503 with the reason otherwise; it recovers by itself.
func TestReadyz(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true})
	ready := e.srv.URL + "/readyz"

	t.Run("ErrWorkersNotRunning", func(t *testing.T) {
		r := get(t, ready)
		if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "workers not running") {
			t.Fatalf("before Run: %d %q", r.code, r.body)
		}
	})

	stop := runCore(t, e)
	// An answered message proves the workers run.
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	e.waitFinal(e.say(conv, "hello").EventID)

	t.Run("OK", func(t *testing.T) {
		if r := get(t, ready); r.code != http.StatusOK || r.body != "ready\n" {
			t.Fatalf("running: %d %q", r.code, r.body)
		}
	})

	t.Run("ErrDatabaseLocked", func(t *testing.T) {
		unlock := lockDatabase(t, e.db.Path)
		r := get(t, ready)
		if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "database not writable") ||
			!strings.Contains(r.body, "locked") {
			t.Fatalf("database locked: %d %q", r.code, r.body)
		}
		if strings.Count(r.body, "\n") != 1 {
			t.Errorf("reason is not one line: %q", r.body)
		}
		unlock()
		if r := get(t, ready); r.code != http.StatusOK {
			t.Fatalf("after the lock was released: %d %q", r.code, r.body)
		}
		// And webhooks are journaled again.
		e.waitFinal(e.say(conv, "still there?").EventID)
	})

	t.Run("ErrStopped", func(t *testing.T) {
		stop()
		r := get(t, ready)
		if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "workers not running") {
			t.Fatalf("after Run returned: %d %q", r.code, r.body)
		}
		if r := get(t, e.srv.URL+"/healthz"); r.code != http.StatusOK {
			t.Fatalf("healthz after Run returned: %d %q", r.code, r.body)
		}
	})

	t.Run("ErrDatabaseClosed", func(t *testing.T) {
		e2 := newEnv(t, envOptions{noRun: true})
		runCore(t, e2)
		e2.waitFinal(e2.say(e2.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending"), "hi").EventID)
		if err := e2.db.Close(); err != nil {
			t.Fatal(err)
		}
		r := get(t, e2.srv.URL+"/readyz")
		if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "database not writable") {
			t.Fatalf("database closed: %d %q", r.code, r.body)
		}
	})
}

// clock is a settable clock for retention.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// countByStatus counts journal rows by state.
func countByStatus(t *testing.T, db *store.DB) map[string]int {
	t.Helper()
	rows, err := db.Reader().QueryContext(t.Context(), "SELECT status, count(*) FROM events GROUP BY status")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		out[s] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func queryInt(t *testing.T, db *store.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Reader().QueryRowContext(t.Context(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// TestRetention: ignored and rejected events older than retention.ignored
// are deleted in the background, in small batches, with their traces;
// younger ones and every acted-on event stay. So do the ownership entries
// of conversations bridge acted in; those of conversations it never acted
// in go with their events.
func TestRetention(t *testing.T) {
	const retention = 168 * time.Hour
	t0 := time.Date(2030, 1, 1, 9, 0, 0, 0, time.UTC)
	clk := &clock{now: t0}
	e := newEnv(t, envOptions{storeOpts: []store.Option{store.WithNow(clk.Now)}, noRun: true, cwOpts: func(o *simulate.ChatwootOptions) { o.EchoSync = true; o.Now = clk.Now },
		tune: func(o *Options) { o.Now = clk.Now; o.RetentionIgnored = retention }})
	hook := e.srv.URL + "/webhooks/chatwoot"

	// Day 0: an answer, a handoff, a message in an unrouted inbox, a junk
	// delivery, and a large backlog of old ignored events.
	stop := runCore(t, e)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	answered := e.waitFinal(e.say(conv, "where is my order?").EventID)
	handed := e.waitFinal(e.say(conv, "a human please").EventID)
	if answered.Status != store.StatusAnswered || handed.Status != store.StatusHandedOff {
		t.Fatalf("day 0: %s, %s", answered.Status, handed.Status)
	}
	e.say(e.cw.NewConversation(2, simulate.Contact{ID: 2, Name: "B"}, "pending"), "hi")
	// Humans had this one from the start; bridge only journaled its resolve.
	humans := e.cw.NewConversation(1, simulate.Contact{ID: 4, Name: "D"}, "open")
	if a := e.say(humans, "hello?"); a.Status != "ignored" {
		t.Fatalf("ack %+v", a)
	}
	for _, c := range []int64{conv, humans} {
		e.setStatus(c, "resolved")
		e.wait("the resolve journaled", func() bool { return strings.Contains(kinds(e.ownership(c)), "resolved") })
	}
	keptOwnership := kinds(e.ownership(conv))
	if r := post(t, hook, []byte("not json"), nil); r.code != http.StatusBadRequest {
		t.Fatalf("junk: %d %s", r.code, r.body)
	}
	const backlog = 1234
	if err := e.db.Write(t.Context(), func(tx *store.Tx) error {
		for i := range backlog {
			ev := &store.Event{Event: "conversation_typing_on", Status: store.StatusIgnored, Reason: ReasonNotMessageCreated,
				ConversationID: int64(1000 + i)}
			if err := tx.InsertEvent(ev); err != nil {
				return err
			}
			if err := tx.AddHop(store.Hop{EventID: ev.ID, Stage: StageDecision, Outcome: store.StatusIgnored}); err != nil {
				return err
			}
			if err := tx.AddOwnership(store.Ownership{ConversationID: ev.ConversationID, RouteID: 1, Kind: store.OwnResolved, Owner: store.StateBot}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stop()
	keptHops := queryInt(t, e.db, "SELECT count(*) FROM hops WHERE event_id IN (?, ?)", answered.ID, handed.ID)

	// Day 4: one more ignored event, younger than the retention at the end.
	clk.Set(t0.Add(100 * time.Hour))
	stop = runCore(t, e)
	young := e.say(e.cw.NewConversation(2, simulate.Contact{ID: 3, Name: "C"}, "pending"), "anyone?")
	stop()

	before := countByStatus(t, e.db)
	if before[store.StatusIgnored] < backlog+2 || before[store.StatusRejected] != 1 {
		t.Fatalf("journal before retention: %v", before)
	}

	// Day 7 and a bit: the start of Run prunes.
	clk.Set(t0.Add(retention + time.Hour))
	commits, _ := e.db.Commits()
	runCore(t, e)
	e.wait("retention", func() bool { return countByStatus(t, e.db)[store.StatusIgnored] == 1 })

	after := countByStatus(t, e.db)
	want := map[string]int{store.StatusAnswered: 1, store.StatusHandedOff: 1, store.StatusIgnored: 1}
	if fmt.Sprint(after) != fmt.Sprint(want) {
		t.Errorf("journal after retention = %v, want %v", after, want)
	}
	if _, err := e.db.Event(t.Context(), young.EventID); err != nil {
		t.Errorf("the younger ignored event is gone: %v", err)
	}
	if n := queryInt(t, e.db, "SELECT count(*) FROM hops WHERE event_id NOT IN (SELECT id FROM events)"); n != 0 {
		t.Errorf("%d hops of deleted events remain", n)
	}
	if n := queryInt(t, e.db, "SELECT count(*) FROM hops WHERE event_id IN (?, ?)", answered.ID, handed.ID); n != keptHops {
		t.Errorf("hops of acted-on events: %d, want %d", n, keptHops)
	}
	if n := queryInt(t, e.db, "SELECT count(*) FROM conversations"); n == 0 {
		t.Error("conversations were deleted")
	}
	if n := queryInt(t, e.db, "SELECT count(*) FROM routes"); n != 1 {
		t.Errorf("routes: %d", n)
	}
	e.wait("ownership retention", func() bool { return queryInt(t, e.db, "SELECT count(*) FROM ownership") == 2 })
	if got := kinds(e.ownership(conv)); got != keptOwnership || got != "handoff:customer_asked resolved:status resolved" {
		t.Errorf("ownership of the conversation bridge answered = %q, want %q", got, keptOwnership)
	}
	// Small batches: the backlogs went in several short writes, so webhooks
	// waiting for the writer never queue behind one long delete.
	if c, _ := e.db.Commits(); c-commits < 2*(backlog/500+1) {
		t.Errorf("retention used %d commits for %d events and their ownership entries; want batches of at most 500", c-commits, backlog)
	}
}

// TestRetentionOff: with retention.ignored 0 nothing is deleted.
func TestRetentionOff(t *testing.T) {
	clk := &clock{now: time.Date(2030, 1, 1, 9, 0, 0, 0, time.UTC)}
	e := newEnv(t, envOptions{storeOpts: []store.Option{store.WithNow(clk.Now)}, noRun: true, tune: func(o *Options) { o.Now = clk.Now }})
	stop := runCore(t, e)
	e.say(e.cw.NewConversation(2, simulate.Contact{ID: 2, Name: "B"}, "pending"), "hi")
	stop()
	clk.Set(clk.Now().Add(10 * 365 * 24 * time.Hour))
	stop = runCore(t, e)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	e.waitFinal(e.say(conv, "hello").EventID) // Run is past its start
	stop()
	if got := countByStatus(t, e.db)[store.StatusIgnored]; got < 1 {
		t.Errorf("ignored events deleted with retention off: %d left", got)
	}
}

// TestShutdownGrace: events running when Run's context ends get the grace
// period to finish; what is still running after it is interrupted, stays
// journaled and is answered once after the next start.
func TestShutdownGrace(t *testing.T) {
	t.Run("FinishesWithinGrace", func(t *testing.T) {
		e := newEnv(t, envOptions{noRun: true, tune: func(o *Options) { o.ShutdownGrace = time.Minute }})
		e.dify.Hold()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.core.Run(ctx) }()
		conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
		a := e.say(conv, "hello")
		if err := e.dify.WaitFor(t.Context(), func() bool { return e.dify.Held() == 1 }); err != nil {
			t.Fatal(err)
		}
		cancel()
		e.dify.Release()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if ev := e.event(a.EventID); ev.Status != store.StatusAnswered {
			t.Fatalf("event after a graceful stop: %s", ev.Status)
		}
	})
	t.Run("InterruptedAfterGrace", func(t *testing.T) {
		e := newEnv(t, envOptions{noRun: true, tune: func(o *Options) { o.ShutdownGrace = 20 * time.Millisecond }})
		e.dify.Hold()
		stop := runCore(t, e)
		conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
		a := e.say(conv, "hello")
		if err := e.dify.WaitFor(t.Context(), func() bool { return e.dify.Held() == 1 }); err != nil {
			t.Fatal(err)
		}
		stop()
		if ev := e.event(a.EventID); ev.Finished() {
			t.Fatalf("event finished while Dify held it: %s", ev.Status)
		}
		if !strings.Contains(e.logs.String(), "interrupting running events") {
			t.Error("no log line about interrupted events")
		}
		e.dify.Release()
		runCore(t, e)
		if ev := e.waitFinal(a.EventID); ev.Status != store.StatusAnswered {
			t.Fatalf("after restart: %s %s", ev.Status, ev.LastError)
		}
		if got := e.botReplies(conv); len(got) != 1 {
			t.Errorf("replies = %q, want exactly one", got)
		}
	})
}

// dumpJournal returns every column of every event and hop as text.
func dumpJournal(t *testing.T, db *store.DB) string {
	t.Helper()
	var sb strings.Builder
	for _, table := range []string{"events", "hops", "conversations"} {
		rows, err := db.Reader().QueryContext(t.Context(), "SELECT * FROM "+table)
		if err != nil {
			t.Fatal(err)
		}
		cols, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for _, v := range vals {
				if b, ok := v.([]byte); ok {
					v = string(b)
				}
				fmt.Fprintf(&sb, "%v\t", v)
			}
			sb.WriteByte('\n')
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return sb.String()
}

// TestCoreNeverRevealsSecrets: at Debug, through a conversation, webhook
// authentication failures, a Chatwoot 401 and a Dify 401, the core writes
// none of the credentials it holds into its logs, the journal, what it posts
// to Chatwoot or its webhook answers.
func TestCoreNeverRevealsSecrets(t *testing.T) {
	e := newEnv(t, envOptions{secret: true, token: testWebhookToken, logLevel: slog.LevelDebug, noRun: true,
		cwOpts: func(o *simulate.ChatwootOptions) { o.EchoSync = true },
		tune:   func(o *Options) { o.Handoff.Labels = []string{"bot-handoff"}; o.Handoff.TeamID = 4 }})
	e.cw.AddTeam(4, "Support")
	stop := runCore(t, e)
	hook := e.srv.URL + "/webhooks/chatwoot"
	var answers []string

	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A", Email: "a@example.com"}, "pending")
	e.waitFinal(e.say(conv, "Where is my order?").EventID)
	// The typing indicator refused with a 401 (logged at Debug).
	e.cw.Fail("toggle_typing_status", simulate.ChatwootFault{Status: http.StatusUnauthorized})
	e.waitFinal(e.say(conv, "and when will it arrive?").EventID)
	e.waitFinal(e.say(conv, "I want a human").EventID)

	// Dify refuses the key.
	conv2 := e.cw.NewConversation(1, simulate.Contact{ID: 2, Name: "B"}, "pending")
	e.dify.Fail(testDifyKey, simulate.DifyFault{Status: http.StatusUnauthorized})
	if ev := e.waitFinal(e.say(conv2, "hello").EventID); ev.Status != store.StatusHandedOff {
		t.Fatalf("dify 401: %s %s", ev.Status, ev.Reason)
	}

	// Webhook authentication failures.
	body := []byte(`{"event":"message_created","id":1}`)
	for _, c := range []struct {
		url    string
		secret string
	}{
		{hook, testSecret}, // no token
		{hook + "?token=wrong-" + testWebhookToken, testSecret}, // wrong token
		{hook + "?token=" + testWebhookToken, "wrong"},          // bad signature
	} {
		r := signedPost(t, c.url, c.secret, time.Now(), body)
		if r.code != http.StatusUnauthorized {
			t.Fatalf("%s: %d %s", c.url, r.code, r.body)
		}
		answers = append(answers, r.body)
	}
	stop()
	for _, d := range e.cw.Deliveries() {
		answers = append(answers, string(d.Response))
	}

	var chatwootSaw []string
	for _, id := range []int64{conv, conv2} {
		for _, m := range e.cw.Messages(id) {
			chatwootSaw = append(chatwootSaw, m.Content)
		}
	}
	for _, c := range e.cw.Calls() {
		chatwootSaw = append(chatwootSaw, c.Path, string(c.Body))
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"level":"DEBUG"`) || !strings.Contains(logs, "dify 401") {
		t.Fatalf("the logs do not cover the run:\n%s", logs)
	}
	outputs := map[string]string{
		"logs":            logs,
		"journal":         dumpJournal(t, e.db),
		"chatwoot":        strings.Join(chatwootSaw, "\n"),
		"webhook answers": strings.Join(answers, "\n"),
	}
	for what, out := range outputs {
		for _, s := range []string{testBotToken, testUserToken, testDifyKey, testSecret, testWebhookToken} {
			if strings.Contains(out, s) {
				t.Errorf("%s contain the secret %q", what, s)
			}
		}
	}
}

// workersUp reports whether Run's workers are up (test helper).
func (b *Bridge) workersUp() bool {
	phase, _ := b.state.get()
	return phase == phaseRunning
}
