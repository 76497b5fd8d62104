package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/simulate"
)

// lineLog is a writer that keeps what was written and lets a test wait for
// a line, woken by every write rather than by polling.
type lineLog struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	lines   []string
	changed chan struct{}
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// jsonMsg matches a JSON log line whose msg is msg.
func jsonMsg(msg string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["msg"] == msg }
}

// waitJSON waits for a JSON log line that match accepts and returns it. It
// gives up when stop is closed or after limit.
func (l *lineLog) waitJSON(t *testing.T, limit time.Duration, stop <-chan struct{}, match func(map[string]any) bool) map[string]any {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	seen := 0
	for {
		l.mu.Lock()
		lines, changed := l.lines[seen:], l.changed
		seen = len(l.lines)
		l.mu.Unlock()
		for _, line := range lines {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && match(m) {
				return m
			}
		}
		select {
		case <-changed:
		case <-stop:
			t.Fatalf("the process ended before the expected log line:\n%s", l.String())
		case <-timer.C:
			t.Fatalf("no matching log line within %s:\n%s", limit, l.String())
		}
	}
}

// inProcess is `bridge serve` running inside the test.
type inProcess struct {
	addr   string
	stderr *lineLog
	stdout *lineLog
	cancel context.CancelFunc
	ended  chan struct{}
	code   int
}

// serveInProcess runs `bridge serve args...` in-process, as main does, and
// waits until it listens. Logs must be JSON (log_format or a non-terminal).
func serveInProcess(t *testing.T, args ...string) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{stderr: newLineLog(), stdout: newLineLog(), cancel: cancel, ended: make(chan struct{})}
	go func() {
		defer close(p.ended)
		p.code = executeForTest(ctx, IO{In: strings.NewReader(""), Out: p.stdout, Err: p.stderr}, time.Now,
			append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	}()
	t.Cleanup(func() { p.stop(t) })
	line := p.stderr.waitJSON(t, 20*time.Second, p.ended, jsonMsg("bridge serving"))
	p.addr, _ = line["listen"].(string)
	return p
}

// stop signals the server as the first SIGTERM would and returns its exit
// code once it has stopped.
func (p *inProcess) stop(t *testing.T) int {
	t.Helper()
	p.cancel()
	select {
	case <-p.ended:
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not stop:\n%s", p.stderr.String())
	}
	return p.code
}

// chatwootSaw is every message and API call body the simulated Chatwoot
// received in the conversations.
func chatwootSaw(cw *simulate.Chatwoot, convs ...int64) string {
	var sb strings.Builder
	for _, c := range convs {
		for _, m := range cw.Messages(c) {
			sb.WriteString(m.Content + "\n")
		}
	}
	for _, c := range cw.Calls() {
		sb.WriteString(c.Path + " " + string(c.Body) + "\n")
	}
	return sb.String()
}
