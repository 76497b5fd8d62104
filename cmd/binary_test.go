package cmd

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

var (
	buildOnce sync.Once
	binDir    string
	builtBin  string
	buildErr  error
)

// TestMain removes the binary buildBridge built: it lives outside any
// test's TempDir because tests share it.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir) // the run is over; a leftover would only waste space
	}
	os.Exit(code)
}

// buildBridge builds the real binary once per test run.
func buildBridge(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "bridge-bin-")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(binDir, "bridge")
		cmd := exec.Command("go", "build", "-o", builtBin, "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// proc is a running bridge binary.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuf
	done   chan error
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServe starts `bridge serve` with env and waits for its listen address
// (read from the JSON log line "bridge serving").
func startServe(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	p := &proc{t: t, cmd: cmd, stderr: &syncBuf{}, done: make(chan error, 1)}
	cmd.Stderr = io.MultiWriter(pw, p.stderr)
	cmd.Stdout = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait(); _ = pw.Close() }()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "bridge serving" {
				if s, ok := line["listen"].(string); ok {
					addr <- s
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr) // keep draining so the child never blocks on stderr
	}()
	select {
	case a := <-addr:
		p.addr = a
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

func (p *proc) signal(sig syscall.Signal) {
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// exit waits for the process to end and returns its exit code.
func (p *proc) exit(limit time.Duration) int {
	p.t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		p.t.Fatal(err)
	case <-time.After(limit):
		p.t.Fatalf("process did not exit within %s:\n%s", limit, p.stderr.String())
	}
	return -1
}

// TestKillAfterAckLosesNothing: a process killed (SIGKILL) after
// acknowledging webhooks answers every one of them after a restart, none
// twice.
func TestKillAfterAckLosesNothing(t *testing.T) {
	bin := buildBridge(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "bridge.db")
	const key = "app-killtest0000000000000001"
	dify := simulate.NewDify(simulate.DifyApp{Key: key, Name: "Support", Mode: "chat"})
	// Dify holds every call, so no answer can be posted before the kill.
	dify.Hold()
	difySrv := httptest.NewServer(dify)
	defer difySrv.Close()
	defer dify.Close()
	cw := simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: "bot-kill-token"})
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
	env := []string{
		"BRIDGE_DATABASE=" + db,
		"BRIDGE_CHATWOOT_BASE_URL=" + cwSrv.URL,
		"BRIDGE_CHATWOOT_API_TOKEN=bot-kill-token",
		"BRIDGE_CHATWOOT_WEBHOOK_SECRET=kill-secret",
		"BRIDGE_DIFY_BASE_URL=" + difySrv.URL + "/v1",
		"BRIDGE_LOG_FORMAT=json",
		"XDG_CONFIG_HOME=" + dir,
	}
	p := startServe(t, bin, env)
	cw.SetWebhook("http://"+p.addr+"/webhooks/chatwoot", "kill-secret")
	const n = 20
	convs := make([]int64, n)
	for i := range n {
		convs[i] = cw.NewConversation(1, simulate.Contact{ID: int64(100 + i), Name: "C"}, "pending")
		d, err := cw.CustomerSays(t.Context(), convs[i], fmt.Sprintf("question %d", i))
		if err != nil || d.Status != 200 || !strings.Contains(string(d.Response), `"accepted"`) {
			t.Fatalf("webhook %d: %d %s %v", i, d.Status, d.Response, err)
		}
	}
	p.signal(syscall.SIGKILL)
	p.exit(10 * time.Second)
	for i := range n {
		if got := len(cw.Messages(convs[i])); got != 1 {
			t.Fatalf("conversation %d has %d messages before restart, want only the question", convs[i], got)
		}
	}
	dify.Release()
	p2 := startServe(t, bin, env)
	cw.SetWebhook("http://"+p2.addr+"/webhooks/chatwoot", "kill-secret")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	answered := func() bool {
		for i := range n {
			if countBot(cw, convs[i]) < 1 {
				return false
			}
		}
		return true
	}
	if err := cw.WaitFor(ctx, answered); err != nil {
		t.Fatalf("not every acknowledged message was answered after restart:\n%s", p2.stderr.String())
	}
	p2.signal(syscall.SIGTERM)
	if code := p2.exit(15 * time.Second); code != 0 {
		t.Errorf("serve exit code after SIGTERM = %d\n%s", code, p2.stderr.String())
	}
	for i := range n {
		msgs := cw.Messages(convs[i])
		if c := countBot(cw, convs[i]); c != 1 {
			t.Errorf("conversation %d answered %d times: %+v", convs[i], c, msgs)
		}
		want := fmt.Sprintf("Answer to: question %d", i)
		if msgs[len(msgs)-1].Content != want {
			t.Errorf("conversation %d: last message %q, want %q", convs[i], msgs[len(msgs)-1].Content, want)
		}
	}
}

func countBot(cw *simulate.Chatwoot, conv int64) int {
	n := 0
	for _, m := range cw.Messages(conv) {
		if m.MessageType == "outgoing" && !m.Private && m.SenderType == "agent_bot" {
			n++
		}
	}
	return n
}
