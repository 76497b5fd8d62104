package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
	"github.com/bridge-dev/bridge/pkg/store/pgtest"
)

// Known secrets: tests search every output for them.
const (
	testBotToken  = "bot-token-SECRET-0001"
	testUserToken = "user-token-SECRET-0002"
	testDifyKey   = "app-difykeySECRET00000003"
	testSecret    = "webhook-secret-SECRET-0004"
)

// env is a running bridge against the simulated Chatwoot and Dify, all on
// loopback.
type env struct {
	t        *testing.T
	database string // the setting db was opened with
	db       *store.DB
	cw       *simulate.Chatwoot
	cwSrv    *httptest.Server
	dify     *simulate.Dify
	difySrv  *httptest.Server
	core     *Bridge
	srv      *httptest.Server
	route    *store.Route
	logs     *syncBuffer
	stop     func()
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type envOptions struct {
	appMode  string
	secret   bool
	token    string
	tune     func(*Options)
	route    func(*store.Route)
	cwOpts   func(*simulate.ChatwootOptions)
	noRoute  bool
	noRun    bool
	logLevel slog.Level
	// storeOpts tune the journal (busy timeout, retries) for fault tests.
	storeOpts []store.Option
	// database overrides the test's own database (testDatabase).
	database string
}

func newEnv(t *testing.T, eo envOptions) *env {
	t.Helper()
	ctx := t.Context()
	database := eo.database
	if database == "" {
		database = testDatabase(t)
	}
	db, err := store.Open(ctx, database, eo.storeOpts...)
	if err != nil {
		t.Fatal(err)
	}
	if eo.appMode == "" {
		eo.appMode = "chat"
	}
	d := simulate.NewDify(simulate.DifyApp{Key: testDifyKey, Name: "Support", Mode: eo.appMode})
	difySrv := httptest.NewServer(d)
	cwo := simulate.ChatwootOptions{AccountID: 1, BotToken: testBotToken, UserToken: testUserToken}
	if eo.cwOpts != nil {
		eo.cwOpts(&cwo)
	}
	cw := simulate.NewChatwoot(cwo)
	cwSrv := httptest.NewServer(cw)
	cw.SetFrontendURL(cwSrv.URL)
	cw.AddInbox(1, "Website", "")
	cw.AddInbox(2, "Unrouted", "")
	logs := &syncBuffer{}
	o := Options{
		Store:          db,
		Chatwoot:       chatwoot.NewClient(chatwoot.Options{BaseURL: cwSrv.URL, Token: testBotToken}),
		ChatwootUser:   chatwoot.NewClient(chatwoot.Options{BaseURL: cwSrv.URL, Token: testUserToken}),
		Logger:         slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: eo.logLevel})),
		BotStatuses:    []string{"pending"},
		DifyBaseURL:    difySrv.URL + "/v1",
		DifyTimeout:    10 * time.Second,
		DifyMaxRetries: 2,
		Concurrency:    4,
		RetryBase:      time.Millisecond,
		ShutdownGrace:  2 * time.Second,
		Handoff: HandoffOptions{
			Keywords: []string{"human", "agent", "operator", "real person"}, AIMarker: "[[handoff]]",
			Message: "Let me connect you with a member of our team.", OpenOnAgentReply: true,
		},
	}
	if eo.secret {
		o.WebhookSecret = testSecret
	}
	o.WebhookToken = eo.token
	if eo.tune != nil {
		eo.tune(&o)
	}
	core := New(o)
	srv := httptest.NewServer(core.Handler())
	hook := srv.URL + "/webhooks/chatwoot"
	if eo.token != "" {
		hook += "?token=" + eo.token
	}
	secret := ""
	if eo.secret {
		secret = testSecret
	}
	cw.SetWebhook(hook, secret)
	cw.AddInbox(1, "Website", hook) // the agent bot of inbox 1 points at bridge
	e := &env{t: t, database: database, db: db, cw: cw, cwSrv: cwSrv, dify: d, difySrv: difySrv, core: core, srv: srv, logs: logs}
	if !eo.noRoute {
		r := &store.Route{InboxID: 1, Name: "support", DifyKey: testDifyKey, Mode: store.ModeAuto, Enabled: true}
		if eo.route != nil {
			eo.route(r)
		}
		if err := db.AddRoute(ctx, r); err != nil {
			t.Fatal(err)
		}
		e.route = r
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if !eo.noRun {
		go func() { done <- core.Run(runCtx) }()
	} else {
		close(done)
	}
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if !eo.noRun {
				if err := <-done; err != nil {
					t.Errorf("run: %v", err)
				}
			}
			srv.Close()
			cw.Close()
			cwSrv.Close()
			d.Close()
			difySrv.Close()
			_ = db.Close()
		})
	}
	t.Cleanup(e.stop)
	return e
}

// testDatabase is the database of one test: a SQLite file, or with
// BRIDGE_TEST_STORE=postgres a schema of its own on BRIDGE_TEST_POSTGRES's
// server, to run the whole pipeline's tests on PostgreSQL.
func testDatabase(t *testing.T) string {
	t.Helper()
	if os.Getenv("BRIDGE_TEST_STORE") == "postgres" {
		return pgtest.URL(t)
	}
	return filepath.Join(t.TempDir(), "bridge.db")
}

// wait blocks until cond holds, re-checking after every journal commit and
// every change in the simulated Chatwoot.
func (e *env) wait(what string, cond func() bool) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 15*time.Second)
	defer cancel()
	changed := make(chan struct{}, 1)
	e.db.OnCommit(func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	defer e.db.OnCommit(func() {})
	go func() {
		_ = e.cw.WaitFor(ctx, func() bool {
			select {
			case changed <- struct{}{}:
			default:
			}
			return false
		})
	}()
	for !cond() {
		select {
		case <-changed:
		case <-ctx.Done():
			e.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (e *env) event(id int64) store.Event {
	e.t.Helper()
	ev, err := e.db.Event(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return ev
}

// waitState waits until event id reaches a final state and returns it.
func (e *env) waitFinal(id int64) store.Event {
	e.t.Helper()
	var ev store.Event
	e.wait(fmt.Sprintf("event %d to finish", id), func() bool {
		ev = e.event(id)
		return ev.Finished()
	})
	return ev
}

func ackOf(t *testing.T, d simulate.Delivery) Ack {
	t.Helper()
	var a Ack
	if err := json.Unmarshal(d.Response, &a); err != nil {
		t.Fatalf("ack %q: %v", d.Response, err)
	}
	return a
}

func (e *env) say(conv int64, text string) Ack {
	e.t.Helper()
	d, err := e.cw.CustomerSays(e.t.Context(), conv, text)
	if err != nil {
		e.t.Fatal(err)
	}
	if d.Status != http.StatusOK {
		e.t.Fatalf("webhook answered %d: %s", d.Status, d.Response)
	}
	return ackOf(e.t, d)
}

// public returns the public messages bridge posted in a conversation.
func (e *env) botReplies(conv int64) []string {
	var out []string
	for _, m := range e.cw.Messages(conv) {
		if m.MessageType == "outgoing" && !m.Private && m.SenderType == "agent_bot" {
			out = append(out, m.Content)
		}
	}
	return out
}

func (e *env) notes(conv int64) []string {
	var out []string
	for _, m := range e.cw.Messages(conv) {
		if m.Private {
			out = append(out, m.Content)
		}
	}
	return out
}

func TestEndToEndAnswerAndContext(t *testing.T) {
	e := newEnv(t, envOptions{secret: true})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 12, Name: "Jane", Email: "jane@example.com"}, "pending")
	a := e.say(conv, "Where is my order?")
	if a.Status != "accepted" || a.EventID == 0 {
		t.Fatalf("ack = %+v", a)
	}
	ev := e.waitFinal(a.EventID)
	if ev.Status != store.StatusAnswered || ev.PostedMessageID == 0 {
		t.Fatalf("event = %+v", ev)
	}
	if got := e.botReplies(conv); len(got) != 1 || got[0] != "Answer to: Where is my order?" {
		t.Fatalf("replies = %q", got)
	}
	// The second turn reuses the Dify conversation: the simulated app can
	// only quote the first question if it kept the context.
	b := e.say(conv, "What did I ask earlier?")
	e.waitFinal(b.EventID)
	if got := e.botReplies(conv); len(got) != 2 || got[1] != `Earlier you asked: "Where is my order?"` {
		t.Fatalf("replies = %q", got)
	}
	reqs := e.dify.Requests()
	if len(reqs) != 2 || reqs[0].ConversationID != "" || reqs[1].ConversationID == "" {
		t.Fatalf("dify requests = %+v", reqs)
	}
	if reqs[0].User != "chatwoot-1-12" || reqs[1].User != "chatwoot-1-12" || reqs[0].ResponseMode != "streaming" ||
		reqs[0].AutoGenerateName == nil || *reqs[0].AutoGenerateName {
		t.Errorf("request fields = %+v", reqs[0])
	}
	c, err := e.db.Conversation(t.Context(), 1, conv)
	if err != nil || c.DifyConversationID != reqs[1].ConversationID || c.Answers != 2 {
		t.Errorf("mapping = %+v, %v", c, err)
	}
	// bridge's own replies came back as webhooks and were ignored as its own.
	e.wait("echo webhooks journaled", func() bool {
		evs, _ := e.db.ListEvents(t.Context(), store.EventFilter{Status: store.StatusIgnored})
		n := 0
		for _, x := range evs {
			if x.Reason == ReasonOwnMessage {
				n++
			}
		}
		return n == 2
	})
	// The trace has every hop.
	hops, err := e.db.Hops(t.Context(), a.EventID)
	if err != nil {
		t.Fatal(err)
	}
	var stages []string
	for _, h := range hops {
		stages = append(stages, h.Stage+":"+h.Outcome)
	}
	want := []string{"decision:accepted", "worker:started", "dify:answer", "chatwoot:ok", "done:answered"}
	if strings.Join(stages, " ") != strings.Join(want, " ") {
		t.Errorf("trace = %v, want %v", stages, want)
	}
	// Typing was turned on while Dify worked and off at the end.
	if got := e.cw.Typing(conv); got != "off" {
		t.Errorf("typing = %q at the end", got)
	}
	on := 0
	for _, c := range e.cw.Calls() {
		if strings.HasSuffix(c.Path, "/toggle_typing_status") && strings.Contains(string(c.Body), `"on"`) {
			on++
		}
	}
	if on != 2 {
		t.Errorf("typing on calls = %d, want 2", on)
	}
}

func TestEndToEndInputsPlaceholders(t *testing.T) {
	e := newEnv(t, envOptions{route: func(r *store.Route) {
		r.Inputs = map[string]string{"customer": "{contact.name} <{contact.email}>", "where": "{inbox.name} #{conversation.id} acct {account.id}", "plain": "x"}
	}})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann", Email: "ann@example.com"}, "pending")
	e.waitFinal(e.say(conv, "hello").EventID)
	e.waitFinal(e.say(conv, "again").EventID)
	reqs := e.dify.Requests()
	if len(reqs) != 2 {
		t.Fatalf("requests = %d", len(reqs))
	}
	for _, r := range reqs {
		want := map[string]any{"customer": "Ann <ann@example.com>", "where": fmt.Sprintf("Website #%d acct 1", conv), "plain": "x"}
		for k, v := range want {
			if r.Inputs[k] != v {
				t.Errorf("inputs[%s] = %v, want %v (inputs are sent every turn)", k, r.Inputs[k], v)
			}
		}
	}
}

func TestEndToEndIgnoreReasons(t *testing.T) {
	e := newEnv(t, envOptions{secret: true})
	ctx := t.Context()
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	unrouted := e.cw.NewConversation(2, simulate.Contact{ID: 2, Name: "B"}, "pending")
	openConv := e.cw.NewConversation(1, simulate.Contact{ID: 3, Name: "C"}, "open")

	check := func(d simulate.Delivery, err error, want string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		a := ackOf(t, d)
		got := a.Reason
		if a.Status == "accepted" {
			got = "accepted"
		}
		if got != want {
			t.Errorf("ack = %+v, want %s", a, want)
		}
	}
	d, err := e.cw.CustomerSays(ctx, unrouted, "hi")
	check(d, err, ReasonNoRoute)
	d, err = e.cw.CustomerSays(ctx, openConv, "hi")
	check(d, err, "conversation_status:open")
	d, err = e.cw.AgentSays(ctx, conv, "a private note", true)
	check(d, err, ReasonPrivate)
	d, err = e.cw.CustomerSays(ctx, conv, "hello")
	check(d, err, "accepted")
	first := ackOf(t, d)
	d2, err := e.cw.Redeliver(ctx, d)
	check(d2, err, ReasonDuplicate)
	e.waitFinal(first.EventID)
	// Duplicate delivery answered once.
	if got := e.botReplies(conv); len(got) != 1 {
		t.Errorf("replies after redelivery = %q", got)
	}
	// Status events are journaled and ignored.
	d, err = e.cw.SetStatus(ctx, openConv, "resolved")
	check(d, err, ReasonNotMessageCreated)
	if err := e.db.SetRouteEnabled(ctx, e.route.ID, false); err != nil {
		t.Fatal(err)
	}
	e.core.InvalidateRoutes()
	d, err = e.cw.CustomerSays(ctx, conv, "hello?")
	check(d, err, ReasonDisabledRoute)
}

// fixedTests posts hand-written bodies for reasons the simulator does not
// produce by itself.
func TestEndToEndHandWrittenBodies(t *testing.T) {
	e := newEnv(t, envOptions{})
	cases := []struct {
		file, want string
	}{
		{"message_created_incoming_empty.json", ReasonEmpty},
		{"message_created_outgoing_bot.json", ReasonOwnMessage},
		{"message_created_private_note.json", ReasonPrivate},
		{"message_updated_incoming.json", ReasonNotMessageCreated},
	}
	for _, c := range cases {
		body := readFile(t, "../../testdata/chatwoot/"+c.file)
		resp := post(t, e.srv.URL+"/webhooks/chatwoot", body, nil)
		if resp.code != 200 {
			t.Fatalf("%s: %d %s", c.file, resp.code, resp.body)
		}
		var a Ack
		_ = json.Unmarshal([]byte(resp.body), &a)
		if a.Reason != c.want {
			t.Errorf("%s: ack %+v, want %s", c.file, a, c.want)
		}
	}
}

type response struct {
	code int
	body string
}

func post(t *testing.T, url string, body []byte, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, string(b)}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
