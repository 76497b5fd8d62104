package dify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

const testKey = "app-S3cretKeyForTests12345"

// recorded is one request as the fake server saw it.
type recorded struct {
	Method, Path, Auth, ContentType string
	Body                            map[string]any
}

// fakeDify serves one handler per "METHOD /path" and records every request; an unexpected
// request fails the test.
type fakeDify struct {
	t        *testing.T
	mu       sync.Mutex
	got      []recorded
	handlers map[string]http.HandlerFunc
}

func newFake(t *testing.T, handlers map[string]http.HandlerFunc) (*fakeDify, *Client) {
	t.Helper()
	f := &fakeDify{t: t, handlers: handlers}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c := NewClient(Options{BaseURL: srv.URL + "/v1/", Key: testKey, IdleTimeout: 5 * time.Second, UserAgent: "bridge-test"})
	return f, c
}

func (f *fakeDify) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := recorded{Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type")}
	// Uploads are left to the handler, which reads the parts.
	if !strings.HasPrefix(rec.ContentType, "multipart/") {
		if b, _ := io.ReadAll(r.Body); len(b) > 0 {
			if err := json.Unmarshal(b, &rec.Body); err != nil {
				f.t.Errorf("%s %s: body is not a JSON object: %q", r.Method, r.URL.Path, b)
			}
		}
	}
	f.mu.Lock()
	f.got = append(f.got, rec)
	f.mu.Unlock()
	h, ok := f.handlers[r.Method+" "+r.URL.Path]
	if !ok {
		f.t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	h(w, r)
}

func (f *fakeDify) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.got...)
}

func serveFile(t *testing.T, name string) http.HandlerFunc {
	b, err := os.ReadFile(filepath.Join(corpusDir, name))
	if err != nil {
		t.Fatal(err)
	}
	ct := "application/json"
	if strings.HasSuffix(name, ".sse") {
		ct = "text/event-stream; charset=utf-8"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ct)
		write(w, string(b))
	}
}

func serveError(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(body, "{") {
			w.Header().Set("Content-Type", "application/json")
		} else {
			w.Header().Set("Content-Type", "text/html")
		}
		w.WriteHeader(status)
		write(w, body)
	}
}

// write sends a test response; a client that hung up early is what some tests are about.
func write(w io.Writer, s string) {
	_, _ = io.WriteString(w, s)
}

// streamThen writes the frames, flushing each, then runs after (which may block or hang up).
func streamThen(frames string, after func(w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		for f := range strings.SplitAfterSeq(frames, "\n\n") {
			write(w, f)
			w.(http.Flusher).Flush()
		}
		if after != nil {
			after(w, r)
		}
	}
}

func TestChatRequest(t *testing.T) {
	f, c := newFake(t, map[string]http.HandlerFunc{"POST /v1/chat-messages": serveFile(t, "chat_streaming_basic.sse")})
	var started []string
	a, err := c.Chat(t.Context(), ChatRequest{Query: "My order hasn't arrived", User: "helpdesk:cust-42"},
		func(task, conv string) { started = append(started, task, conv) })
	if err != nil {
		t.Fatal(err)
	}
	if a.Text != " I" || a.ConversationID != "45701982-8118-4bc5-8e9b-64562b4555f2" {
		t.Errorf("answer = %+v", a)
	}
	if want := []string{"mock_task_id", "45701982-8118-4bc5-8e9b-64562b4555f2"}; !reflect.DeepEqual(started, want) {
		t.Errorf("onStart got %q, want %q", started, want)
	}

	_, err = c.Chat(t.Context(), ChatRequest{Query: "and now?", User: "helpdesk:cust-42", ConversationID: "45701982-8118-4bc5-8e9b-64562b4555f2",
		Inputs: map[string]any{"ticket_id": "T-1001"}, Files: []File{{Type: "image", TransferMethod: "remote_url", URL: "https://cdn.example/1.png"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}

	reqs := f.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	first := map[string]any{
		"query": "My order hasn't arrived", "inputs": map[string]any{}, "user": "helpdesk:cust-42",
		"response_mode": "streaming", "conversation_id": "", "auto_generate_name": false,
	}
	second := map[string]any{
		"query": "and now?", "inputs": map[string]any{"ticket_id": "T-1001"}, "user": "helpdesk:cust-42",
		"response_mode": "streaming", "conversation_id": "45701982-8118-4bc5-8e9b-64562b4555f2", "auto_generate_name": false,
		"files": []any{map[string]any{"type": "image", "transfer_method": "remote_url", "url": "https://cdn.example/1.png"}},
	}
	for i, want := range []map[string]any{first, second} {
		r := reqs[i]
		if r.Auth != "Bearer "+testKey || !strings.HasPrefix(r.ContentType, "application/json") {
			t.Errorf("request %d: Authorization %q, Content-Type %q", i, r.Auth, r.ContentType)
		}
		if !reflect.DeepEqual(r.Body, want) {
			t.Errorf("request %d body:\n got %v\nwant %v", i, r.Body, want)
		}
	}
}

func TestChatCorpusStreams(t *testing.T) {
	f, c := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/chat-messages": serveFile(t, "agent_streaming.sse"),
	})
	a, err := c.Chat(t.Context(), ChatRequest{Query: "draw a cat", User: "u"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Text != "Here is the image: " || !reflect.DeepEqual(fileURLs(a.Files), []string{"https://example.com/cat.png"}) {
		t.Errorf("answer = %+v", a)
	}
	f.handlers["POST /v1/chat-messages"] = serveFile(t, "chatflow_human_input_pause.sse")
	a, err = c.Chat(t.Context(), ChatRequest{Query: "draft", User: "u"}, nil)
	if err != nil || !a.Paused {
		t.Errorf("pause: answer %+v, error %v", a, err)
	}
}

func TestChatAppMode(t *testing.T) {
	// Without a word of narration, only the mode tells that the second message repeats the first.
	frames := "data: {\"event\":\"message\",\"task_id\":\"t\",\"answer\":\"Sure.\"}\n\n" +
		"data: {\"event\":\"message\",\"task_id\":\"t\",\"answer\":\"Sure.\"}\n\n" +
		"data: {\"event\":\"message_end\",\"task_id\":\"t\"}\n\n"
	_, c := newFake(t, map[string]http.HandlerFunc{"POST /v1/chat-messages": streamThen(frames, nil)})
	for mode, want := range map[string]string{ModeAgent: "Sure.", "chat": "Sure.Sure."} {
		a, err := c.Chat(t.Context(), ChatRequest{Query: "q", User: "u", AppMode: mode}, nil)
		if err != nil || a.Text != want {
			t.Errorf("mode %s: answer %+v, error %v; want %q", mode, a, err, want)
		}
	}
}

func TestChatBlockingFallback(t *testing.T) {
	_, c := newFake(t, map[string]http.HandlerFunc{"POST /v1/chat-messages": serveFile(t, "chat_blocking.json")})
	var task string
	a, err := c.Chat(t.Context(), ChatRequest{Query: "q", User: "u"}, func(tk, _ string) { task = tk })
	if err != nil {
		t.Fatal(err)
	}
	if a.Text != "iPhone 13 Pro Max specs are listed here:..." || a.MessageID != "9da23599-e713-473b-982c-4328d4f5c78a" ||
		a.ConversationID != "45701982-8118-4bc5-8e9b-64562b4555f2" || a.TaskID != "c3800678-a077-43df-a102-53f23ed20b88" ||
		a.Usage.TotalTokens != 1161 || a.Usage.TotalPrice != "0.0012890" || task != a.TaskID {
		t.Errorf("answer = %+v, onStart task %q", a, task)
	}
}

func TestChatErrors(t *testing.T) {
	hangUp := func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		_ = buf.Flush()  // whatever was buffered goes out before the hang-up
		_ = conn.Close() // no final chunk: the client sees the connection break
	}
	partial := sse(`{"event": "message", "task_id": "t1", "conversation_id": "c1", "answer": "Your order"}`, "ping",
		`{"event": "message", "task_id": "t1", "conversation_id": "c1", "answer": " shipped on"}`)
	notExists, err := os.ReadFile(filepath.Join(corpusDir, "error_404_conversation_not_exists.json"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		idle      time.Duration
		retryable bool
		check     func(t *testing.T, a *Answer, err error)
	}{
		{name: "Unauthorized", handler: serveError(401, `{"code": "unauthorized", "message": "Access token is invalid", "status": 401}`),
			check: func(t *testing.T, _ *Answer, err error) {
				var ae *APIError
				if !errors.As(err, &ae) || ae.Status != 401 || ae.Code != "unauthorized" || ae.InStream {
					t.Errorf("error = %v, want APIError 401", err)
				}
			}},
		{name: "ConversationNotExists", handler: serveError(404, string(notExists)),
			check: func(t *testing.T, _ *Answer, err error) {
				var ae *APIError
				if !errors.As(err, &ae) || !ae.ConversationNotExists() {
					t.Errorf("error = %v, want conversation not exists", err)
				}
			}},
		{name: "Nginx502", retryable: true,
			handler: serveError(502, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n"),
			check: func(t *testing.T, _ *Answer, err error) {
				var ae *APIError
				if !errors.As(err, &ae) || ae.Status != 502 || ae.Code != "" || ae.Message != "502 Bad Gateway" {
					t.Errorf("error = %#v, want APIError 502 with the page title", err)
				}
			}},
		{name: "InStreamError", handler: streamThen(sse(`{"event": "error", "message_id": "m", "conversation_id": "c", "code": "provider_quota_exceeded", "message": "Your quota for Dify Hosted Model Provider has been exhausted.", "status": 400}`), nil),
			check: func(t *testing.T, _ *Answer, err error) {
				var ae *APIError
				if !errors.As(err, &ae) || !ae.InStream || ae.Code != "provider_quota_exceeded" {
					t.Errorf("error = %v, want in-stream APIError", err)
				}
			}},
		{name: "StreamEndsMidAnswer", handler: streamThen(partial, nil), retryable: true,
			check: func(t *testing.T, a *Answer, err error) {
				if !errors.Is(err, ErrTruncated) || a == nil || a.Text != "Your order shipped on" {
					t.Errorf("answer %+v, error %v; want ErrTruncated with the partial text", a, err)
				}
			}},
		{name: "ConnectionBreaksMidAnswer", handler: streamThen(partial+`data: {"event": "mess`, hangUp), retryable: true,
			check: func(t *testing.T, _ *Answer, err error) {
				if !errors.Is(err, ErrTruncated) {
					t.Errorf("error = %v, want ErrTruncated", err)
				}
			}},
		{name: "PingThenSilence", idle: 100 * time.Millisecond, retryable: true,
			handler: streamThen(sse("ping"), func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }),
			check: func(t *testing.T, a *Answer, err error) {
				if !errors.Is(err, ErrIdle) || a.Pings != 1 {
					t.Errorf("answer %+v, error %v; want ErrIdle after one ping", a, err)
				}
			}},
		{name: "HTMLWith200", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			write(w, "<!doctype html><html><head><title>Dify</title></head></html>")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, c := newFake(t, map[string]http.HandlerFunc{"POST /v1/chat-messages": tc.handler})
			if tc.idle > 0 {
				c.idle = tc.idle
			}
			a, err := c.Chat(t.Context(), ChatRequest{Query: "where is my order", User: "u"}, nil)
			if err == nil {
				t.Fatalf("no error; answer %+v", a)
			}
			if strings.Contains(err.Error(), testKey) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), testKey) {
				t.Errorf("error mentions the key: %v", err)
			}
			if got := Retryable(err); got != tc.retryable {
				t.Errorf("Retryable(%v) = %v, want %v", err, got, tc.retryable)
			}
			if tc.check != nil {
				tc.check(t, a, err)
			}
		})
	}
}

func TestChatContextCanceled(t *testing.T) {
	release := make(chan struct{})
	_, c := newFake(t, map[string]http.HandlerFunc{"POST /v1/chat-messages": streamThen(sse("ping"), func(w http.ResponseWriter, r *http.Request) {
		close(release)
		<-r.Context().Done()
	})})
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-release
		cancel()
	}()
	_, err := c.Chat(ctx, ChatRequest{Query: "q", User: "u"}, nil)
	if !errors.Is(err, context.Canceled) || Retryable(err) {
		t.Errorf("error = %v, want non-retryable context.Canceled", err)
	}
}

func TestChatUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := NewClient(Options{BaseURL: url + "/v1", Key: testKey})
	_, err := c.Chat(t.Context(), ChatRequest{Query: "q", User: "u"}, nil)
	if err == nil || !Retryable(err) || strings.Contains(err.Error(), testKey) {
		t.Errorf("error = %v, want a retryable network error without the key", err)
	}
}

func TestStop(t *testing.T) {
	f, c := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/chat-messages/c3800678-a077-43df-a102-53f23ed20b88/stop": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			write(w, `{"result": "success"}`)
		},
		"POST /v1/chat-messages/unknown/stop": serveError(400, `{"code": "invalid_param", "message": "Arg user must be provided.", "status": 400}`),
	})
	if err := c.Stop(t.Context(), "c3800678-a077-43df-a102-53f23ed20b88", "helpdesk:cust-42"); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 1 || reqs[0].Auth != "Bearer "+testKey || !reflect.DeepEqual(reqs[0].Body, map[string]any{"user": "helpdesk:cust-42"}) {
		t.Errorf("requests = %+v", reqs)
	}
	err := c.Stop(t.Context(), "unknown", "")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "invalid_param" {
		t.Errorf("error = %v, want APIError invalid_param", err)
	}
}

func TestInfo(t *testing.T) {
	f, c := newFake(t, map[string]http.HandlerFunc{"GET /v1/info": serveFile(t, "info.json")})
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := &AppInfo{Name: "My Chat App", Description: "A helpful customer service chatbot.", Mode: "chat",
		AuthorName: "Dify Team", Tags: []string{"customer-service", "chatbot"}}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("info = %+v, want %+v", info, want)
	}
	if !HasChatEndpoint(info.Mode) {
		t.Errorf("mode %q has no chat endpoint", info.Mode)
	}
	if r := f.requests(); len(r) != 1 || r[0].Auth != "Bearer "+testKey {
		t.Errorf("requests = %+v", r)
	}
}

func TestHasChatEndpoint(t *testing.T) {
	for mode, want := range map[string]bool{"chat": true, "advanced-chat": true, "agent-chat": true, "agent": true,
		"completion": false, "workflow": false, "": false} {
		if got := HasChatEndpoint(mode); got != want {
			t.Errorf("HasChatEndpoint(%q) = %v, want %v", mode, got, want)
		}
	}
}

func TestParameters(t *testing.T) {
	t.Run("Corpus", func(t *testing.T) {
		_, c := newFake(t, map[string]http.HandlerFunc{"GET /v1/parameters": serveFile(t, "parameters.json")})
		p, err := c.Parameters(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		want := &Parameters{
			OpeningStatement: "Hello! How can I help you today?",
			Inputs:           []InputField{{Type: "text-input", Variable: "city", Label: "City", Required: true, Options: nil}},
			FileUploadImage:  true,
			FileUpload: FileUpload{ImageEnabled: true, ImageLimit: 3,
				ImageMethods: []string{TransferRemoteURL, TransferLocalFile}},
			Limits: SizeLimits{ImageMB: 10, FileMB: 15, AudioMB: 50, VideoMB: 100},
		}
		if !reflect.DeepEqual(p, want) {
			t.Errorf("parameters = %+v, want %+v", p, want)
		}
		if req := p.RequiredInputs(); len(req) != 1 || req[0].Variable != "city" {
			t.Errorf("required inputs = %+v", req)
		}
	})
	t.Run("AllTypes", func(t *testing.T) {
		body := `{"opening_statement": "", "user_input_form": [
			{"text-input": {"variable": "ticket_id", "label": "Ticket", "required": true, "max_length": 64, "default": "", "options": []}},
			{"paragraph": {"variable": "notes", "label": "Notes", "required": false, "max_length": "1000"}},
			{"select": {"variable": "tier", "label": "Tier", "required": true, "options": ["free", "pro"], "default": "free"}},
			{"number": {"variable": "n", "label": "N", "required": false, "default": 3}},
			{"file": {"variable": "doc", "label": "Doc", "required": false, "type": "file"}},
			{"checkbox": {"variable": "vip", "label": "VIP", "required": false, "default": true}},
			{"some-future-type": {"variable": "x", "label": "X", "required": true}}
		], "file_upload": {"enabled": true, "allowed_file_types": ["document"], "image": {"enabled": false}}}`
		_, c := newFake(t, map[string]http.HandlerFunc{"GET /v1/parameters": func(w http.ResponseWriter, r *http.Request) {
			write(w, body)
		}})
		p, err := c.Parameters(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		want := []InputField{
			{Type: "text-input", Variable: "ticket_id", Label: "Ticket", Required: true, MaxLength: 64, Options: []string{}},
			{Type: "paragraph", Variable: "notes", Label: "Notes", MaxLength: 1000},
			{Type: "select", Variable: "tier", Label: "Tier", Required: true, Options: []string{"free", "pro"}, Default: "free"},
			{Type: "number", Variable: "n", Label: "N", Default: "3"},
			{Type: "file", Variable: "doc", Label: "Doc"},
			{Type: "checkbox", Variable: "vip", Label: "VIP", Default: "true"},
			{Type: "some-future-type", Variable: "x", Label: "X", Required: true},
		}
		if !reflect.DeepEqual(p.Inputs, want) || p.FileUploadImage {
			t.Errorf("inputs = %+v\nwant %+v\nimage %v", p.Inputs, want, p.FileUploadImage)
		}
		var vars []string
		for _, f := range p.RequiredInputs() {
			vars = append(vars, f.Variable)
		}
		if !reflect.DeepEqual(vars, []string{"ticket_id", "tier", "x"}) {
			t.Errorf("required = %q", vars)
		}
	})
	t.Run("Unpublished", func(t *testing.T) {
		body, err := os.ReadFile(filepath.Join(corpusDir, "error_400_app_unavailable.json"))
		if err != nil {
			t.Fatal(err)
		}
		_, c := newFake(t, map[string]http.HandlerFunc{"GET /v1/parameters": serveError(400, string(body))})
		_, err = c.Parameters(t.Context())
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != "app_unavailable" {
			t.Errorf("error = %v, want app_unavailable", err)
		}
	})
}

func TestPing(t *testing.T) {
	f, c := newFake(t, map[string]http.HandlerFunc{"GET /v1/": func(w http.ResponseWriter, r *http.Request) {
		write(w, `{"welcome": "Dify OpenAPI", "api_version": "v1", "server_version": "1.13.2"}`)
	}})
	v, err := c.Ping(t.Context())
	if err != nil || v != "1.13.2" {
		t.Fatalf("Ping = %q, %v", v, err)
	}
	if r := f.requests(); len(r) != 1 || r[0].Auth != "" {
		t.Errorf("Ping sent %+v, want no Authorization", r)
	}

	_, c = newFake(t, map[string]http.HandlerFunc{"GET /v1/": func(w http.ResponseWriter, r *http.Request) {
		write(w, `{"status": "ok"}`)
	}})
	if _, err := c.Ping(t.Context()); err == nil {
		t.Error("Ping accepted a server that is not Dify")
	}
}

func TestURLJoin(t *testing.T) {
	for _, base := range []string{"https://api.dify.ai/v1", "https://api.dify.ai/v1/", "https://api.dify.ai/v1//"} {
		c := NewClient(Options{BaseURL: base})
		if got := c.url("/chat-messages"); got != "https://api.dify.ai/v1/chat-messages" {
			t.Errorf("url(%q) = %q", base, got)
		}
		if got := c.url("/"); got != "https://api.dify.ai/v1/" {
			t.Errorf("index url(%q) = %q", base, got)
		}
	}
}

func TestKeyNotPrinted(t *testing.T) {
	opts := Options{BaseURL: "https://api.dify.ai/v1", Key: testKey}
	c := NewClient(opts)
	for _, s := range []string{fmt.Sprint(opts), fmt.Sprintf("%+v", opts), fmt.Sprintf("%#v", opts), fmt.Sprint(c), fmt.Sprintf("%v", c)} {
		if strings.Contains(s, testKey) {
			t.Errorf("printed key: %s", s)
		}
	}
	bad := NewClient(Options{BaseURL: "https://api.dify.ai/v1", Key: testKey + "\n"})
	_, err := bad.Info(t.Context())
	if err == nil || strings.Contains(err.Error(), testKey) {
		t.Errorf("error = %v, want one without the key", err)
	}
}

func TestDefaultHTTPClient(t *testing.T) {
	c := NewClient(Options{BaseURL: "https://api.dify.ai/v1"})
	if c.hc == http.DefaultClient || c.hc.Timeout != 0 {
		t.Errorf("default client %p, Timeout %v: want an own client without an overall timeout", c.hc, c.hc.Timeout)
	}
	tr, ok := c.hc.Transport.(*http.Transport)
	if !ok || tr.ResponseHeaderTimeout == 0 || tr.TLSHandshakeTimeout == 0 {
		t.Errorf("transport %+v: want header and handshake timeouts", c.hc.Transport)
	}
	if c.idle != DefaultIdleTimeout || c.maxLine != DefaultMaxLine {
		t.Errorf("idle %v maxLine %d", c.idle, c.maxLine)
	}
}

// TestErrorsMaskTheKey: an error body that echoes the Authorization header
// (a 401 from a proxy, an in-stream error quoting the request) never puts
// the key into the error text, which ends up in logs, the journal and notes.
func TestErrorsMaskTheKey(t *testing.T) {
	echo := "Access token is invalid: Bearer " + testKey
	_, c := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/chat-messages": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"code":"unauthorized","message":%q,"status":401}`, echo)
		},
		"GET /v1/info": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, "<html><body>upstream refused Authorization: %s</body></html>", r.Header.Get("Authorization"))
		},
	})
	_, err := c.Chat(t.Context(), ChatRequest{Query: "hi", User: "u1"}, nil)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("Chat: %v, want a 401 APIError", err)
	}
	_, err2 := c.Info(t.Context())
	if err2 == nil {
		t.Fatal("Info: no error from a 502 page")
	}
	for _, e := range []error{err, err2} {
		if strings.Contains(e.Error(), testKey) || strings.Contains(e.Error(), "S3cretKeyForTests") {
			t.Errorf("the key is in the error text: %q", e)
		}
	}
	if !strings.Contains(err.Error(), "Bearer app-…2345") {
		t.Errorf("error text %q does not show the masked key where the key was", err)
	}
}

// TestStreamErrorMasksTheKey: an error event inside a stream is masked too.
func TestStreamErrorMasksTheKey(t *testing.T) {
	_, c := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/chat-messages": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "data: {\"event\":\"error\",\"status\":400,\"code\":\"invalid_param\",\"message\":\"bad header Bearer %s\"}\n\n", testKey)
		},
	})
	_, err := c.Chat(t.Context(), ChatRequest{Query: "hi", User: "u1"}, nil)
	if err == nil || strings.Contains(err.Error(), testKey) {
		t.Fatalf("Chat: %v; want an error without the key", err)
	}
}
