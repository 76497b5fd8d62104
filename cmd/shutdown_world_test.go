package cmd

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// watched is a running bridge binary whose JSON log lines a test can wait
// for.
type watched struct {
	t     *testing.T
	cmd   *exec.Cmd
	addr  string
	log   *lineLog
	ended chan struct{}
	err   error
}

// startWatched starts `bridge serve` with env (logs in JSON) and waits
// until it listens.
func startWatched(t *testing.T, bin string, env []string) *watched {
	t.Helper()
	w := &watched{t: t, log: newLineLog(), ended: make(chan struct{})}
	w.cmd = exec.Command(bin, "serve", "--listen", "127.0.0.1:0")
	w.cmd.Env = append(os.Environ(), append(env, "BRIDGE_LOG_FORMAT=json")...)
	w.cmd.Stderr = w.log
	w.cmd.Stdout = w.log
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.ended)
	}()
	t.Cleanup(func() {
		_ = w.cmd.Process.Kill() // it may have exited already
		<-w.ended
	})
	line := w.log.waitJSON(t, 20*time.Second, w.ended, jsonMsg("bridge serving"))
	w.addr, _ = line["listen"].(string)
	return w
}

func (w *watched) signal(sig syscall.Signal) {
	w.t.Helper()
	if err := w.cmd.Process.Signal(sig); err != nil {
		w.t.Fatal(err)
	}
}

// exitCode waits for the process to end and returns its exit code.
func (w *watched) exitCode(limit time.Duration) int {
	w.t.Helper()
	select {
	case <-w.ended:
	case <-time.After(limit):
		w.t.Fatalf("bridge did not exit within %s:\n%s", limit, w.log.String())
	}
	if w.err == nil {
		return 0
	}
	if ee, ok := w.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	w.t.Fatal(w.err)
	return -1
}

// shutdownWorld is a database with one route and the two simulators.
type shutdownWorld struct {
	db   string
	env  []string
	dify *simulate.Dify
	cw   *simulate.Chatwoot
}

func newShutdownWorld(t *testing.T) *shutdownWorld {
	t.Helper()
	dir := t.TempDir()
	const key = "app-shutdown00000000000000001"
	w := &shutdownWorld{db: filepath.Join(dir, "bridge.db")}
	w.dify = simulate.NewDify(simulate.DifyApp{Key: key, Name: "Support", Mode: "chat"})
	difySrv := httptest.NewServer(w.dify)
	t.Cleanup(func() { difySrv.Close(); w.dify.Close() })
	w.cw = simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: "bot-shutdown-token", NoEcho: true})
	cwSrv := httptest.NewServer(w.cw)
	t.Cleanup(func() { cwSrv.Close(); w.cw.Close() })
	w.cw.AddInbox(1, "Website", "")
	s, err := store.Open(t.Context(), w.db)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddRoute(t.Context(), &store.Route{InboxID: 1, DifyKey: key, Mode: store.ModeAuto, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	w.env = []string{
		"BRIDGE_DATABASE=" + w.db,
		"BRIDGE_CHATWOOT_BASE_URL=" + cwSrv.URL,
		"BRIDGE_CHATWOOT_API_TOKEN=bot-shutdown-token",
		"BRIDGE_DIFY_BASE_URL=" + difySrv.URL + "/v1",
		"XDG_CONFIG_HOME=" + dir,
	}
	return w
}

// capture returns the webhook body Chatwoot would deliver for a customer
// message, without delivering it to bridge.
func (w *shutdownWorld) capture(t *testing.T, conv int64, text string) []byte {
	t.Helper()
	sink := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(rw, `{"status":"ignored"}`)
	}))
	defer sink.Close()
	w.cw.SetWebhook(sink.URL, "")
	d, err := w.cw.CustomerSays(t.Context(), conv, text)
	if err != nil {
		t.Fatal(err)
	}
	return d.Body
}

func (w *shutdownWorld) event(t *testing.T, id int64) store.Event {
	t.Helper()
	s, err := store.Open(t.Context(), w.db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e, err := s.Event(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// say posts a customer message through the simulator and returns the id
// of the accepted event.
func (w *shutdownWorld) say(t *testing.T, conv int64, text string) int64 {
	t.Helper()
	d, err := w.cw.CustomerSays(t.Context(), conv, text)
	if err != nil || d.Status != http.StatusOK {
		t.Fatalf("webhook: %d %s %v", d.Status, d.Response, err)
	}
	var ack struct {
		Status  string `json:"status"`
		EventID int64  `json:"event_id"`
	}
	if err := json.Unmarshal(d.Response, &ack); err != nil || ack.Status != "accepted" {
		t.Fatalf("ack %s: %v", d.Response, err)
	}
	return ack.EventID
}
