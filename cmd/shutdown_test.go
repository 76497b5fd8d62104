package cmd

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

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
