package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/viper"
)

// TestDemo runs `bridge demo` in-process: simulated Chatwoot and Dify, and
// the real serve (startServer on 127.0.0.1:0) between them.
func TestDemo(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Chdir(t.TempDir())
	var out, errOut bytes.Buffer
	root := NewRoot(IO{In: strings.NewReader(""), Out: &out, Err: &errOut}, viper.New())
	root.SetArgs([]string{"demo"})
	if err := root.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("demo failed: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	s := out.String()
	for _, want := range []string{
		`✓ reply: "Answer to: Hi! Where is my order #1234?"`,
		`✓ reply: "Earlier you asked: \"Hi! Where is my order #1234?\""`,
		"Stopped: handed to a human: customer asked for a human",
		`✓ reply: "Answer to: Hello from WhatsApp: do you ship to Cairo? (delivered on WhatsApp)"`,
		`+ image mug.jpg (image/jpeg)`,
		`(I received: image \"mug.jpg\")`,
		`WhatsApp customer: voice note voice.ogg (audio/ogg)`,
		`✓ reply: "Answer to: Can I pay on delivery? (delivered on WhatsApp)"`,
		"Dify kept one conversation",
		"Dashboard App of this conversation: http://127.0.0.1:",
		"(bridge demo --stay keeps it open)",
		"Demo passed.",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "\x1b[") {
		t.Error("colour codes in output to a buffer")
	}
}

// TestDemoStay runs `bridge demo --stay` and opens the Dashboard App URL it
// prints while it keeps serving: the page, and the conversation's data with
// the key from that URL.
func TestDemoStay(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Chdir(t.TempDir())
	out := &lockedBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	root := NewRoot(IO{In: strings.NewReader(""), Out: out, Err: io.Discard}, viper.New())
	root.SetArgs([]string{"demo", "--stay"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	var page string
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "Serving until Ctrl-C.") {
		select {
		case err := <-done:
			t.Fatalf("demo ended before serving: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo did not reach --stay:\n%s", out.String())
		}
	}
	m := regexp.MustCompile(`Dashboard App of this conversation: (\S+)\n`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no Dashboard App URL:\n%s", out.String())
	}
	page = m[1]
	u, err := url.Parse(page)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Errorf("page: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	q := u.Query()
	api := u.Scheme + "://" + u.Host + "/app/api/conversation?account_id=" + q.Get("account_id") + "&conversation_id=" + q.Get("conversation_id")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api, nil)
	req.Header.Set("Authorization", "Bearer "+q.Get("key"))
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var v struct {
		Conversation struct{ State string } `json:"conversation"`
		Events       []json.RawMessage      `json:"events"`
	}
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("data: %d %v", res.StatusCode, err)
	}
	if v.Conversation.State != "human" || len(v.Events) != 3 {
		t.Errorf("demo conversation: state %s, %d events; want human after the handoff, 3 events", v.Conversation.State, len(v.Events))
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("demo --stay after Ctrl-C: %v", err)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
