package cmd

import (
	"encoding/json"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/store"
	"github.com/bridge-dev/bridge/pkg/store/pgtest"
)

func TestMigrateUsage(t *testing.T) {
	dir := isolate(t)
	db := filepath.Join(dir, "bridge.db")
	for _, args := range [][]string{
		{"migrate"},
		{"migrate", "--from", db},
		{"migrate", "--from", db, "--to", db},
		{"migrate", "--from", filepath.Join(dir, "missing.db"), "--to", filepath.Join(dir, "new.db")},
		{"migrate", "--db", db, "--from", db, "--to", filepath.Join(dir, "new.db")},
	} {
		if res := runCLI(t, args...); res.Code != ExitUsage || !strings.Contains(res.Err, "Try:") {
			t.Errorf("%q: exit %d\n%s", args, res.Code, res.Err)
		}
	}
}

// TestMigrateSQLiteToPostgres: a SQLite journal moves into PostgreSQL with
// a progress line per table and a comparison that says every table is the
// same; run again it copies nothing; the destination then serves the CLI.
// The password of the URL never shows.
func TestMigrateSQLiteToPostgres(t *testing.T) {
	target := pgtest.URL(t)
	dir := isolate(t)
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	const password = "pw-Mq7vX2kd9Lr4" // the test server trusts local connections: any password does
	u.User = url.UserPassword(u.User.Username(), password)
	target = u.String()

	db := filepath.Join(dir, "bridge.db")
	s, err := store.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddRoute(t.Context(), &store.Route{InboxID: 3, Name: "support", DifyKeyEnv: "SUPPORT_KEY", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	const events = 1200
	if err := s.Write(t.Context(), func(tx *store.Tx) error {
		for i := range events {
			e := &store.Event{Event: "message_created", Kind: store.KindMessage, AccountID: 1, ConversationID: int64(i%40 + 1),
				MessageID: int64(100 + i), RouteID: 1, Status: store.StatusAnswered, Text: "hello", Payload: []byte(`{}`),
				ReceivedAt: time.UnixMilli(1_800_000_000_000 + int64(i))}
			if err := tx.InsertEvent(e); err != nil {
				return err
			}
			if err := tx.AddHop(store.Hop{EventID: e.ID, Stage: "done", Outcome: "answered"}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	res := runCLI(t, "migrate", "--from", db, "--to", target)
	if res.Code != ExitOK {
		t.Fatalf("migrate: exit %d\n%s\n%s", res.Code, res.Out, res.Err)
	}
	for _, want := range []string{"Copying " + db + " into postgres://", "events        1200 of 1200 rows (100%)", "hops          1200 of 1200 rows (100%)"} {
		if !strings.Contains(res.Err, want) {
			t.Errorf("progress lacks %q:\n%s", want, res.Err)
		}
	}
	if !strings.Contains(res.Out, "Every table has the same rows in both databases") || strings.Contains(res.Out, "DIFFERS") {
		t.Errorf("comparison:\n%s", res.Out)
	}
	if strings.Contains(res.Out+res.Err, password) {
		t.Errorf("the URL's password shows:\n%s\n%s", res.Out, res.Err)
	}

	res = runCLI(t, "migrate", "--from", db, "--to", target, "--json")
	var rep migrateReport
	if err := json.Unmarshal([]byte(res.Out), &rep); err != nil || res.Code != ExitOK {
		t.Fatalf("migrate --json: exit %d, %v\n%s", res.Code, err, res.Out)
	}
	for _, c := range rep.Tables {
		if c.Copied != 0 || !c.Same {
			t.Errorf("second run: %+v", c)
		}
	}
	if !rep.Same || strings.Contains(rep.To, password) || !strings.Contains(rep.To, "xxxxx") {
		t.Errorf("report: %+v", rep)
	}

	res = runCLI(t, "events", "list", "--db", target, "--json")
	if res.Code != ExitOK || strings.Count(res.Out, `"status": "answered"`) != 50 {
		t.Errorf("events list on the destination: exit %d\n%.400s\n%s", res.Code, res.Out, res.Err)
	}
	res = runCLI(t, "routes", "list", "--db", target)
	if res.Code != ExitOK || !strings.Contains(res.Out, "support") {
		t.Errorf("routes list on the destination: exit %d\n%s\n%s", res.Code, res.Out, res.Err)
	}
}
