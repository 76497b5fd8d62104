package bridge

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/dify"
)

// upstreamDir holds the second batch of upstream payloads; its README says where each came from.
const upstreamDir = "../../testdata/corpus/upstream-2026-11"

// corpusWant is what the parsers must make of one upstream file.
type corpusWant struct {
	// Dify files go through dify.Client.Chat, as bridge reads an answer.
	modes     []string // route app modes to read it with; nil means only "" (not verified)
	text      string
	paused    string // pause reason; "" when not paused
	status    int    // APIError status; 0 when the answer succeeds
	code      string // APIError code
	retryable bool
	early     bool   // FailedBeforeFirstNode
	errText   string // the error's text, as the handoff note shows it
	tokens    int

	// Chatwoot files go through chatwoot.ParseEvent.
	event       string
	messageType string
	senderType  string // "-" when the event has no sender
	convStatus  string
	content     string
	attachments []string // file types
	parseErr    string
}

// TestUpstreamCorpus2026_11 reads every file of the 2026-11 batch with bridge's parsers. Each
// file needs a row: a new upstream example must be looked at, not silently skipped.
func TestUpstreamCorpus2026_11(t *testing.T) {
	rows := map[string]corpusWant{
		// Dify Service API, 1.14.2.
		"dify_code_chat_error_event.sse": {status: 400, code: "invalid_param",
			errText: "dify chat: dify stream error 400 invalid_param: boom"},
		"dify_code_chatflow_worker_error_event.sse": {modes: []string{"", "advanced-chat"}, status: 500, early: true,
			errText: "dify chat: dify chatflow failed before its first node (no error code)"},
		// Narration in agent_message, the answer once in the closing message, whatever the route knows.
		"dify_code_new_agent_tool_turn.sse": {modes: []string{"", dify.ModeAgent, "agent-chat"},
			text: "Your order #1234 shipped yesterday."},
		// tts_message and tts_message_end follow message_end and change nothing.
		"dify_tpl_chat_streaming_tts.sse":                 {text: " I'm glad to meet you", tokens: 1168},
		"dify_tpl_chatflow_blocking_paused.json":          {modes: []string{"", "advanced-chat"}, paused: "human_input_required"},
		"dify_tpl_chatflow_paused_streaming.sse":          {modes: []string{"", "advanced-chat"}, paused: "human_input_required"},
		"dify_tpl_chatflow_resume_events.sse":             {paused: "human_input_required"},
		"cw_docs_message_created_api_channel.json":        {parseErr: "missing field: inbox.id"}, // the docs' placeholder inbox id 0
		"cw_docs_message_created_webwidget.json":          {event: "message_created", messageType: "incoming", senderType: "contact", convStatus: "open", content: "hi"},
		"cw_docs_message_updated_webwidget.json":          {event: "message_updated", messageType: "incoming", senderType: "contact", convStatus: "open", content: "hi"},
		"cw_docs_conversation_status_changed.json":        {event: "conversation_status_changed", senderType: "-", convStatus: "open"},
		"cw_docs_conversation_opened_status_pending.json": {event: "conversation_opened", senderType: "-", convStatus: "pending"},
		"cw_code_message_created_own_agent_bot_reply.json": {event: "message_created", messageType: "outgoing", senderType: "agent_bot",
			convStatus: "pending", content: "Your order #1234 shipped yesterday."},
		"cw_code_message_created_whatsapp_voice_note.json": {event: "message_created", messageType: "incoming", senderType: "",
			convStatus: "pending", attachments: []string{"audio"}},
		"cw_code_message_updated_voice_note_transcribed.json": {event: "message_updated", messageType: "incoming", senderType: "",
			convStatus: "pending", attachments: []string{"audio"}},
	}
	files, err := os.ReadDir(upstreamDir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		name := f.Name()
		if name == "README.md" {
			continue
		}
		seen[name] = true
		want, ok := rows[name]
		if !ok {
			t.Errorf("%s has no row in this table", name)
			continue
		}
		body, err := os.ReadFile(filepath.Join(upstreamDir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Run(name, func(t *testing.T) {
			switch {
			case strings.HasPrefix(name, "dify_"):
				checkDifyCorpus(t, name, body, want)
			case strings.HasPrefix(name, "cw_"):
				checkChatwootCorpus(t, body, want)
			default:
				t.Fatalf("neither a Dify nor a Chatwoot file")
			}
		})
	}
	for name := range rows {
		if !seen[name] {
			t.Errorf("row %s has no file", name)
		}
	}
}

func checkDifyCorpus(t *testing.T, name string, body []byte, want corpusWant) {
	ct := "text/event-stream; charset=utf-8"
	if strings.HasSuffix(name, ".json") {
		ct = "application/json"
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(body) // the client's error says it if this fails
	}))
	defer srv.Close()
	c := dify.NewClient(dify.Options{BaseURL: srv.URL + "/v1", Key: testDifyKey})
	modes := want.modes
	if modes == nil {
		modes = []string{""}
	}
	for _, mode := range modes {
		a, err := c.Chat(t.Context(), dify.ChatRequest{Query: "q", User: "u", AppMode: mode}, nil)
		if want.status != 0 {
			var ae *dify.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("mode %q: error %v, want an APIError", mode, err)
			}
			if ae.Status != want.status || ae.Code != want.code || ae.FailedBeforeFirstNode() != want.early ||
				dify.Retryable(err) != want.retryable || err.Error() != want.errText {
				t.Errorf("mode %q: %#v (retryable %v, %q), want status %d code %q early %v retryable %v %q", mode, ae,
					dify.Retryable(err), err.Error(), want.status, want.code, want.early, want.retryable, want.errText)
			}
			continue
		}
		if err != nil {
			t.Fatalf("mode %q: %v", mode, err)
		}
		if a.Text != want.text || a.Paused != (want.paused != "") || a.PauseReason != want.paused || a.Usage.TotalTokens != want.tokens {
			t.Errorf("mode %q: text %q paused %v %q tokens %d, want %q %q %d", mode, a.Text, a.Paused, a.PauseReason,
				a.Usage.TotalTokens, want.text, want.paused, want.tokens)
		}
	}
}

func checkChatwootCorpus(t *testing.T, body []byte, want corpusWant) {
	ev, err := chatwoot.ParseEvent(body)
	if want.parseErr != "" {
		var pe *chatwoot.ParseError
		if !errors.As(err, &pe) || pe.Reason != want.parseErr {
			t.Fatalf("error %v, want ParseError %q", err, want.parseErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	sender := "-"
	if ev.Sender != nil {
		sender = ev.Sender.Type
	}
	var types []string
	for _, a := range ev.Attachments {
		types = append(types, a.FileType)
	}
	if ev.Name != want.event || ev.MessageType != want.messageType || sender != want.senderType ||
		ev.Conversation.Status != want.convStatus || ev.Content != want.content || strings.Join(types, ",") != strings.Join(want.attachments, ",") {
		t.Errorf("event %q type %q sender %q status %q content %q attachments %q, want %q %q %q %q %q %q", ev.Name, ev.MessageType,
			sender, ev.Conversation.Status, ev.Content, types, want.event, want.messageType, want.senderType, want.convStatus,
			want.content, want.attachments)
	}
}
