package cmd

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// holdJournal takes the database's write lock from a second connection, as
// another program (a sqlite3 shell inside a transaction, a backup tool)
// would, until release is called.
func holdJournal(t *testing.T, path string) (release func()) {
	t.Helper()
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
			t.Error(err)
		}
		_ = conn.Close()  // the lock went with the rollback
		_ = other.Close() // as above
	}
	t.Cleanup(release)
	return release
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func pollFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeBusyPortTouchesNoDatabase: serve on a port already taken fails
// before it creates or migrates the database.
func TestServeBusyPortTouchesNoDatabase(t *testing.T) {
	dir := isolate(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	db := filepath.Join(dir, "state", "bridge.db")
	res := runCLI(t, "serve", "--listen", ln.Addr().String(), "--db", db)
	if res.Code != ExitFailed || !strings.Contains(res.Err, "listen on "+ln.Addr().String()) {
		t.Fatalf("serve on a busy port: exit %d\n%s", res.Code, res.Err)
	}
	if _, err := os.Stat(filepath.Dir(db)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("serve created %s before finding the port busy (%v)", filepath.Dir(db), err)
	}
}

// TestServeRefusesUnauthenticatedBeyondLoopback: without a webhook secret
// or token, serve does not listen where other hosts reach it; the error
// names the setting that accepts the risk.
func TestServeRefusesUnauthenticatedBeyondLoopback(t *testing.T) {
	dir := isolate(t)
	db := filepath.Join(dir, "bridge.db")
	res := runCLI(t, "serve", "--listen", "0.0.0.0:0", "--db", db)
	if res.Code != ExitUsage || !strings.Contains(res.Err, "chatwoot.webhook_secret") ||
		!strings.Contains(res.Err, "chatwoot.allow_unauthenticated") {
		t.Fatalf("serve on 0.0.0.0 without authentication: exit %d\n%s", res.Code, res.Err)
	}
	if _, err := os.Stat(db); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused serve created the database (%v)", err)
	}
}

// TestServeEndsWhenWorkersCannotStart: the journal stays locked past the
// start-up window. serve does not go on acknowledging webhooks nobody
// would answer: it logs why and ends with an error (exit 1 from main).
func TestServeEndsWhenWorkersCannotStart(t *testing.T) {
	w := newShutdownWorld(t)
	holdJournal(t, w.db)
	var logs syncBuf
	cfg := shutdownConfig(w)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := startServer(ctx, cfg, newLogger(&logs, "info", "json", false, nil), serveTuning{
		store:  []store.Option{store.WithBusyTimeout(20 * time.Millisecond), store.WithRetry(50 * time.Millisecond)},
		bridge: func(o *bridge.Options) { o.StartupRetryFor = 300 * time.Millisecond },
	})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.wait(ctx) }()
	select {
	case err = <-errc:
	case <-time.After(20 * time.Second):
		cancel()
		<-errc
		t.Fatalf("serve kept running without workers:\n%s", logs.String())
	}
	if err == nil || !strings.Contains(err.Error(), "resume events") {
		t.Fatalf("wait = %v; want the workers' start-up failure", err)
	}
	if !strings.Contains(logs.String(), "the workers are not running") {
		t.Errorf("nothing logged about the workers:\n%s", logs.String())
	}
}

// TestServeStartsAfterALock: a real `bridge serve` started while another
// program holds the journal locked. It stays alive and says it is not
// ready while start-up waits, and answers once the lock goes.
func TestServeStartsAfterALock(t *testing.T) {
	bin := buildBridge(t)
	w := newShutdownWorld(t)
	conv := w.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "Jane"}, "pending")
	release := holdJournal(t, w.db)
	p := startServe(t, bin, append(w.env, "BRIDGE_LOG_FORMAT=json"))
	base := "http://" + p.addr
	code, body := httpGet(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
		t.Errorf("readyz while the journal is locked: %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("healthz while start-up waits: %d %q", code, body)
	}
	release()
	pollFor(t, "serve ready", func() bool { c, _ := httpGet(t, base+"/readyz"); return c == http.StatusOK })
	w.cw.SetWebhook(base+"/webhooks/chatwoot", "")
	w.say(t, conv, "hello after the lock")
	if err := w.cw.WaitFor(t.Context(), func() bool { return countBot(w.cw, conv) == 1 }); err != nil {
		t.Fatalf("no answer after the lock went: %v\n%s", err, p.stderr.String())
	}
}

// echoingChatwoot is the simulated Chatwoot with two faults that echo the
// API token in the error body: the first public post answers 500, and
// setting the status answers 422.
type echoingChatwoot struct {
	cw        *simulate.Chatwoot
	postFails atomic.Bool
}

func (e *echoingChatwoot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok := r.Header.Get("api_access_token")
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/messages") && e.postFails.CompareAndSwap(false, true):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `{"error":"proxy: request with api_access_token=%s failed upstream"}`, tok)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/toggle_status"):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprintf(w, `{"error":"token %s may not change the status"}`, tok)
	default:
		e.cw.ServeHTTP(w, r)
	}
}

// TestSecretsEchoedByUpstreams runs the pipeline against a Dify that
// answers 401 quoting the key it got and a Chatwoot whose errors quote the
// token, then searches everything bridge wrote or showed: serve's log,
// `events show --json`, `events list --json`, doctor, the database file
// and its WAL, and every private note Chatwoot received.
func TestSecretsEchoedByUpstreams(t *testing.T) {
	dir := isolate(t)
	const (
		key    = "app-EchoedKeyNeverShown00017"
		token  = "bot-token-echoed-never-shown-33"
		secret = "hook-secret-echoed-never-shown-44"
	)
	d := simulate.NewDify(simulate.DifyApp{Key: key, Name: "Support", Mode: simulate.ModeChat})
	d.Fail(key, simulate.DifyFault{Status: http.StatusUnauthorized, Code: "unauthorized",
		Message: "Access token is invalid: Authorization: Bearer " + key})
	difySrv := httptest.NewServer(d)
	t.Cleanup(func() { difySrv.Close(); d.Close() })
	cw := simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: token})
	cwSrv := httptest.NewServer(&echoingChatwoot{cw: cw})
	t.Cleanup(func() { cwSrv.Close(); cw.Close() })
	cw.AddInbox(1, "Website", "")

	dbPath := filepath.Join(dir, "bridge.db")
	db, err := store.Open(t.Context(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.AddRoute(t.Context(), &store.Route{InboxID: 1, Name: "support", DifyKeyEnv: "ECHO_DIFY_KEY", Mode: store.ModeAuto, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"ECHO_DIFY_KEY":                  key,
		"BRIDGE_DATABASE":                dbPath,
		"BRIDGE_CHATWOOT_BASE_URL":       cwSrv.URL,
		"BRIDGE_CHATWOOT_API_TOKEN":      token,
		"BRIDGE_CHATWOOT_WEBHOOK_SECRET": secret,
		"BRIDGE_DIFY_BASE_URL":           difySrv.URL + "/v1",
		"BRIDGE_LOG_FORMAT":              "json",
	} {
		t.Setenv(k, v)
	}

	// serve, in this process, as main runs it.
	var serveErr syncBuf
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan int, 1)
	go func() {
		exited <- executeForTest(ctx, IO{In: strings.NewReader(""), Out: io.Discard, Err: &serveErr}, time.Now,
			"serve", "--listen", "127.0.0.1:0")
	}()
	var addr string
	pollFor(t, "serve listening", func() bool {
		for line := range strings.SplitSeq(serveErr.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "bridge serving" {
				addr, _ = m["listen"].(string)
			}
		}
		return addr != ""
	})
	cw.SetWebhook("http://"+addr+"/webhooks/chatwoot", secret)
	conv := cw.NewConversation(1, simulate.Contact{ID: 7, Name: "Jane"}, "pending")
	dl, err := cw.CustomerSays(t.Context(), conv, "where is my order?")
	if err != nil || dl.Status != http.StatusOK {
		t.Fatalf("webhook: %d %s %v", dl.Status, dl.Response, err)
	}
	var ack bridge.Ack
	if err := json.Unmarshal(dl.Response, &ack); err != nil || ack.Status != "accepted" {
		t.Fatalf("ack %s", dl.Response)
	}
	// The handoff note goes out, then the status change fails for good.
	show := func() string { return runCLI(t, "events", "show", fmt.Sprint(ack.EventID), "--json").Out }
	pollFor(t, "the event to fail", func() bool { return strings.Contains(show(), `"status": "failed"`) })
	cancel()
	if code := <-exited; code != ExitOK {
		t.Errorf("serve exited %d", code)
	}

	var notes []string
	for _, m := range cw.Messages(conv) {
		if m.Private {
			notes = append(notes, m.Content)
		}
	}
	if len(notes) == 0 {
		t.Fatal("no private note reached Chatwoot")
	}
	shown := show()
	if !strings.Contains(shown, "app-…0017") || !strings.Contains(shown, "****n-33") {
		t.Errorf("events show does not carry the masked credentials where the upstreams put them:\n%s", shown)
	}
	raw := map[string][]byte{
		"serve's log":          []byte(serveErr.String()),
		"events show --json":   []byte(shown),
		"events list --json":   []byte(runCLI(t, "events", "list", "--json").Out),
		"events show":          []byte(runCLI(t, "events", "show", fmt.Sprint(ack.EventID)).Out),
		"doctor --json":        []byte(runCLI(t, "doctor", "--json").Out),
		"the private notes":    []byte(strings.Join(notes, "\n")),
		"the conversation log": []byte(fmt.Sprint(cw.Messages(conv))),
	}
	for _, p := range []string{dbPath, dbPath + "-wal"} {
		b, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		raw[filepath.Base(p)] = b
	}
	for where, b := range raw {
		for _, s := range []string{key, token, secret, strings.TrimPrefix(key, "app-")} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds a credential (%s)", where, config.Mask(s))
			}
		}
	}
	if !strings.Contains(strings.Join(notes, "\n"), "app-…0017") {
		t.Errorf("the handoff note does not say which key Dify refused (masked): %q", notes)
	}
}

// shutdownConfig is the configuration a shutdown world's environment gives
// serve.
func shutdownConfig(w *shutdownWorld) *config.Config {
	cfg := config.Defaults()
	cfg.Database = w.db
	cfg.Listen = "127.0.0.1:0"
	for _, kv := range w.env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "BRIDGE_CHATWOOT_BASE_URL":
			cfg.Chatwoot.BaseURL = v
		case "BRIDGE_CHATWOOT_API_TOKEN":
			cfg.Chatwoot.APIToken = config.Secret(v)
		case "BRIDGE_DIFY_BASE_URL":
			cfg.Dify.BaseURL = v
		}
	}
	return &cfg
}
