package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	botToken  = "bot-token-123456"
	userToken = "user-token-654321"
)

// hook is one webhook the receiver got.
type hook struct {
	header http.Header
	body   []byte
}

func (h hook) json(t *testing.T) map[string]any { return decodeJSON(t, h.body) }

// receiver stands in for bridge's webhook endpoint.
type receiver struct {
	mu     sync.Mutex
	got    []hook
	status int
	script []int         // statuses for the next requests, before status applies
	gate   chan struct{} // when set, requests wait for it to close
	ch     chan hook
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	t.Helper()
	rc := &receiver{status: 200, ch: make(chan hook, 256)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		gate, status := rc.gate, rc.status
		if len(rc.script) > 0 {
			status, rc.script = rc.script[0], rc.script[1:]
		}
		rc.mu.Unlock()
		if gate != nil {
			<-gate
		}
		h := hook{header: r.Header.Clone(), body: b}
		rc.mu.Lock()
		rc.got = append(rc.got, h)
		rc.mu.Unlock()
		rc.ch <- h
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"status":"accepted"}`))
	}))
	t.Cleanup(srv.Close)
	return rc, srv
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.got)
}

func (rc *receiver) next(t *testing.T) hook {
	t.Helper()
	select {
	case h := <-rc.ch:
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook arrived")
		return hook{}
	}
}

func newTestChatwoot(t *testing.T, opts ChatwootOptions) (*Chatwoot, *httptest.Server, *receiver) {
	t.Helper()
	rc, hooks := newReceiver(t)
	if opts.BotToken == "" {
		opts.BotToken = botToken
	}
	if opts.UserToken == "" {
		opts.UserToken = userToken
	}
	opts.WebhookURL = hooks.URL + "/webhooks/chatwoot?token=abc"
	c := NewChatwoot(opts)
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	t.Cleanup(c.Close)
	return c, srv, rc
}

func cwDo(t *testing.T, srv *httptest.Server, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("api_access_token", token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, readAll(t, resp)
}

func convPath(id int64, rest string) string {
	return "/api/v1/accounts/1/conversations/" + itoa(id) + rest
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

func TestChatwootPostMessage(t *testing.T) {
	c, srv, rc := newTestChatwoot(t, ChatwootOptions{})
	c.AddInbox(5, "Website", "")
	conv := c.NewConversation(5, Contact{ID: 12, Name: "Jane", Email: "jane@example.com"}, "pending")

	status, b := cwDo(t, srv, http.MethodPost, convPath(conv, "/messages"), botToken, map[string]any{
		"content": "Here is your answer", "message_type": "outgoing", "private": false,
		"source_id": "bridge:evt-1", "echo_id": "e-1",
	})
	if status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
	resp := decodeJSON(t, b)
	sender := resp["sender"].(map[string]any)
	if resp["message_type"] != float64(1) || resp["source_id"] != "bridge:evt-1" || resp["echo_id"] != "e-1" ||
		resp["conversation_id"] != float64(conv) || sender["type"] != "agent_bot" || sender["id"] != float64(7) {
		t.Fatalf("response %s", b)
	}
	if _, isInt := resp["created_at"].(float64); !isInt {
		t.Fatalf("created_at %v is not a number", resp["created_at"])
	}
	id := int64(resp["id"].(float64))

	msgs := c.Messages(conv)
	if len(msgs) != 1 || msgs[0].ID != id || msgs[0].SenderType != "agent_bot" || msgs[0].MessageType != "outgoing" ||
		msgs[0].SourceID != "bridge:evt-1" || msgs[0].Content != "Here is your answer" {
		t.Fatalf("Messages() = %+v", msgs)
	}

	echo := rc.next(t).json(t)
	want := map[string]any{"id": float64(7), "name": "Dify Bot", "type": "agent_bot"}
	if echo["event"] != "message_created" || echo["message_type"] != "outgoing" || echo["id"] != float64(id) ||
		echo["source_id"] != "bridge:evt-1" || echo["private"] != false || !equalJSON(echo["sender"], want) {
		t.Fatalf("echo %v", echo)
	}
	if _, ok := echo["echo_id"]; ok {
		t.Fatal("echo_id must not appear in webhooks")
	}

	t.Run("PrivateNoteWithUserToken", func(t *testing.T) {
		status, b := cwDo(t, srv, http.MethodPost, convPath(conv, "/messages"), userToken, map[string]any{
			"content": "AI requested handoff", "private": true,
		})
		if status != 200 {
			t.Fatalf("status %d: %s", status, b)
		}
		resp := decodeJSON(t, b)
		if resp["message_type"] != float64(1) || resp["content"] != "AI requested handoff" || resp["sender"].(map[string]any)["type"] != "user" {
			t.Fatalf("response %s", b)
		}
		if m := c.Messages(conv); m[len(m)-1].SenderType != "user" || m[len(m)-1].SenderID != 3 {
			t.Fatalf("stored %+v", m[len(m)-1])
		}
		echo := rc.next(t).json(t)
		want := map[string]any{"id": float64(3), "name": "Agent Smith", "email": "smith@example.com", "type": "user"}
		if echo["private"] != true || echo["message_type"] != "outgoing" || !equalJSON(echo["sender"], want) || echo["source_id"] != nil {
			t.Fatalf("echo %v", echo)
		}
		// The conversation's last message stays the last public one.
		last := echo["conversation"].(map[string]any)["messages"].([]any)[0].(map[string]any)
		if last["id"] != float64(id) {
			t.Fatalf("conversation.messages[0] = %v, want the public message %d", last, id)
		}
	})
	t.Run("IncomingWithUserToken", func(t *testing.T) {
		// MessageBuilder#sender: anything not outgoing is the contact's.
		status, b := cwDo(t, srv, http.MethodPost, convPath(conv, "/messages"), userToken, map[string]any{
			"content": "typed for the customer", "message_type": "incoming",
		})
		resp := decodeJSON(t, b)
		if status != 200 || resp["message_type"] != float64(0) || resp["sender"].(map[string]any)["type"] != "contact" {
			t.Fatalf("got %d %s", status, b)
		}
		rc.next(t)
	})
	t.Run("UnknownConversation", func(t *testing.T) {
		status, b := cwDo(t, srv, http.MethodPost, convPath(999, "/messages"), botToken, map[string]any{"content": "x"})
		if status != 404 || string(b) != `{"error":"Resource could not be found"}` {
			t.Fatalf("got %d %s", status, b)
		}
	})
	t.Run("BadContentType", func(t *testing.T) {
		status, b := cwDo(t, srv, http.MethodPost, convPath(conv, "/messages"), botToken, map[string]any{"content": "x", "content_type": "foo"})
		if status != 422 || string(b) != `{"error":"'foo' is not a valid content_type"}` {
			t.Fatalf("got %d %s", status, b)
		}
	})
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestChatwootEchoOrdering(t *testing.T) {
	t.Run("EchoSync", func(t *testing.T) {
		// The receiver checks, when the echo arrives, whether the POST that
		// caused it was already answered. It gives an early answer time to
		// show up, so an asynchronous echo is caught.
		returned := make(chan struct{})
		verdict := make(chan bool, 1)
		hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-returned:
				verdict <- false
			case <-time.After(200 * time.Millisecond):
				verdict <- true
			}
		}))
		t.Cleanup(hooks.Close)
		c := NewChatwoot(ChatwootOptions{BotToken: botToken, EchoSync: true, WebhookURL: hooks.URL})
		srv := httptest.NewServer(c)
		t.Cleanup(srv.Close)
		t.Cleanup(c.Close)
		conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
		status, _ := cwDo(t, srv, http.MethodPost, convPath(conv, "/messages"), botToken, map[string]any{"content": "hi"})
		close(returned)
		if status != 200 {
			t.Fatalf("status %d", status)
		}
		select {
		case before := <-verdict:
			if !before {
				t.Fatal("the POST was answered before its echo was delivered")
			}
		default:
			t.Fatal("the POST was answered before its echo arrived")
		}
	})
	t.Run("AsyncByDefault", func(t *testing.T) {
		c, srv, rc := newTestChatwoot(t, ChatwootOptions{})
		gate := make(chan struct{})
		rc.mu.Lock()
		rc.gate = gate // the receiver cannot answer until the POST is answered
		rc.mu.Unlock()
		conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
		status, _ := cwDo(t, srv, http.MethodPost, convPath(conv, "/messages"), botToken, map[string]any{"content": "hi"})
		if status != 200 {
			t.Fatalf("status %d", status)
		}
		close(gate)
		rc.next(t)
		c.Close()
		ds := c.Deliveries()
		if len(ds) != 1 || ds[0].Status != 200 || ds[0].Err != nil {
			t.Fatalf("deliveries %+v: the echo must not wait for the POST's answer", ds)
		}
	})
	t.Run("NoEcho", func(t *testing.T) {
		c, srv, rc := newTestChatwoot(t, ChatwootOptions{NoEcho: true, EchoSync: true})
		conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
		cwDo(t, srv, http.MethodPost, convPath(conv, "/messages"), botToken, map[string]any{"content": "hi"})
		if n := rc.count(); n != 0 {
			t.Fatalf("%d webhooks with NoEcho", n)
		}
	})
}

func TestChatwootAuth(t *testing.T) {
	c, srv, _ := newTestChatwoot(t, ChatwootOptions{})
	c.AddInbox(1, "Website", "https://bridge.example/webhooks/chatwoot")
	c.AddInbox(2, "Mail", "")
	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	tests := []struct {
		name, method, path, token string
		body                      any
		status                    int
		want                      string // exact body, or "" to skip
	}{
		{"NoToken", "POST", convPath(conv, "/toggle_typing_status"), "", map[string]any{}, 401, `{"errors":["You need to sign in or sign up before continuing."]}`},
		{"InvalidToken", "POST", convPath(conv, "/toggle_typing_status"), "nope", map[string]any{}, 401, `{"error":"Invalid Access Token"}`},
		{"DoctorProbe", "POST", convPath(0, "/toggle_typing_status"), botToken, map[string]any{"typing_status": "off"}, 404, `{"error":"Resource could not be found"}`},
		{"WrongAccount", "POST", "/api/v1/accounts/2/conversations/1/toggle_typing_status", botToken, map[string]any{}, 404, `{"error":"Resource could not be found"}`},
		{"LabelsBot", "POST", convPath(conv, "/labels"), botToken, map[string]any{"labels": []string{"x"}}, 401, `{"error":"Access to this endpoint is not authorized for bots"}`},
		{"ProfileBot", "GET", "/api/v1/profile", botToken, nil, 401, `{"error":"Access to this endpoint is not authorized for bots"}`},
		{"InboxesBot", "GET", "/api/v1/accounts/1/inboxes", botToken, nil, 401, `{"error":"Access to this endpoint is not authorized for bots"}`},
		// AccessTokenAuthHelper::BOT_ACCESSIBLE_ENDPOINTS has no show or index.
		{"ConversationBot", "GET", convPath(conv, ""), botToken, nil, 401, `{"error":"Access to this endpoint is not authorized for bots"}`},
		{"MessageListBot", "GET", convPath(conv, "/messages"), botToken, nil, 401, `{"error":"Access to this endpoint is not authorized for bots"}`},
		{"LabelListBot", "GET", convPath(conv, "/labels"), botToken, nil, 401, `{"error":"Access to this endpoint is not authorized for bots"}`},
		{"AgentBotBot", "GET", "/api/v1/accounts/1/inboxes/1/agent_bot", botToken, nil, 401, `{"error":"Access to this endpoint is not authorized for bots"}`},
		{"WebhooksBot", "GET", "/api/v1/accounts/1/webhooks", botToken, nil, 401, `{"error":"Access to this endpoint is not authorized for bots"}`},
		{"Typing", "POST", convPath(conv, "/toggle_typing_status"), botToken, map[string]any{"typing_status": "on"}, 200, ""},
		{"AgentBotNone", "GET", "/api/v1/accounts/1/inboxes/2/agent_bot", userToken, nil, 200, `{}`},
		{"InboxUnknown", "GET", "/api/v1/accounts/1/inboxes/9", userToken, nil, 404, `{"error":"Resource could not be found"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, b := cwDo(t, srv, tc.method, tc.path, tc.token, tc.body)
			if status != tc.status || (tc.want != "" && string(b) != tc.want) {
				t.Fatalf("got %d %s, want %d %s", status, b, tc.status, tc.want)
			}
		})
	}
	if c.Typing(conv) != "on" {
		t.Fatalf("Typing = %q", c.Typing(conv))
	}
	t.Run("Version", func(t *testing.T) {
		status, b := cwDo(t, srv, "GET", "/api", "", nil)
		m := decodeJSON(t, b)
		if status != 200 || m["version"] != "4.14.0" || m["queue_services"] != "ok" || m["data_services"] != "ok" {
			t.Fatalf("got %d %s", status, b)
		}
		if _, err := time.Parse("2006-01-02 15:04:05", m["timestamp"].(string)); err != nil {
			t.Fatalf("timestamp: %v", err)
		}
	})
	t.Run("Profile", func(t *testing.T) {
		status, b := cwDo(t, srv, "GET", "/api/v1/profile", userToken, nil)
		m := decodeJSON(t, b)
		accts, _ := m["accounts"].([]any)
		if status != 200 || m["id"] != float64(3) || len(accts) != 1 || accts[0].(map[string]any)["id"] != float64(1) {
			t.Fatalf("got %d %s", status, b)
		}
	})
	t.Run("Inboxes", func(t *testing.T) {
		status, b := cwDo(t, srv, "GET", "/api/v1/accounts/1/inboxes", userToken, nil)
		list, _ := decodeJSON(t, b)["payload"].([]any)
		if status != 200 || len(list) != 2 || list[0].(map[string]any)["name"] != "Website" {
			t.Fatalf("got %d %s", status, b)
		}
		status, b = cwDo(t, srv, "GET", "/api/v1/accounts/1/inboxes/1/agent_bot", userToken, nil)
		bot, _ := decodeJSON(t, b)["agent_bot"].(map[string]any)
		if status != 200 || bot["outgoing_url"] != "https://bridge.example/webhooks/chatwoot" || bot["id"] != float64(7) {
			t.Fatalf("got %d %s", status, b)
		}
	})
	t.Run("Webhooks", func(t *testing.T) {
		c.AddAccountWebhook("https://bridge.example/webhooks/chatwoot")
		status, b := cwDo(t, srv, "GET", "/api/v1/accounts/1/webhooks", userToken, nil)
		hooks, _ := decodeJSON(t, b)["payload"].(map[string]any)["webhooks"].([]any)
		if status != 200 || len(hooks) != 1 || hooks[0].(map[string]any)["url"] != "https://bridge.example/webhooks/chatwoot" {
			t.Fatalf("got %d %s", status, b)
		}
	})
	t.Run("CallsRecorded", func(t *testing.T) {
		calls := c.Calls()
		if len(calls) < len(tests) {
			t.Fatalf("%d calls recorded", len(calls))
		}
		first := calls[0]
		if first.Token != "" || first.Status != 401 || first.Method != "POST" || !strings.HasSuffix(first.Path, "/toggle_typing_status") {
			t.Fatalf("first call %+v", first)
		}
		if calls[1].Token != "invalid" || calls[2].Token != "bot" || calls[2].Status != 404 {
			t.Fatalf("calls %+v %+v", calls[1], calls[2])
		}
	})
}

func TestChatwootLabelsAndTeam(t *testing.T) {
	c, srv, _ := newTestChatwoot(t, ChatwootOptions{})
	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	status, b := cwDo(t, srv, "POST", convPath(conv, "/labels"), userToken, map[string]any{"labels": []string{"vip", "bot", "vip"}})
	if status != 200 || string(b) != `{"payload":["bot","vip"]}` {
		t.Fatalf("labels: %d %s", status, b)
	}
	if got := c.Labels(conv); !slices.Equal(got, []string{"bot", "vip"}) {
		t.Fatalf("Labels = %v", got)
	}
	c.AddTeam(4, "Billing")
	status, b = cwDo(t, srv, "POST", convPath(conv, "/assignments"), botToken, map[string]any{"team_id": 4})
	team := decodeJSON(t, b)
	if status != 200 || team["id"] != float64(4) || team["name"] != "Billing" || team["account_id"] != float64(1) {
		t.Fatalf("assignments: %d %s", status, b)
	}
	if c.Team(conv) != 4 {
		t.Fatalf("Team = %d", c.Team(conv))
	}
}

func TestChatwootToggleStatus(t *testing.T) {
	c, srv, rc := newTestChatwoot(t, ChatwootOptions{})
	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	status, b := cwDo(t, srv, "POST", convPath(conv, "/toggle_status"), botToken, map[string]any{"status": "open"})
	want := `{"meta":{},"payload":{"success":true,"conversation_id":1,"current_status":"open"}}`
	if status != 200 || string(b) != want {
		t.Fatalf("got %d %s, want %s", status, b, want)
	}
	if c.Status(conv) != "open" {
		t.Fatalf("Status = %q", c.Status(conv))
	}
	h := rc.next(t).json(t)
	if h["event"] != "conversation_status_changed" || h["status"] != "open" || h["id"] != float64(conv) {
		t.Fatalf("webhook %v", h)
	}
	if v, ok := h["changed_attributes"]; !ok || v != nil {
		t.Fatalf("changed_attributes = %v (present %v), want null", v, ok)
	}
	// The same status again changes nothing and sends nothing.
	cwDo(t, srv, "POST", convPath(conv, "/toggle_status"), botToken, map[string]any{"status": "open"})
	status, _ = cwDo(t, srv, "POST", convPath(conv, "/toggle_status"), botToken, map[string]any{"status": "bogus"})
	if status != 500 {
		t.Fatalf("invalid status answered %d, want 500", status)
	}
	c.Close()
	if n := rc.count(); n != 1 {
		t.Fatalf("%d webhooks, want 1", n)
	}
}

func TestChatwootFaults(t *testing.T) {
	c, srv, _ := newTestChatwoot(t, ChatwootOptions{NoEcho: true})
	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	c.Fail("messages", ChatwootFault{Status: 500}, ChatwootFault{Status: 429})
	post := func() (int, []byte) {
		return cwDo(t, srv, "POST", convPath(conv, "/messages"), botToken, map[string]any{"content": "hi"})
	}
	if status, b := post(); status != 500 {
		t.Fatalf("first: %d %s", status, b)
	}
	if status, b := post(); status != 429 || string(b) != "Retry later\n" {
		t.Fatalf("second: %d %s", status, b)
	}
	if status, b := post(); status != 200 {
		t.Fatalf("third: %d %s", status, b)
	}
	if n := len(c.Messages(conv)); n != 1 {
		t.Fatalf("%d messages stored, want only the successful one", n)
	}
	// Faults belong to their operation.
	c.Fail("toggle_status", ChatwootFault{Status: 503})
	if status, _ := post(); status != 200 {
		t.Fatalf("messages got another op's fault: %d", status)
	}
	t.Run("Drop", func(t *testing.T) {
		c.Fail("messages", ChatwootFault{Drop: true})
		req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+convPath(conv, "/messages"), strings.NewReader(`{"content":"x"}`))
		req.Header.Set("api_access_token", botToken)
		req.Header.Set("Content-Type", "application/json")
		if resp, err := srv.Client().Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("got %d, want a dropped connection", resp.StatusCode)
		}
		calls := c.Calls()
		if last := calls[len(calls)-1]; last.Status != 0 {
			t.Fatalf("dropped call recorded with status %d", last.Status)
		}
	})
	t.Run("DelayThenNormal", func(t *testing.T) {
		c.Fail("toggle_typing_status", ChatwootFault{Delay: time.Millisecond})
		status, _ := cwDo(t, srv, "POST", convPath(conv, "/toggle_typing_status"), botToken, map[string]any{"typing_status": "on"})
		if status != 200 {
			t.Fatalf("status %d", status)
		}
	})
}

func TestChatwootWaitFor(t *testing.T) {
	c, srv, _ := newTestChatwoot(t, ChatwootOptions{NoEcho: true})
	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+convPath(conv, "/messages"), strings.NewReader(`{"content":"later"}`))
		req.Header.Set("api_access_token", botToken)
		req.Header.Set("Content-Type", "application/json")
		if resp, err := srv.Client().Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	if err := c.WaitFor(ctx, func() bool { return len(c.Messages(conv)) == 1 }); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancelShort()
	if err := c.WaitFor(short, func() bool { return false }); err != context.DeadlineExceeded {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}
