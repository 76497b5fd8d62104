package cmd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// startActivated starts `bridge serve` as systemd starts a socket-activated
// service: the listening socket as file descriptor 3, LISTEN_FDS=1 and
// LISTEN_PID set to the new process's own pid (the shell's, which exec
// hands on).
func startActivated(t *testing.T, bin string, env []string, sock *os.File) *proc {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" serve`, bin)
	cmd.Env = append(os.Environ(), env...)
	cmd.ExtraFiles = []*os.File{sock}
	pr, pw := io.Pipe()
	p := &proc{t: t, cmd: cmd, stderr: &syncBuf{}, done: make(chan error, 1)}
	cmd.Stderr = io.MultiWriter(pw, p.stderr)
	cmd.Stdout = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait(); _ = pw.Close() }()
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "bridge serving" {
				ready <- line
			}
		}
		_, _ = io.Copy(io.Discard, pr) // keep draining so the child never blocks on stderr
	}()
	select {
	case line := <-ready:
		p.addr, _ = line["listen"].(string)
		if line["socket"] != "inherited" {
			t.Fatalf("serve did not take the socket: %v", line)
		}
	case err := <-p.done:
		t.Fatalf("bridge serve exited: %v\n%s", err, p.stderr.String())
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("bridge serve did not start:\n%s", p.stderr.String())
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// chatwootClient stands for Chatwoot's HTTP client between the simulated
// Chatwoot and bridge: a new connection for every delivery, as Chatwoot's
// webhook job makes (lib/webhooks/trigger.rb posts through RestClient, one
// request per connection), and a 5 s timeout (WEBHOOK_TIMEOUT). It counts
// refused connections and other failures, and sends a delivery that failed
// again, so that a kill -9 in the middle of one loses nothing.
type chatwootClient struct {
	target  string
	client  *http.Client
	refused atomic.Int64
	failed  atomic.Int64 // other errors: a connection the killed process held
}

func (c *chatwootClient) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, c.target+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := c.client.Do(req)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				c.refused.Add(1)
			} else {
				c.failed.Add(1)
			}
			if attempt < 20 && r.Context().Err() == nil {
				time.Sleep(50 * time.Millisecond) // the next process is starting
				continue
			}
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		_ = resp.Body.Close()
		return
	}
}

// TestSocketActivationRestartsDropNothing: the listening socket is held by
// this test, as systemd's bridge.socket holds it, while `bridge serve` is
// restarted under a continuous stream of webhooks: once stopped with
// SIGTERM, once killed with SIGKILL. No connection is ever refused (they
// wait in the socket's queue for the next process), no delivery fails
// across the SIGTERM restart, and every message is answered exactly once.
func TestSocketActivationRestartsDropNothing(t *testing.T) {
	bin := buildBridge(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "bridge.db")
	const key = "app-socket0000000000000000001"
	dify := simulate.NewDify(simulate.DifyApp{Key: key, Name: "Support", Mode: "chat"})
	difySrv := httptest.NewServer(dify)
	defer difySrv.Close()
	defer dify.Close()
	cw := simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: "bot-socket", UserToken: "user-socket"})
	cwSrv := httptest.NewServer(cw)
	defer cwSrv.Close()
	defer cw.Close()
	cw.AddInbox(1, "Website", "")
	s, err := store.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddRoute(t.Context(), &store.Route{InboxID: 1, DifyKey: key, Mode: store.ModeAuto, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sock, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	env := []string{
		"BRIDGE_DATABASE=" + db,
		"BRIDGE_LISTEN=127.0.0.1:1", // ignored: the socket is passed
		"BRIDGE_CHATWOOT_BASE_URL=" + cwSrv.URL,
		"BRIDGE_CHATWOOT_API_TOKEN=bot-socket",
		"BRIDGE_CHATWOOT_USER_TOKEN=user-socket",
		"BRIDGE_CHATWOOT_WEBHOOK_SECRET=socket-secret",
		"BRIDGE_DIFY_BASE_URL=" + difySrv.URL + "/v1",
		"BRIDGE_LOG_FORMAT=json",
		"XDG_CONFIG_HOME=" + dir,
	}
	client := &chatwootClient{target: "http://" + ln.Addr().String(),
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	front := httptest.NewServer(client)
	defer front.Close()
	cw.SetWebhook(front.URL+"/webhooks/chatwoot", "socket-secret")

	p := startActivated(t, bin, env, sock)
	if p.addr != ln.Addr().String() {
		t.Fatalf("serve listens on %s, want the passed socket %s", p.addr, ln.Addr())
	}

	const convs = 8
	ids := make([]int64, convs)
	for i := range ids {
		ids[i] = cw.NewConversation(1, simulate.Contact{ID: int64(100 + i), Name: "C"}, "pending")
	}
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	perConv := make([]int, convs)
	for i, conv := range ids {
		wg.Go(func() {
			for m := 0; ; m++ {
				select {
				case <-stop:
					perConv[i] = m
					return
				default:
				}
				d, err := cw.CustomerSays(context.Background(), conv, fmt.Sprintf("c%d m%d", i, m))
				if err != nil || d.Status != http.StatusOK {
					t.Errorf("conversation %d message %d: %d %s %v", conv, m, d.Status, d.Response, err)
				}
				sent.Add(1)
			}
		})
	}
	waitSent := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for sent.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d webhooks sent, want %d", sent.Load(), n)
			}
			time.Sleep(time.Millisecond) // polling a counter, not timing behaviour
		}
	}

	waitSent(100)
	p.signal(syscall.SIGTERM)
	if code := p.exit(15 * time.Second); code != 0 {
		t.Fatalf("serve exit code after SIGTERM = %d\n%s", code, p.stderr.String())
	}
	p = startActivated(t, bin, env, sock)
	waitSent(sent.Load() + 100)
	if n := client.failed.Load() + client.refused.Load(); n != 0 {
		t.Errorf("%d deliveries failed across a SIGTERM restart", n)
	}

	p.signal(syscall.SIGKILL)
	p.exit(10 * time.Second)
	p = startActivated(t, bin, env, sock)
	waitSent(sent.Load() + 100)
	close(stop)
	wg.Wait()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := cw.WaitFor(ctx, func() bool {
		for i, c := range ids {
			if countBot(cw, c) < perConv[i] {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("not every message was answered:\n%s", p.stderr.String())
	}
	refused := client.refused.Load()
	cw.SetWebhook("", "") // the echoes of the last answers need not wait for a process
	p.signal(syscall.SIGTERM)
	if code := p.exit(15 * time.Second); code != 0 {
		t.Errorf("serve exit code = %d\n%s", code, p.stderr.String())
	}
	if refused != 0 {
		t.Errorf("%d connections refused", refused)
	}
	for i, c := range ids {
		var got []string
		for _, m := range cw.Messages(c) {
			if m.MessageType == "outgoing" && !m.Private && m.SenderType == "agent_bot" {
				got = append(got, m.Content)
			}
		}
		if len(got) != perConv[i] {
			t.Errorf("conversation %d: %d answers for %d messages", c, len(got), perConv[i])
			continue
		}
		for m, a := range got {
			if want := fmt.Sprintf("Answer to: c%d m%d", i, m); a != want {
				t.Errorf("conversation %d answer %d = %q, want %q; all %q", c, m, a, want, got)
				break
			}
		}
	}
	t.Logf("%d webhooks over two restarts; deliveries the SIGKILL cut and the client sent again: %d", sent.Load(), client.failed.Load())
}
