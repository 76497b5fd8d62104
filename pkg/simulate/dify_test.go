package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

const (
	chatKey     = "app-chat0000000000000000001"
	agentKey    = "app-agent000000000000000001"
	flowKey     = "app-flow0000000000000000001"
	formKey     = "app-form0000000000000000001"
	workflowKey = "app-workflow00000000000001"
	newAgentKey = "app-newagent00000000000001"
)

func newTestDify(t *testing.T) (*Dify, *httptest.Server) {
	t.Helper()
	d := NewDify(
		DifyApp{Key: chatKey, Name: "Support", Mode: ModeChat},
		DifyApp{Key: agentKey, Name: "Agent", Mode: ModeAgentChat},
		DifyApp{Key: flowKey, Name: "Flow", Mode: ModeAdvancedChat},
		DifyApp{Key: formKey, Name: "Form", Mode: ModeChat, Inputs: []DifyInput{
			{Variable: "ticket", Label: "Ticket", Required: true},
			{Variable: "tier", Label: "Tier", Type: "select", Options: []string{"gold", "silver"}},
		}},
		DifyApp{Key: workflowKey, Name: "WF", Mode: ModeWorkflow},
		DifyApp{Key: newAgentKey, Name: "Concierge", Mode: ModeAgent},
	)
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	t.Cleanup(d.Close) // runs first: ends held or hanging handlers
	return d, srv
}

func difyDo(t *testing.T, ctx context.Context, srv *httptest.Server, method, path, key string, body any) *http.Response {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// rawChat posts to chat-messages without failing the test, for goroutines.
func rawChat(ctx context.Context, srv *httptest.Server, key string, body any) (int, []byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat-messages", bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return b
}

func chatBodyFor(query, user, conv, mode string) map[string]any {
	return map[string]any{"query": query, "user": user, "conversation_id": conv, "response_mode": mode, "inputs": map[string]any{}}
}

// frame is one SSE frame: a ping (no data) or a JSON event (no event line).
type frame struct {
	ping bool
	data map[string]any
}

func (f frame) event() string {
	s, _ := f.data["event"].(string)
	return s
}

// parseSSE reads a whole stream and checks Dify's framing strictly: every
// frame ends with a blank line and is either exactly "event: ping" or
// exactly one "data: <json>" line.
func parseSSE(t *testing.T, raw []byte) []frame {
	t.Helper()
	s := string(raw)
	if s != "" && !strings.HasSuffix(s, "\n\n") {
		t.Fatalf("stream does not end with a blank line: %q", tail(s))
	}
	var out []frame
	for _, block := range strings.Split(strings.TrimSuffix(s, "\n\n"), "\n\n") {
		if block == "" {
			continue
		}
		if strings.Contains(block, "\n") {
			t.Fatalf("frame has more than one line: %q", block)
		}
		switch {
		case block == "event: ping":
			out = append(out, frame{ping: true})
		case strings.HasPrefix(block, "data: "):
			var m map[string]any
			if err := json.Unmarshal([]byte(block[len("data: "):]), &m); err != nil {
				t.Fatalf("data line is not JSON: %v: %q", err, block)
			}
			out = append(out, frame{data: m})
		default:
			t.Fatalf("unexpected frame %q", block)
		}
	}
	return out
}

func tail(s string) string {
	if len(s) > 80 {
		return s[len(s)-80:]
	}
	return s
}

func events(frames []frame) []string {
	var out []string
	for _, f := range frames {
		if f.ping {
			out = append(out, "ping")
		} else {
			out = append(out, f.event())
		}
	}
	return out
}

// answerOf joins the deltas as a client should.
func answerOf(frames []frame) string {
	var b strings.Builder
	for _, f := range frames {
		switch f.event() {
		case "message", "agent_message":
			b.WriteString(f.data["answer"].(string))
		}
	}
	return b.String()
}

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return m
}

func wantError(t *testing.T, resp *http.Response, status int, code, msgPrefix string) {
	t.Helper()
	b := readAll(t, resp)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, b)
	}
	m := decodeJSON(t, b)
	if m["code"] != code || !strings.HasPrefix(m["message"].(string), msgPrefix) || m["status"] != float64(status) {
		t.Fatalf("error body %s, want code %q message %q...", b, code, msgPrefix)
	}
}

func TestDifyAuth(t *testing.T) {
	_, srv := newTestDify(t)
	tests := []struct {
		name, header, want string
	}{
		{"NoHeader", "", `{"code": "unauthorized", "message": "Authorization header must be provided and start with 'Bearer'", "status": 401}`},
		{"WrongScheme", "Basic " + chatKey, `{"code": "unauthorized", "message": "Authorization scheme must be 'Bearer'", "status": 401}`},
		{"UnknownKey", "Bearer app-nope", `{"code": "unauthorized", "message": "Access token is invalid", "status": 401}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v1/info", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b := readAll(t, resp)
			if resp.StatusCode != 401 || string(b) != tc.want {
				t.Fatalf("got %d %s, want 401 %s", resp.StatusCode, b, tc.want)
			}
			if resp.Header.Get("WWW-Authenticate") != `Bearer realm="api"` {
				t.Fatalf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	t.Run("LowercaseScheme", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v1/info", nil)
		req.Header.Set("Authorization", "bearer "+chatKey)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
	})
}

func TestDifyDiscovery(t *testing.T) {
	_, srv := newTestDify(t)
	t.Run("Liveness", func(t *testing.T) {
		b := readAll(t, difyDo(t, t.Context(), srv, http.MethodGet, "/v1/", "", nil))
		if string(b) != `{"welcome": "Dify OpenAPI", "api_version": "v1", "server_version": "1.14.2"}` {
			t.Fatalf("got %s", b)
		}
	})
	t.Run("Info", func(t *testing.T) {
		got := decodeJSON(t, readAll(t, difyDo(t, t.Context(), srv, http.MethodGet, "/v1/info", flowKey, nil)))
		want := decodeJSON(t, mustRead(t, "../../testdata/corpus/dify/info.json"))
		if !slices.Equal(sortedKeys(got), sortedKeys(want)) {
			t.Fatalf("info keys %v, want %v", sortedKeys(got), sortedKeys(want))
		}
		if got["mode"] != ModeAdvancedChat || got["name"] != "Flow" {
			t.Fatalf("info = %v", got)
		}
	})
	t.Run("Parameters", func(t *testing.T) {
		got := decodeJSON(t, readAll(t, difyDo(t, t.Context(), srv, http.MethodGet, "/v1/parameters", formKey, nil)))
		want := decodeJSON(t, mustRead(t, "../../testdata/corpus/dify/parameters.json"))
		if !slices.Equal(sortedKeys(got), sortedKeys(want)) {
			t.Fatalf("parameters keys %v, want %v", sortedKeys(got), sortedKeys(want))
		}
		form := got["user_input_form"].([]any)
		if len(form) != 2 {
			t.Fatalf("user_input_form = %v", form)
		}
		ticket := form[0].(map[string]any)["text-input"].(map[string]any)
		if ticket["variable"] != "ticket" || ticket["required"] != true || ticket["label"] != "Ticket" {
			t.Fatalf("ticket input = %v", ticket)
		}
		tier := form[1].(map[string]any)["select"].(map[string]any)
		if !slices.Equal(tier["options"].([]any), []any{"gold", "silver"}) || tier["required"] != false {
			t.Fatalf("tier input = %v", tier)
		}
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sortedKeys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

func streamChat(t *testing.T, srv *httptest.Server, key string, body map[string]any) []frame {
	t.Helper()
	resp := difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", key, body)
	raw := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Fatalf("Content-Type = %q", ct)
	}
	return parseSSE(t, raw)
}

func checkWrapper(t *testing.T, frames []frame) {
	t.Helper()
	var conv, msg, task any
	for _, f := range frames {
		if f.ping {
			continue
		}
		for _, k := range []string{"conversation_id", "message_id", "created_at", "task_id"} {
			if _, ok := f.data[k]; !ok && !(k == "task_id" && f.event() == "error") {
				t.Fatalf("%s event lacks %s: %v", f.event(), k, f.data)
			}
		}
		if conv == nil {
			conv, msg, task = f.data["conversation_id"], f.data["message_id"], f.data["task_id"]
		}
		if f.data["conversation_id"] != conv || f.data["message_id"] != msg || (f.event() != "error" && f.data["task_id"] != task) {
			t.Fatalf("wrapper ids change within one stream: %v", f.data)
		}
	}
}

func TestDifyStreamingChat(t *testing.T) {
	_, srv := newTestDify(t)
	query := "Where is my order number 42 please"
	frames := streamChat(t, srv, chatKey, chatBodyFor(query, "u1", "", "streaming"))
	checkWrapper(t, frames)
	ev := events(frames)
	if len(ev) < 3 || ev[len(ev)-1] != "message_end" {
		t.Fatalf("events %v: want several message deltas then message_end", ev)
	}
	for _, e := range ev[:len(ev)-1] {
		if e != "message" {
			t.Fatalf("events %v: want only message deltas before message_end (no ping without latency)", ev)
		}
	}
	if got := answerOf(frames); got != "Answer to: "+query {
		t.Fatalf("answer %q", got)
	}
	end := frames[len(frames)-1].data
	usage, ok := end["metadata"].(map[string]any)["usage"].(map[string]any)
	if !ok || usage["total_tokens"] == nil || usage["currency"] != "USD" {
		t.Fatalf("message_end metadata %v", end["metadata"])
	}
	if !isUUID(end["conversation_id"].(string)) {
		t.Fatalf("conversation_id %v is not a UUID", end["conversation_id"])
	}
}

func TestDifyStreamingModes(t *testing.T) {
	_, srv := newTestDify(t)
	t.Run("AgentChat", func(t *testing.T) {
		frames := streamChat(t, srv, agentKey, chatBodyFor("hello there agent", "u1", "", "streaming"))
		checkWrapper(t, frames)
		ev := events(frames)
		if ev[0] != "agent_thought" || ev[len(ev)-1] != "message_end" || !slices.Contains(ev, "agent_message") || slices.Contains(ev, "message") {
			t.Fatalf("events %v", ev)
		}
		if got := answerOf(frames); got != "Answer to: hello there agent" {
			t.Fatalf("answer %q", got)
		}
	})
	t.Run("NewAgent", func(t *testing.T) {
		const answer = "Answer to: hello there concierge"
		frames := streamChat(t, srv, newAgentKey, chatBodyFor("hello there concierge", "u1", "", "streaming"))
		checkWrapper(t, frames)
		ev := events(frames)
		if len(ev) < 6 || !slices.Equal(ev[:3], []string{"agent_message", "agent_thought", "agent_thought"}) ||
			ev[len(ev)-1] != "message_end" {
			t.Fatalf("events %v, want narration, a tool turn, message deltas, a closing message, message_end", ev)
		}
		var deltas strings.Builder
		for _, f := range frames[3 : len(frames)-2] {
			if f.event() != "message" {
				t.Fatalf("events %v: only message deltas between the tool turn and the closing message", ev)
			}
			deltas.WriteString(f.data["answer"].(string))
		}
		closing := frames[len(frames)-2]
		if deltas.String() != answer || closing.event() != "message" || closing.data["answer"] != answer {
			t.Fatalf("deltas %q, closing %v; want both to be %q", deltas.String(), closing.data, answer)
		}
		if frames[0].data["answer"] != newAgentNarration {
			t.Fatalf("narration %v", frames[0].data)
		}
		call, result := frames[1].data, frames[2].data
		if call["id"] != result["id"] || call["tool"] != "knowledge_lookup" || call["observation"] != "" ||
			result["observation"] == "" || call["tool_input"] != `{"query": "hello there concierge"}` {
			t.Fatalf("tool turn %v then %v", call, result)
		}
		// response_mode left out means streaming for these apps; blocking by name is refused.
		body := chatBodyFor("hi", "u1", "", "")
		delete(body, "response_mode")
		if frames := streamChat(t, srv, newAgentKey, body); events(frames)[len(frames)-1] != "message_end" {
			t.Fatalf("no response_mode: %v", events(frames))
		}
		resp := difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", newAgentKey, chatBodyFor("hi", "u1", "", "blocking"))
		wantError(t, resp, 400, "bad_request", "Agent App only supports streaming response mode.")
	})
	t.Run("AdvancedChat", func(t *testing.T) {
		frames := streamChat(t, srv, flowKey, chatBodyFor("hello there flow", "u1", "", "streaming"))
		checkWrapper(t, frames)
		ev := events(frames)
		var compact []string // collapse the message deltas
		for _, e := range ev {
			if e != "message" || compact[len(compact)-1] != "message" {
				compact = append(compact, e)
			}
		}
		want := []string{"ping", "workflow_started", "node_started", "message", "node_finished", "message_end", "workflow_finished"}
		if !slices.Equal(compact, want) {
			t.Fatalf("events %v, want %v", ev, want)
		}
		last := frames[len(frames)-1].data["data"].(map[string]any)
		if last["status"] != "succeeded" {
			t.Fatalf("workflow_finished %v", last)
		}
		if got := answerOf(frames); got != "Answer to: hello there flow" {
			t.Fatalf("answer %q", got)
		}
	})
}

func TestDifyCompactFrames(t *testing.T) {
	d, srv := newTestDify(t)
	resp := difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", chatKey, chatBodyFor("hi", "u1", "", "streaming"))
	if raw := readAll(t, resp); !bytes.HasPrefix(raw, []byte(`data: {"event": "message", "conversation_id": `)) {
		t.Fatalf("default frames are not json.dumps-spaced: %.80s", raw)
	}
	d.SetCompact(true)
	resp = difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", chatKey, chatBodyFor("hi", "u1", "", "streaming"))
	raw := readAll(t, resp)
	if !bytes.HasPrefix(raw, []byte(`data: {"event":"message","conversation_id":`)) {
		t.Fatalf("compact frames: %.80s", raw)
	}
	parseSSE(t, raw)
}

func TestDifyBlocking(t *testing.T) {
	_, srv := newTestDify(t)
	resp := difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", chatKey, chatBodyFor("héllo", "u1", "", "blocking"))
	raw := readAll(t, resp)
	if resp.StatusCode != 200 || !bytes.Contains(raw, []byte(`"event": "message"`)) || !bytes.Contains(raw, []byte(`h\u00e9llo`)) {
		t.Fatalf("blocking answer %d %s: want json.dumps style", resp.StatusCode, raw)
	}
	got := decodeJSON(t, raw)
	want := decodeJSON(t, mustRead(t, "../../testdata/corpus/dify/chat_blocking.json"))
	if !slices.Equal(sortedKeys(got), sortedKeys(want)) {
		t.Fatalf("keys %v, want %v", sortedKeys(got), sortedKeys(want))
	}
	if got["answer"] != "Answer to: héllo" || got["id"] != got["message_id"] || got["mode"] != "chat" {
		t.Fatalf("blocking answer %v", got)
	}
	// Absent response_mode means blocking too.
	body := chatBodyFor("x", "u1", "", "")
	delete(body, "response_mode")
	resp = difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", chatKey, body)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/json" {
		t.Fatalf("absent response_mode: %d %s", resp.StatusCode, ct)
	}
	readAll(t, resp)
}

func TestDifyConversationKeepsHistory(t *testing.T) {
	d, srv := newTestDify(t)
	first := streamChat(t, srv, chatKey, chatBodyFor("Where is my parcel?", "cust-1", "", "streaming"))
	conv := first[0].data["conversation_id"].(string)
	second := streamChat(t, srv, chatKey, chatBodyFor("What did I ask earlier?", "cust-1", conv, "streaming"))
	if got, want := answerOf(second), `Earlier you asked: "Where is my parcel?"`; got != want {
		t.Fatalf("second answer %q, want %q", got, want)
	}
	if second[0].data["conversation_id"] != conv {
		t.Fatalf("conversation changed: %v", second[0].data["conversation_id"])
	}
	if n := d.ConversationCount(chatKey); n != 1 {
		t.Fatalf("ConversationCount = %d, want 1", n)
	}
	if h := d.History(conv); len(h) != 2 || h[0].Answer != "Answer to: Where is my parcel?" {
		t.Fatalf("history %v", h)
	}
	reqs := d.Requests()
	if len(reqs) != 2 || !reqs[0].NewConversation || reqs[1].NewConversation || reqs[1].ConversationID != conv {
		t.Fatalf("requests %+v", reqs)
	}
	if reqs[0].Key != "app-…0001" || reqs[0].User != "cust-1" || reqs[0].ResponseMode != "streaming" {
		t.Fatalf("request record %+v", reqs[0])
	}
	// A fresh conversation has no history.
	fresh := streamChat(t, srv, chatKey, chatBodyFor("what did i say before?", "cust-1", "", "streaming"))
	if got := answerOf(fresh); got != "I have no earlier question from you." {
		t.Fatalf("fresh answer %q", got)
	}
}

func TestDifyConversationNotExists(t *testing.T) {
	_, srv := newTestDify(t)
	first := streamChat(t, srv, chatKey, chatBodyFor("hi", "owner", "", "streaming"))
	conv := first[0].data["conversation_id"].(string)
	t.Run("ForeignUser", func(t *testing.T) {
		resp := difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", chatKey, chatBodyFor("hi", "intruder", conv, "streaming"))
		wantError(t, resp, 404, "not_found", "Conversation Not Exists.")
	})
	t.Run("OtherApp", func(t *testing.T) {
		resp := difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", agentKey, chatBodyFor("hi", "owner", conv, "streaming"))
		wantError(t, resp, 404, "not_found", "Conversation Not Exists.")
	})
	t.Run("Unknown", func(t *testing.T) {
		resp := difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", chatKey, chatBodyFor("hi", "owner", newUUID(), "streaming"))
		wantError(t, resp, 404, "not_found", "Conversation Not Exists.")
	})
	t.Run("NotUUID", func(t *testing.T) {
		resp := difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", chatKey, chatBodyFor("hi", "owner", "42", "streaming"))
		wantError(t, resp, 400, "invalid_param", "1 validation error")
	})
	t.Run("ChatflowStreaming", func(t *testing.T) {
		// Dify 1.14 looks the conversation up in the chatflow worker and reports its failure as a
		// code-less error event; blocking calls still get the 404.
		frames := streamChat(t, srv, flowKey, chatBodyFor("hi", "owner", newUUID(), "streaming"))
		if got := events(frames); !slices.Equal(got, []string{"ping", "error"}) {
			t.Fatalf("events %v", got)
		}
		if e := frames[1].data; !maps.Equal(e, map[string]any{"event": "error", "message": "", "status": float64(500)}) {
			t.Fatalf("error event %v", e)
		}
		resp := difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", flowKey, chatBodyFor("hi", "owner", newUUID(), "blocking"))
		wantError(t, resp, 404, "not_found", "Conversation Not Exists.")
	})
	t.Run("Deleted", func(t *testing.T) {
		resp := difyDo(t, t.Context(), srv, http.MethodDelete, "/v1/conversations/"+conv, chatKey, map[string]any{"user": "intruder"})
		wantError(t, resp, 404, "not_found", "Conversation Not Exists.")
		resp = difyDo(t, t.Context(), srv, http.MethodDelete, "/v1/conversations/"+conv, chatKey, map[string]any{"user": "owner"})
		if b := readAll(t, resp); resp.StatusCode != 204 || len(b) != 0 {
			t.Fatalf("delete: %d %q", resp.StatusCode, b)
		}
		resp = difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", chatKey, chatBodyFor("hi", "owner", conv, "streaming"))
		wantError(t, resp, 404, "not_found", "Conversation Not Exists.")
	})
}

func TestDifyValidation(t *testing.T) {
	_, srv := newTestDify(t)
	without := func(k string) map[string]any {
		b := chatBodyFor("hi", "u1", "", "streaming")
		delete(b, k)
		return b
	}
	tests := []struct {
		name   string
		key    string
		body   map[string]any
		status int
		code   string
		msg    string
	}{
		{"NoUser", chatKey, without("user"), 400, "invalid_param", "Arg user must be provided."},
		{"EmptyUser", chatKey, chatBodyFor("hi", "", "", "streaming"), 400, "invalid_param", "Arg user must be provided."},
		{"NoQuery", chatKey, without("query"), 400, "invalid_param", "1 validation error"},
		{"EmptyQuery", chatKey, chatBodyFor("", "u1", "", "streaming"), 400, "invalid_param", "query is required"},
		{"NoInputs", chatKey, without("inputs"), 400, "invalid_param", "1 validation error"},
		{"BadMode", chatKey, chatBodyFor("hi", "u1", "", "fast"), 400, "invalid_param", "1 validation error"},
		{"RequiredInput", formKey, chatBodyFor("hi", "u1", "", "streaming"), 400, "invalid_param", "ticket is required in input form"},
		{"SelectOption", formKey, map[string]any{"query": "hi", "user": "u1", "response_mode": "streaming",
			"inputs": map[string]any{"ticket": "T-1", "tier": "bronze"}}, 400, "invalid_param", "tier in input form must be one of the following: ['gold', 'silver']"},
		{"AgentBlocking", agentKey, chatBodyFor("hi", "u1", "", "blocking"), 400, "invalid_param", "Agent Chat App does not support blocking mode"},
		{"AgentNoMode", agentKey, without("response_mode"), 400, "invalid_param", "Agent Chat App does not support blocking mode"},
		{"WorkflowApp", workflowKey, chatBodyFor("hi", "u1", "", "streaming"), 400, "not_chat_app", "Please check if your app mode matches the right API route."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", tc.key, tc.body)
			wantError(t, resp, tc.status, tc.code, tc.msg)
		})
	}
	t.Run("InputsGiven", func(t *testing.T) {
		frames := streamChat(t, srv, formKey, map[string]any{"query": "hi", "user": "u1", "response_mode": "streaming",
			"inputs": map[string]any{"ticket": "T-1", "tier": "gold"}})
		if events(frames)[len(frames)-1] != "message_end" {
			t.Fatalf("events %v", events(frames))
		}
	})
	t.Run("NotJSON", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/v1/chat-messages", strings.NewReader("query=hi"))
		req.Header.Set("Authorization", "Bearer "+chatKey)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, resp, 415, "unsupported_media_type", "Did not attempt to load JSON data")
	})
}

func TestDifyFaultsInOrder(t *testing.T) {
	d, srv := newTestDify(t)
	const busy = "Too many requests. Please try again later. The current maximum concurrent requests allowed for app is 1."
	d.Fail(chatKey,
		DifyFault{Status: 500},
		DifyFault{Status: 400, Code: "invalid_param", Message: busy},
		DifyFault{HTML: true},
		DifyFault{Status: 429},
		DifyFault{Quota: true},
	)
	post := func() *http.Response {
		return difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", chatKey, chatBodyFor("hi", "u1", "", "streaming"))
	}
	wantError(t, post(), 500, "internal_server_error", "The server encountered an internal error")
	wantError(t, post(), 400, "invalid_param", busy)
	resp := post()
	b := readAll(t, resp)
	if resp.StatusCode != 502 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !bytes.Contains(b, []byte("<center>nginx</center>")) {
		t.Fatalf("HTML fault: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	wantError(t, post(), 429, "too_many_requests", "Too many requests.")
	wantError(t, post(), 429, "rate_limit_error", "Workflow execution quota limit reached for tenant "+d.tenantID)
	// The queue is used up: normal again.
	frames := streamChat(t, srv, chatKey, chatBodyFor("hi", "u1", "", "streaming"))
	if answerOf(frames) != "Answer to: hi" {
		t.Fatalf("after faults: %v", events(frames))
	}
	// Faults belong to one app.
	d.Fail(agentKey, DifyFault{Status: 500})
	frames = streamChat(t, srv, chatKey, chatBodyFor("hi", "u1", "", "streaming"))
	if answerOf(frames) != "Answer to: hi" {
		t.Fatalf("other app's fault applied: %v", events(frames))
	}
}

func TestDifyStreamFaults(t *testing.T) {
	d, srv := newTestDify(t)
	long := "one two three four five six seven eight nine ten"
	t.Run("CutAfter", func(t *testing.T) {
		d.Fail(chatKey, DifyFault{CutAfter: 1})
		resp := difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", chatKey, chatBodyFor(long, "u1", "", "streaming"))
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("read error %v, want unexpected EOF (connection dropped mid-stream)", err)
		}
		frames := parseSSE(t, raw)
		if got := events(frames); !slices.Equal(got, []string{"message"}) {
			t.Fatalf("events before the cut %v", got)
		}
	})
	t.Run("ErrorEvent", func(t *testing.T) {
		d.Fail(chatKey, DifyFault{ErrorEvent: true})
		frames := streamChat(t, srv, chatKey, chatBodyFor(long, "u1", "", "streaming"))
		checkWrapper(t, frames)
		if got := events(frames); !slices.Equal(got, []string{"message", "error"}) {
			t.Fatalf("events %v", got)
		}
		e := frames[1].data
		if e["code"] != "completion_request_error" || e["message"] != "[openai] Rate Limit Error" || e["status"] != float64(400) {
			t.Fatalf("error event %v", e)
		}
		if _, ok := e["task_id"]; ok {
			t.Fatalf("error event has task_id: %v", e)
		}
	})
	t.Run("WorkflowFailed", func(t *testing.T) {
		d.Fail(flowKey, DifyFault{WorkflowFailed: true})
		frames := streamChat(t, srv, flowKey, chatBodyFor("hi", "u1", "", "streaming"))
		ev := events(frames)
		if ev[len(ev)-1] != "workflow_finished" || slices.Contains(ev, "error") || slices.Contains(ev, "message_end") {
			t.Fatalf("events %v", ev)
		}
		data := frames[len(frames)-1].data["data"].(map[string]any)
		if data["status"] != "failed" || data["error"] != "node llm failed" {
			t.Fatalf("workflow_finished data %v", data)
		}
	})
	t.Run("Paused", func(t *testing.T) {
		d.Fail(flowKey, DifyFault{Paused: true})
		frames := streamChat(t, srv, flowKey, chatBodyFor("hi", "u1", "", "streaming"))
		if got := events(frames); !slices.Equal(got, []string{"ping", "workflow_started", "human_input_required", "workflow_paused"}) {
			t.Fatalf("events %v", got)
		}
		reasons := frames[3].data["data"].(map[string]any)["reasons"].([]any)
		if reasons[0].(map[string]any)["TYPE"] != "human_input_required" {
			t.Fatalf("workflow_paused reasons %v", reasons)
		}
	})
	t.Run("WorkerError", func(t *testing.T) {
		d.Fail(flowKey, DifyFault{WorkerError: true}, DifyFault{WorkerError: true, Message: "query is required"},
			DifyFault{WorkerError: true})
		for _, msg := range []string{"", "query is required"} {
			frames := streamChat(t, srv, flowKey, chatBodyFor("hi", "u1", "", "streaming"))
			if got := events(frames); !slices.Equal(got, []string{"ping", "error"}) {
				t.Fatalf("events %v", got)
			}
			if e := frames[1].data; !maps.Equal(e, map[string]any{"event": "error", "message": msg, "status": float64(500)}) {
				t.Fatalf("error event %v, want no code and message %q", e, msg)
			}
		}
		resp := difyDo(t, t.Context(), srv, http.MethodPost, "/v1/chat-messages", flowKey, chatBodyFor("hi", "u1", "", "blocking"))
		wantError(t, resp, 500, "internal_server_error", "The server encountered")
	})
	t.Run("Empty", func(t *testing.T) {
		d.Fail(chatKey, DifyFault{Empty: true})
		frames := streamChat(t, srv, chatKey, chatBodyFor("hi", "u1", "", "streaming"))
		if got := events(frames); !slices.Equal(got, []string{"message_end"}) {
			t.Fatalf("events %v", got)
		}
	})
	t.Run("PingsOnly", func(t *testing.T) {
		d.Fail(chatKey, DifyFault{PingsOnly: true})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		resp := difyDo(t, ctx, srv, http.MethodPost, "/v1/chat-messages", chatKey, chatBodyFor("hi", "u1", "", "streaming"))
		defer resp.Body.Close()
		buf := make([]byte, len("event: ping\n\n"))
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "event: ping\n\n" {
			t.Fatalf("first frame %q, %v", buf, err)
		}
		cancel() // the client gives up; the handler must return
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Fatal("stream ended cleanly; want it to hang until the client left")
		}
	})
}

func TestDifyStopEndsSlowStream(t *testing.T) {
	d, srv := newTestDify(t)
	d.SetLatency(time.Hour) // without a working stop the request never ends
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	type result struct {
		err error
		raw []byte
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat-messages",
			strings.NewReader(`{"query":"slow one","user":"u1","inputs":{},"response_mode":"streaming"}`))
		req.Header.Set("Authorization", "Bearer "+chatKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{raw: raw, err: err}
	}()
	if err := d.WaitFor(ctx, func() bool { return len(d.Requests()) == 1 }); err != nil {
		t.Fatal(err)
	}
	task := d.Requests()[0].TaskID

	// Another user's stop is ignored, as Dify does.
	wrong := difyDo(t, ctx, srv, http.MethodPost, "/v1/chat-messages/"+task+"/stop", chatKey, map[string]any{"user": "u2"})
	if b := readAll(t, wrong); string(b) != `{"result": "success"}` {
		t.Fatalf("stop answer %s", b)
	}
	select {
	case r := <-done:
		t.Fatalf("stream ended on another user's stop: %s", r.raw)
	default:
	}

	stop := difyDo(t, ctx, srv, http.MethodPost, "/v1/chat-messages/"+task+"/stop", chatKey, map[string]any{"user": "u1"})
	if b := readAll(t, stop); stop.StatusCode != 200 || string(b) != `{"result": "success"}` {
		t.Fatalf("stop: %d %s", stop.StatusCode, b)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("stream: %v", r.err)
	}
	frames := parseSSE(t, r.raw)
	ev := events(frames)
	if ev[0] != "ping" || ev[len(ev)-1] != "message_end" {
		t.Fatalf("events %v: want ping first and message_end last", ev)
	}
	if got := d.Stops(); !slices.Equal(got, []string{task, task}) {
		t.Fatalf("Stops() = %v", got)
	}
	t.Run("NoUser", func(t *testing.T) {
		resp := difyDo(t, ctx, srv, http.MethodPost, "/v1/chat-messages/"+task+"/stop", chatKey, map[string]any{})
		wantError(t, resp, 400, "invalid_param", "Arg user must be provided.")
	})
}

func TestDifyStopDuringDelay(t *testing.T) {
	d, srv := newTestDify(t)
	d.Fail(chatKey, DifyFault{Delay: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan []byte, 1)
	go func() {
		_, b, _ := rawChat(ctx, srv, chatKey, chatBodyFor("hi", "u1", "", "streaming"))
		done <- b
	}()
	if err := d.WaitFor(ctx, func() bool { return len(d.Requests()) == 1 }); err != nil {
		t.Fatal(err)
	}
	readAll(t, difyDo(t, ctx, srv, http.MethodPost, "/v1/chat-messages/"+d.Requests()[0].TaskID+"/stop", chatKey, map[string]any{"user": "u1"}))
	if ev := events(parseSSE(t, <-done)); !slices.Equal(ev, []string{"message_end"}) {
		t.Fatalf("events %v", ev)
	}
}

// TestDifyHoldStreams: held streams have started (status, headers, a ping)
// and say nothing more until Release; then they answer in full.
func TestDifyHoldStreams(t *testing.T) {
	d, srv := newTestDify(t)
	d.HoldStreams()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	type result struct {
		status int
		first  string // what the stream said before Release
		rest   []byte
	}
	done := make(chan result, 3)
	for i := range 3 {
		go func() {
			b, _ := json.Marshal(chatBodyFor(fmt.Sprintf("hi %d", i), "u1", "", "streaming"))
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat-messages", bytes.NewReader(b))
			req.Header.Set("Authorization", "Bearer "+chatKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := srv.Client().Do(req)
			if err != nil {
				done <- result{}
				return
			}
			defer resp.Body.Close()
			first := make([]byte, len("event: ping\n\n"))
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				done <- result{status: resp.StatusCode}
				return
			}
			rest, _ := io.ReadAll(resp.Body) // checked below
			done <- result{resp.StatusCode, string(first), rest}
		}()
	}
	if err := d.WaitFor(ctx, func() bool { return d.Held() == 3 }); err != nil {
		t.Fatalf("held streams: %d: %v", d.Held(), err)
	}
	select {
	case r := <-done:
		t.Fatalf("a held stream ended before Release: %+v", r)
	default:
	}
	d.Release()
	for range 3 {
		r := <-done
		if r.status != http.StatusOK || r.first != "event: ping\n\n" {
			t.Fatalf("status %d, stream began %q", r.status, r.first)
		}
		if ev := events(parseSSE(t, r.rest)); !slices.Contains(ev, "message") || ev[len(ev)-1] != "message_end" {
			t.Fatalf("after release: %q", ev)
		}
	}
	if d.Held() != 0 {
		t.Fatalf("after release: held %d", d.Held())
	}
}

func TestDifyHoldRelease(t *testing.T) {
	d, srv := newTestDify(t)
	d.Hold()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan int, 3)
	for range 3 {
		go func() {
			status, _, _ := rawChat(ctx, srv, chatKey, chatBodyFor("hi", "u1", "", "blocking"))
			done <- status
		}()
	}
	if err := d.WaitFor(ctx, func() bool { return d.Held() == 3 }); err != nil {
		t.Fatalf("held calls: %d: %v", d.Held(), err)
	}
	select {
	case s := <-done:
		t.Fatalf("a held call was answered (%d)", s)
	default:
	}
	if n := d.ConversationCount(chatKey); n != 0 {
		t.Fatalf("%d conversations created while held", n)
	}
	d.Release()
	for range 3 {
		if s := <-done; s != 200 {
			t.Fatalf("status %d", s)
		}
	}
	if d.Held() != 0 || d.ConversationCount(chatKey) != 3 {
		t.Fatalf("after release: held %d, conversations %d", d.Held(), d.ConversationCount(chatKey))
	}
}

func TestDefaultReply(t *testing.T) {
	hist := []Turn{{Query: "first?", Answer: "a"}, {Query: "second?", Answer: "b"}}
	tests := []struct {
		name  string
		hist  []Turn
		query string
		want  string
	}{
		{"Echo", nil, "Hello", "Answer to: Hello"},
		{"WhatDidI", hist, "What did I ask?", `Earlier you asked: "first?"`},
		{"Earlier", hist, "and EARLIER?", `Earlier you asked: "first?"`},
		{"Previous", hist, "my previous question", `Earlier you asked: "first?"`},
		{"NoHistory", nil, "what did i ask", "I have no earlier question from you."},
		{"Handoff", hist, "This is Complicated", "This needs a specialist. [[handoff]]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DefaultReply(tc.hist, tc.query, nil); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSplitAnswer(t *testing.T) {
	for _, s := range []string{"", "x", "Answer to: hi", "one two three four five six seven", "你好世界，这是一个测试", "a\u00e9b\U0001F600c"} {
		parts := splitAnswer(s)
		if strings.Join(parts, "") != s {
			t.Fatalf("%q split into %q", s, parts)
		}
		for _, p := range parts {
			if p == "" || !utf8.ValidString(p) {
				t.Fatalf("%q split into %q: empty or broken piece", s, parts)
			}
		}
		if len(s) > 10 && len(parts) < 2 {
			t.Fatalf("%q split into %q: want several deltas", s, parts)
		}
	}
}
