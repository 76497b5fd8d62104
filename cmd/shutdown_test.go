package cmd

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// TestShutdownOnSignal: on SIGTERM, serve stops accepting connections, lets
// a webhook already in flight commit and answers it, lets the running event
// finish within the grace period, leaves the event it had no time to start
// in the journal, and exits 0. The next start answers that event.
func TestShutdownOnSignal(t *testing.T) {
	bin := buildBridge(t)
	w := newShutdownWorld(t)
	w.dify.Hold()
	conv1 := w.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	conv2 := w.cw.NewConversation(1, simulate.Contact{ID: 2, Name: "B"}, "pending")
	late := w.capture(t, conv2, "a question sent as bridge stops")

	p := startWatched(t, bin, w.env)
	w.cw.SetWebhook("http://"+p.addr+"/webhooks/chatwoot", "")
	running := w.say(t, conv1, "a question bridge is answering")
	if err := w.dify.WaitFor(t.Context(), func() bool { return w.dify.Held() == 1 }); err != nil {
		t.Fatal(err)
	}

	// A webhook in flight: the handler has started reading its body (the
	// server sent 100 Continue) when the signal arrives.
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /webhooks/chatwoot HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", p.addr, len(late))
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "100 Continue") {
		t.Fatalf("interim response %q, %v", line, err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "\r\n" {
		t.Fatalf("interim response end %q, %v", line, err)
	}

	p.signal(syscall.SIGTERM)
	p.log.waitJSON(t, 10*time.Second, p.ended, jsonMsg("stopped accepting webhooks; finishing requests in flight"))
	if c, err := net.DialTimeout("tcp", p.addr, 5*time.Second); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted after the signal")
	}

	// The request in flight completes and is acknowledged after commit.
	if _, err := conn.Write(late); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ack struct {
		Status  string `json:"status"`
		EventID int64  `json:"event_id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&ack)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || ack.Status != "accepted" || ack.EventID == 0 {
		t.Fatalf("in-flight webhook: %d %+v %v", resp.StatusCode, ack, err)
	}

	// The running event finishes within the grace period.
	w.dify.Release()
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0:\n%s", code, p.log.String())
	}
	if e := w.event(t, running); e.Status != store.StatusAnswered {
		t.Errorf("running event after the grace period: %s %s", e.Status, e.LastError)
	}
	if got := countBot(w.cw, conv1); got != 1 {
		t.Errorf("conversation 1 has %d answers, want 1", got)
	}
	// The acknowledged webhook is in the journal, answered or still waiting.
	if e := w.event(t, ack.EventID); e.Status != store.StatusAccepted && e.Status != store.StatusAnswered {
		t.Fatalf("event acknowledged during shutdown: %s", e.Status)
	}

	// The next start answers whatever was left, once.
	p2 := startWatched(t, bin, w.env)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := w.cw.WaitFor(ctx, func() bool { return countBot(w.cw, conv2) == 1 }); err != nil {
		t.Fatalf("the webhook acknowledged during shutdown was not answered after restart:\n%s", p2.log.String())
	}
	p2.signal(syscall.SIGINT)
	if code := p2.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0:\n%s", code, p2.log.String())
	}
	if got := countBot(w.cw, conv1) + countBot(w.cw, conv2); got != 2 {
		t.Errorf("%d answers in total, want 2", got)
	}
}

// TestSecondSignalExitsAtOnce: a second signal during the grace period ends
// the process at once; the interrupted event stays in the journal and the
// next start answers it, once.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	bin := buildBridge(t)
	w := newShutdownWorld(t)
	w.dify.Hold()
	conv := w.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")

	p := startWatched(t, bin, w.env)
	w.cw.SetWebhook("http://"+p.addr+"/webhooks/chatwoot", "")
	id := w.say(t, conv, "hello")
	if err := w.dify.WaitFor(t.Context(), func() bool { return w.dify.Held() == 1 }); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGTERM)
	p.log.waitJSON(t, 10*time.Second, p.ended, jsonMsg("shutting down"))
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 1 {
		t.Fatalf("exit code %d after a second signal, want 1:\n%s", code, p.log.String())
	}
	logs := p.log.String()
	if !strings.Contains(logs, "second signal") {
		t.Errorf("no word about the second signal:\n%s", logs)
	}
	// It did not wait for the grace period to run out.
	if strings.Contains(logs, "interrupting running events") || strings.Contains(logs, `"msg":"stopped"`) {
		t.Errorf("the second signal waited for the graceful stop:\n%s", logs)
	}
	if e := w.event(t, id); e.Finished() {
		t.Fatalf("event finished while Dify held it: %s", e.Status)
	}

	w.dify.Release()
	p2 := startWatched(t, bin, w.env)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := w.cw.WaitFor(ctx, func() bool { return countBot(w.cw, conv) >= 1 }); err != nil {
		t.Fatalf("the interrupted event was not answered after restart:\n%s", p2.log.String())
	}
	p2.signal(syscall.SIGTERM)
	if code := p2.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0:\n%s", code, p2.log.String())
	}
	if got := countBot(w.cw, conv); got != 1 {
		t.Errorf("%d answers, want 1", got)
	}
	if e := w.event(t, id); e.Status != store.StatusAnswered {
		t.Errorf("event after restart: %s", e.Status)
	}
}
