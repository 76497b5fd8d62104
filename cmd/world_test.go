package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// counter counts the requests a handler receives.
type counter struct {
	h http.Handler
	n atomic.Int64
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.n.Add(1)
	c.h.ServeHTTP(w, r)
}

// world is a bridge installation under test: a database in a temporary
// directory, simulated Chatwoot and Dify on loopback, and the environment
// pointing at them. Every command run through it has its output checked for
// leaked credentials when the test ends.
type world struct {
	t        *testing.T
	dir, db  string
	cw       *simulate.Chatwoot
	dify     *simulate.Dify
	cwHits   *counter
	difyHits *counter
	cwURL    string
	difyURL  string
	tr       transcript
	seen     strings.Builder
}

// newWorld sets up a world. Inbox 1 "Website" and inbox 2 "Email" exist in
// Chatwoot; the Dify apps are "Support bot" (testDifyKey, a chatflow) and
// "Email bot" (testDifyKey2, a chat app) unless apps are given.
func newWorld(t *testing.T, apps ...simulate.DifyApp) *world {
	t.Helper()
	dir := isolate(t)
	if len(apps) == 0 {
		apps = []simulate.DifyApp{
			{Key: testDifyKey, Name: "Support bot", Mode: simulate.ModeAdvancedChat},
			{Key: testDifyKey2, Name: "Email bot", Mode: simulate.ModeChat},
		}
	}
	w := &world{t: t, dir: dir, db: filepath.Join(dir, "bridge.db")}
	w.tr.dir = dir
	w.dify = simulate.NewDify(apps...)
	w.difyHits = &counter{h: w.dify}
	difySrv := httptest.NewServer(w.difyHits)
	w.cw = simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: testBotToken, NoEcho: true,
		Now: func() time.Time { return testEpoch }})
	w.cwHits = &counter{h: w.cw}
	cwSrv := httptest.NewServer(w.cwHits)
	t.Cleanup(func() {
		cwSrv.Close()
		w.cw.Close()
		difySrv.Close()
		w.dify.Close()
	})
	w.cw.AddInbox(1, "Website", "")
	w.cw.AddInbox(2, "Email", "")
	w.cwURL, w.difyURL = cwSrv.URL, difySrv.URL+"/v1"
	t.Setenv("BRIDGE_CHATWOOT_BASE_URL", w.cwURL)
	t.Setenv("BRIDGE_CHATWOOT_API_TOKEN", testBotToken)
	t.Setenv("BRIDGE_DIFY_BASE_URL", w.difyURL)
	t.Setenv("BRIDGE_DIFY_MAX_RETRIES", "0")
	t.Cleanup(func() {
		for _, s := range testSecrets {
			if strings.Contains(w.seen.String(), s) {
				t.Errorf("a credential (%s) appeared in the output of a command", config.Mask(s))
			}
		}
	})
	return w
}

// run runs bridge against the world's database and records the run in the
// world's transcript.
func (w *world) run(args ...string) cliResult {
	w.t.Helper()
	return w.runWith(cliRun{}, args...)
}

func (w *world) runWith(r cliRun, args ...string) cliResult {
	w.t.Helper()
	res := r.run(w.t, append(append([]string{}, args...), "--db", w.db)...)
	w.seen.WriteString(res.Out)
	w.seen.WriteString(res.Err)
	w.tr.add(args, res)
	return res
}

// mustRun runs a command that must exit with want.
func (w *world) mustRun(want int, args ...string) cliResult {
	w.t.Helper()
	res := w.run(args...)
	if res.Code != want {
		w.t.Fatalf("bridge %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.Code, want, res.Out, res.Err)
	}
	return res
}

// mustRunJSON runs a command with --json that must exit with want, and
// leaves it out of the transcript (JSON is checked by parsing it).
func (w *world) mustRunJSON(want int, args ...string) cliResult {
	w.t.Helper()
	args = append(args, "--json")
	res := cliRun{}.run(w.t, append(append([]string{}, args...), "--db", w.db)...)
	w.seen.WriteString(res.Out)
	w.seen.WriteString(res.Err)
	if res.Code != want {
		w.t.Fatalf("bridge %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.Code, want, res.Out, res.Err)
	}
	return res
}

// config is the configuration the world's environment gives bridge.
func (w *world) config() *config.Config {
	cfg := config.Defaults()
	cfg.Database = w.db
	cfg.Listen = "127.0.0.1:0"
	cfg.Chatwoot.BaseURL = w.cwURL
	cfg.Chatwoot.APIToken = testBotToken
	cfg.Dify.BaseURL = w.difyURL
	cfg.Dify.MaxRetries = 0
	return &cfg
}

// withCore opens the world's database with the clock fixed at testEpoch and
// hands a core built as serve builds it (no listener, no workers) to fn.
func (w *world) withCore(tune func(*bridge.Options), fn func(ctx context.Context, core *bridge.Bridge, db *store.DB)) {
	w.t.Helper()
	ctx := w.t.Context()
	db, err := store.Open(ctx, w.db)
	if err != nil {
		w.t.Fatal(err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			w.t.Error(err)
		}
	}()
	db.Now = func() time.Time { return testEpoch }
	opts := bridgeOptions(w.config(), db, slog.New(slog.NewTextHandler(w.t.Output(), nil)))
	opts.Now = db.Now
	if tune != nil {
		tune(&opts)
	}
	fn(ctx, bridge.New(opts), db)
}

// say makes the contact of conv write text in the simulated Chatwoot and
// returns the webhook body Chatwoot would deliver.
func (w *world) say(conv int64, text string) []byte {
	w.t.Helper()
	d, err := w.cw.CustomerSays(w.t.Context(), conv, text)
	if err != nil && !errors.Is(err, simulate.ErrNoWebhook) {
		w.t.Fatal(err)
	}
	return d.Body
}

// ingest journals body as a delivery and, if accepted and drive is set,
// processes it at once; it returns the event.
func ingest(t *testing.T, ctx context.Context, core *bridge.Bridge, body []byte, drive bool) store.Event {
	t.Helper()
	ev, err := chatwoot.ParseEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := core.Ingest(ctx, ev, body, "delivery-test")
	if err != nil {
		t.Fatal(err)
	}
	if ack.Status == "accepted" && drive {
		e, err := core.ProcessNow(ctx, ack.EventID)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	return store.Event{ID: ack.EventID, Status: ack.Status, Reason: ack.Reason}
}

// eventCount is the number of journal entries.
func eventCount(t *testing.T, path string) int {
	t.Helper()
	db, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	evs, err := db.ListEvents(t.Context(), store.EventFilter{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

// botMessages counts the public answers the bot posted in conv.
func botMessages(cw *simulate.Chatwoot, conv int64) []string {
	var out []string
	for _, m := range cw.Messages(conv) {
		if m.MessageType == "outgoing" && !m.Private && m.SenderType == "agent_bot" {
			out = append(out, m.Content)
		}
	}
	return out
}

// journal names what seedJournal put in a world's database.
type journal struct {
	jane, erik, max int64 // Chatwoot conversations: inbox 1, inbox 2 (no route), inbox 1

	answered  int64 // Jane's question, answered
	handedOff int64 // Jane asks for a human
	ignored   int64 // Erik writes to inbox 2, which has no route
	rejected  int64 // a cut-off body, refused with 400
	failed    int64 // Max's question; the route was disabled before it was driven
}

// seedJournal gives a world route 1 (inbox 1 → "Support bot") and a
// journal with one event in each final state, all received at testEpoch.
func seedJournal(w *world) journal {
	w.t.Helper()
	var j journal
	w.withCore(nil, func(ctx context.Context, core *bridge.Bridge, db *store.DB) {
		t := w.t
		r := &store.Route{InboxID: 1, Name: "support", DifyKey: testDifyKey, Mode: store.ModeAuto, Enabled: true,
			AppName: "Support bot", AppMode: simulate.ModeAdvancedChat}
		if err := db.AddRoute(ctx, r); err != nil {
			t.Fatal(err)
		}
		j.jane = w.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "Jane Doe", Email: "jane@example.com"}, "pending")
		j.erik = w.cw.NewConversation(2, simulate.Contact{ID: 2, Name: "Erik Berg", Email: "erik@example.com"}, "pending")
		j.max = w.cw.NewConversation(1, simulate.Contact{ID: 3, Name: "Max Mustermann"}, "pending")

		e := ingest(t, ctx, core, w.say(j.jane, "Where is my order #1234?"), true)
		if e.Status != store.StatusAnswered {
			t.Fatalf("seed: first question ended %s (%s)", e.Status, e.LastError)
		}
		j.answered = e.ID
		if e = ingest(t, ctx, core, w.say(j.jane, "Please let me talk to a human."), true); e.Status != store.StatusHandedOff {
			t.Fatalf("seed: handoff ended %s (%s)", e.Status, e.LastError)
		}
		j.handedOff = e.ID
		if e = ingest(t, ctx, core, w.say(j.erik, "Hello, is anyone reading this inbox?"), true); e.Status != store.StatusIgnored {
			t.Fatalf("seed: inbox 2 message ended %s", e.Status)
		}
		j.ignored = e.ID

		rec := httptest.NewRecorder()
		core.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/webhooks/chatwoot",
			strings.NewReader(`{"event": "message_created", "id": `)))
		var ack bridge.Ack
		if err := json.Unmarshal(rec.Body.Bytes(), &ack); err != nil || rec.Code != http.StatusBadRequest {
			t.Fatalf("seed: junk webhook answered %d %s", rec.Code, rec.Body)
		}
		j.rejected = ack.EventID

		acc := ingest(t, ctx, core, w.say(j.max, "Do you ship to Berlin?"), false)
		if err := db.SetRouteEnabled(ctx, r.ID, false); err != nil {
			t.Fatal(err)
		}
		if e, err := core.ProcessNow(ctx, acc.ID); err != nil || e.Status != store.StatusFailed {
			t.Fatalf("seed: event %d ended %s, %v; want failed", acc.ID, e.Status, err)
		}
		j.failed = acc.ID
		if err := db.SetRouteEnabled(ctx, r.ID, true); err != nil {
			t.Fatal(err)
		}
	})
	return j
}
