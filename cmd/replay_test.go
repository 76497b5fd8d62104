package cmd

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/store"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// quiet is a snapshot of everything that would show a replay did
// something: calls to Chatwoot and Dify, and the size of the journal.
type quiet struct {
	cw, dify int64
	events   int
}

func (w *world) snapshot() quiet {
	return quiet{w.cwHits.n.Load(), w.difyHits.n.Load(), eventCount(w.t, w.db)}
}

func (w *world) assertQuiet(before quiet, what string) {
	w.t.Helper()
	if after := w.snapshot(); after != before {
		w.t.Errorf("%s did something: Chatwoot calls %d→%d, Dify calls %d→%d, journal %d→%d events",
			what, before.cw, after.cw, before.dify, after.dify, before.events, after.events)
	}
}

func parseItems(t *testing.T, out string) []bridge.ReplayItem {
	t.Helper()
	var items []bridge.ReplayItem
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		t.Fatalf("replay --json: %v\n%s", err, out)
	}
	return items
}

func TestReplayUsage(t *testing.T) {
	w := newWorld(t)
	for _, args := range [][]string{
		{"replay"},
		{"replay", "1", "--file", "webhook.json"},
		{"replay", "abc"},
		{"replay", "0"},
		{"replay", "1", "--to", "ftp://127.0.0.1/webhooks/chatwoot"},
		{"replay", "1", "--to", "127.0.0.1:8080"},
		{"replay", "1", "--dry-run", "--to", "http://127.0.0.1:1"},
		{"replay", "--file", "webhook.json", "--force"},
		{"replay", "1", "--force", "--to", "http://127.0.0.1:1"},
		{"replay", "1", "--dryrun"},
	} {
		res := w.run(args...)
		if res.Code != ExitUsage || !strings.Contains(res.Err, "Try:") {
			t.Errorf("bridge %s: exit %d, want 2 with a hint\n%s", strings.Join(args, " "), res.Code, res.Err)
		}
	}
	checkGolden(t, "replay_usage", w.tr.String())
}

func TestReplay(t *testing.T) {
	w := newWorld(t)
	j := seedJournal(w)
	t.Setenv("EMAIL_BOT_KEY", testDifyKey2)

	w.mustRun(1, "replay", "99")

	// --dry-run decides with today's routes and touches nothing.
	q := w.snapshot()
	w.mustRun(0, "replay", itoa(j.ignored), itoa(j.failed), "--dry-run")
	// A refusal is a decision: the dry run says it and exits 0.
	res := w.mustRun(0, "replay", itoa(j.answered), itoa(j.rejected), "--dry-run")
	if !strings.Contains(res.Out, "refuse: already answered") || !strings.Contains(res.Out, "--force") || res.Err != "" {
		t.Errorf("dry run of an answered event: %q %q", res.Out, res.Err)
	}
	w.assertQuiet(q, "replay --dry-run")

	// A failed event, its cause fixed (the route is enabled again), is
	// driven again and answered.
	res = w.mustRun(0, "replay", itoa(j.failed))
	if got := botMessages(w.cw, j.max); !slices.Equal(got, []string{"Answer to: Do you ship to Berlin?"}) {
		t.Fatalf("after replaying the failed event, Chatwoot has bot messages %q", got)
	}

	// Now answered: refused, and nothing is sent.
	q = w.snapshot()
	res = w.mustRun(1, "replay", itoa(j.failed))
	e := w.event(j.failed)
	if !strings.Contains(res.Err, "Chatwoot message "+itoa(e.PostedMessageID)) || !strings.Contains(res.Err, "--force") {
		t.Errorf("replay of an answered event: %q", res.Err)
	}
	w.assertQuiet(q, "a refused replay")

	// --force posts a new answer.
	w.mustRun(0, "replay", itoa(j.failed), "--force")
	if got := botMessages(w.cw, j.max); len(got) != 2 {
		t.Errorf("after --force, Chatwoot has bot messages %q, want two answers", got)
	}

	// An event ignored for want of a route is decided again once the route
	// exists, as a new event.
	w.mustRun(0, "routes", "add", "--inbox", "2", "--dify-key-env", "EMAIL_BOT_KEY", "--name", "email")
	q = w.snapshot()
	w.mustRun(0, "replay", itoa(j.ignored), "--dry-run")
	w.assertQuiet(q, "replay --dry-run")
	res = w.mustRun(0, "replay", itoa(j.ignored), "--json")
	items := parseItems(t, res.Out)
	if len(items) != 1 || items[0].ID != j.ignored || items[0].Decision != "accepted" || items[0].Status != store.StatusAnswered ||
		items[0].NewEventID <= j.failed || items[0].Error != "" {
		t.Fatalf("replay --json of the ignored event = %+v", items)
	}
	if got := botMessages(w.cw, j.erik); !slices.Equal(got, []string{"Answer to: Hello, is anyone reading this inbox?"}) {
		t.Errorf("inbox 2 bot messages %q", got)
	}
	if ne := w.event(items[0].NewEventID); ne.DeliveryID != "replay-"+itoa(j.ignored) || ne.RouteID != 2 {
		t.Errorf("new event = %+v", ne)
	}

	// The customer asked for a human: replaying could only hand off again.
	q = w.snapshot()
	res = w.mustRun(1, "replay", itoa(j.handedOff))
	if !strings.Contains(res.Err, "event "+itoa(j.handedOff)+": handed off because the customer asked for a human") ||
		strings.Count(res.Err, "event "+itoa(j.handedOff)) != 1 {
		t.Errorf("replay of a customer's handoff: %q", res.Err)
	}
	w.assertQuiet(q, "a refused replay")

	// A rejected body that is not a webhook cannot be replayed; neither can
	// one the journal kept only the start of.
	res = w.mustRun(1, "replay", itoa(j.rejected))
	if !strings.Contains(res.Err, "not a usable webhook") {
		t.Errorf("replay of junk: %q", res.Err)
	}
	var cut int64
	w.withCore(func(o *bridge.Options) { o.WebhookToken = testWebhookToken }, func(ctx context.Context, core *bridge.Bridge, _ *store.DB) {
		body := w.say(j.max, "This webhook arrives without its token.")
		rec := httptest.NewRecorder()
		core.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/webhooks/chatwoot", strings.NewReader(string(body))))
		var ack bridge.Ack
		if err := json.Unmarshal(rec.Body.Bytes(), &ack); err != nil || rec.Code != http.StatusUnauthorized || len(body) <= 512 {
			t.Fatalf("webhook without token: %d %s (body %d bytes)", rec.Code, rec.Body, len(body))
		}
		cut = ack.EventID
	})
	res = w.mustRun(1, "replay", itoa(cut))
	if !strings.Contains(res.Err, "first 512 bytes") {
		t.Errorf("replay of a truncated rejected payload: %q", res.Err)
	}

	// --file takes a webhook body like a new delivery; - reads stdin.
	file := filepath.Join(w.dir, "webhook.json")
	if err := os.WriteFile(file, w.say(j.max, "Can I pay by invoice?"), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(w.dir, "fresh.json")
	if err := os.WriteFile(fresh, w.say(j.max, "Thanks a lot!"), 0o600); err != nil {
		t.Fatal(err)
	}
	q = w.snapshot()
	w.mustRun(0, "replay", "--file", fresh, "--dry-run")
	w.assertQuiet(q, "replay --file --dry-run")
	w.mustRun(0, "replay", "--file", file)
	w.mustRun(0, "replay", "--file", file, "--dry-run") // now a duplicate
	w.runWith(cliRun{Stdin: string(w.say(j.max, "And by card?"))}, "replay", "--file", "-")
	if got := botMessages(w.cw, j.max); len(got) != 4 || got[2] != "Answer to: Can I pay by invoice?" || got[3] != "Answer to: And by card?" {
		t.Errorf("bot messages after --file: %q", got)
	}
	bad := filepath.Join(w.dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"event": "message_created",`), 0o600); err != nil {
		t.Fatal(err)
	}
	q = w.snapshot()
	res = w.mustRun(1, "replay", "--file", bad)
	if !strings.Contains(res.Err, "not a Chatwoot webhook: malformed json") {
		t.Errorf("replay of bad JSON: %q", res.Err)
	}
	w.mustRun(1, "replay", "--file", filepath.Join(w.dir, "missing.json"))
	w.assertQuiet(q, "replay of an unreadable file")

	res = w.mustRun(0, "replay", "--file", fresh, "--dry-run", "--json")
	if items := parseItems(t, res.Out); len(items) != 1 || items[0].Decision != "accepted" || items[0].Kind != "message" ||
		items[0].Route == nil || items[0].Route.ID != 1 || items[0].Route.Key != "app-…d7Qz" || items[0].NewEventID != 0 {
		t.Errorf("replay --file --dry-run --json = %+v", items)
	}
	checkGolden(t, "replay", strings.ReplaceAll(w.tr.String(), w.dir, "<tmp>"))
}

func (w *world) event(id int64) store.Event {
	w.t.Helper()
	db, err := store.Open(w.t.Context(), w.db)
	if err != nil {
		w.t.Fatal(err)
	}
	defer db.Close()
	e, err := db.Event(w.t.Context(), id)
	if err != nil {
		w.t.Fatal(err)
	}
	return e
}

// TestReplayTo posts stored and file payloads to a server started in this
// process on the same database, with a webhook token and secret.
func TestReplayTo(t *testing.T) {
	w := newWorld(t)
	j := seedJournal(w)
	cfg := w.config()
	cfg.Chatwoot.WebhookToken = testWebhookToken
	cfg.Chatwoot.WebhookSecret = testWebhookSecret
	cfg.Retention.Ignored = 0 // the seeded events are older than the default retention
	ctx, cancel := context.WithCancel(context.Background())
	s, err := startServer(ctx, cfg, slog.New(slog.NewTextHandler(t.Output(), nil)), serveTuning{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := s.wait(ctx); err != nil {
			t.Error(err)
		}
	})
	t.Setenv("BRIDGE_CHATWOOT_WEBHOOK_TOKEN", testWebhookToken)
	t.Setenv("BRIDGE_CHATWOOT_WEBHOOK_SECRET", testWebhookSecret)
	base := "http://" + s.Addr()

	file := filepath.Join(w.dir, "webhook.json")
	if err := os.WriteFile(file, w.say(j.max, "Do you ship to Vienna?"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := w.mustRun(0, "replay", "--file", file, "--to", base)
	var ack bridge.Ack
	if err := json.Unmarshal([]byte(res.Out[strings.Index(res.Out, "{"):]), &ack); err != nil || ack.Status != "accepted" {
		t.Fatalf("replay --to: %v %q", err, res.Out)
	}
	waitFinished(t.Context(), s.db, ack.EventID, 10*time.Second)
	if got := botMessages(w.cw, j.max); !slices.Contains(got, "Answer to: Do you ship to Vienna?") {
		t.Errorf("the server did not answer the replayed webhook: %q", got)
	}
	if e, err := s.db.Event(t.Context(), ack.EventID); err != nil || e.DeliveryID != "replay-file" {
		t.Errorf("event %d: %v %+v", ack.EventID, err, e)
	}

	// Stored payloads: the server decides them as new deliveries.
	w.mustRun(0, "replay", itoa(j.answered), itoa(j.ignored), "--to", base+"/webhooks/chatwoot")
	res = w.mustRun(0, "replay", itoa(j.ignored), "--to", base, "--json")
	items := parseItems(t, res.Out)
	if len(items) != 1 || items[0].HTTPStatus != 200 || items[0].Decision != "ignored" || items[0].Reason != "no_route" || items[0].NewEventID == 0 {
		t.Errorf("replay --to --json = %+v", items)
	}
	if e, err := s.db.Event(t.Context(), items[0].NewEventID); err != nil || e.DeliveryID != "replay-"+itoa(j.ignored) {
		t.Errorf("event %d: %v %+v", items[0].NewEventID, err, e)
	}
	w.mustRun(1, "replay", itoa(j.rejected), "--to", base)

	// The server refuses a wrong secret or a missing token: exit 1.
	t.Setenv("BRIDGE_CHATWOOT_WEBHOOK_SECRET", "not-the-secret-of-the-server")
	res = w.mustRun(1, "replay", itoa(j.ignored), "--to", base)
	if !strings.Contains(res.Out, "HTTP 401") || !strings.Contains(res.Err, "refused it: HTTP 401") {
		t.Errorf("wrong secret: %q %q", res.Out, res.Err)
	}
	t.Setenv("BRIDGE_CHATWOOT_WEBHOOK_SECRET", testWebhookSecret)
	t.Setenv("BRIDGE_CHATWOOT_WEBHOOK_TOKEN", "")
	w.mustRun(1, "replay", itoa(j.ignored), "--to", base)
	// A token given in the URL is kept (and never printed).
	w.mustRun(0, "replay", itoa(j.ignored), "--to", base+"/webhooks/chatwoot?token="+testWebhookToken)

	// Nobody listening: exit 1.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	_ = ln.Close() // the point: a port nobody listens on
	res = w.mustRun(1, "replay", itoa(j.ignored), "--to", closed)
	if !strings.Contains(res.Err, "connection refused") {
		t.Errorf("unreachable target: %q", res.Err)
	}
	checkGolden(t, "replay_to", strings.ReplaceAll(w.tr.String(), w.dir, "<tmp>"))
}
