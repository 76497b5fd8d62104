package chatwoot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestSignature(t *testing.T) {
	body := []byte(`{"event":"message_created"}`)
	now := time.Unix(1_700_000_000, 0)
	sig := Sign("s3cret", now.Unix(), body)
	if !strings.HasPrefix(sig, "sha256=") || len(sig) != len("sha256=")+64 {
		t.Fatalf("signature = %q", sig)
	}
	ts := "1700000000"
	tests := []struct {
		name      string
		sig, ts   string
		body      []byte
		now       time.Time
		wantError error
	}{
		{"ok", sig, ts, body, now, nil},
		{"upper-case hex accepted", strings.ToUpper(sig[:7]) + strings.ToUpper(sig[7:]), ts, body, now, nil},
		{"within window", sig, ts, body, now.Add(4 * time.Minute), nil},
		{"stale", sig, ts, body, now.Add(6 * time.Minute), ErrStale},
		{"future", sig, ts, body, now.Add(-6 * time.Minute), ErrStale},
		{"other body", sig, ts, []byte(`{}`), now, ErrBadSignature},
		{"missing", "", ts, body, now, ErrNoSignature},
		{"no timestamp", sig, "", body, now, ErrNoSignature},
		{"bad timestamp", sig, "yesterday", body, now, ErrBadSignature},
		// The timestamp is part of what is signed.
		{"timestamp swapped", sig, "1700000001", body, now, ErrBadSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifySignature("s3cret", tc.sig, tc.ts, tc.body, tc.now)
			if !errors.Is(err, tc.wantError) || (tc.wantError == nil) != (err == nil) {
				t.Errorf("err = %v, want %v", err, tc.wantError)
			}
		})
	}
}

func TestParseEventErrors(t *testing.T) {
	tests := []struct{ body, want string }{
		{`not json`, "malformed json"},
		{`{}`, "missing field: event"},
		{`{"event":"message_created","message_type":"incoming"}`, "missing field: id"},
		{`{"event":"message_created","id":1}`, "missing field: message_type"},
		{`{"event":"message_created","id":1,"message_type":"sideways"}`, "unknown value"},
		{`{"event":"message_created","id":1,"message_type":"incoming","account":{"id":1},"inbox":{"id":1}}`, "missing field: conversation.id"},
		{`{"event":"message_created","id":1,"message_type":"incoming","conversation":{"id":4},"inbox":{"id":1}}`, "missing field: account.id"},
		{`{"event":"message_created","id":"1","message_type":"incoming"}`, "malformed field: id"},
		{`{"event":"message_created","id":0,"message_type":"incoming","account":{"id":1},"inbox":{"id":1},"conversation":{"id":4}}`, "want a positive message id"},
		{`{"event":"message_created","id":-7,"message_type":"incoming","account":{"id":1},"inbox":{"id":1},"conversation":{"id":4}}`, "want a positive message id"},
		{`{"event":"conversation_status_changed","id":4} {"event":"message_created"}`, "data after the JSON document"},
		{`{"event":"conversation_status_changed","id":4}garbage`, "data after the JSON document"},
	}
	for _, tc := range tests {
		_, err := ParseEvent([]byte(tc.body))
		var pe *ParseError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseEvent(%s) = %v, want %q", tc.body, err, tc.want)
		}
	}
}

func TestParseRESTMessageType(t *testing.T) {
	// REST-shaped integer message types are understood too.
	ev, err := ParseEvent([]byte(`{"event":"message_created","id":9,"message_type":1,"content":"x",
		"account":{"id":1},"inbox":{"id":2},"conversation":{"id":3,"status":"pending"},"sender":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if ev.MessageType != "outgoing" || ev.Sender != nil || ev.InboxID != 2 || ev.Conversation.InboxID != 2 {
		t.Errorf("event = %+v", ev)
	}
}

func TestClient(t *testing.T) {
	type call struct {
		method, path, token string
		body                map[string]any
	}
	var calls []call
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &body)
		calls = append(calls, call{r.Method, r.URL.Path, r.Header.Get("api_access_token"), body})
		switch {
		case r.Header.Get("api_access_token") == "bad":
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"error":"Invalid Access Token"}`))
		case strings.HasSuffix(r.URL.Path, "/messages"):
			resp, _ := os.ReadFile("../../testdata/corpus/chatwoot/rest_messages_create_response_contract_mock.json")
			_, _ = w.Write(resp)
		case strings.HasSuffix(r.URL.Path, "/toggle_status"):
			resp, _ := os.ReadFile("../../testdata/corpus/chatwoot/rest_toggle_status_response_contract_mock.json")
			_, _ = w.Write(resp)
		case strings.HasSuffix(r.URL.Path, "/labels"):
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"error":"Access to this endpoint is not authorized for bots"}`))
		case strings.Contains(r.URL.Path, "/conversations/0/"):
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"error":"Resource could not be found"}`))
		case r.URL.Path == "/api":
			_, _ = w.Write([]byte(`{"version":"4.14.0","timestamp":"2026-11-25 10:00:00","queue_services":"ok","data_services":"ok"}`))
		case strings.HasSuffix(r.URL.Path, "/toggle_typing_status"):
			w.WriteHeader(429)
			_, _ = w.Write([]byte("Retry later"))
		default:
			w.WriteHeader(500)
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := context.Background()
	c := NewClient(Options{BaseURL: srv.URL + "/", Token: "tok-SECRET"})

	m, err := c.PostMessage(ctx, 1, 42, NewMessage{Content: "hi"})
	if err != nil || m.ID != 101 {
		t.Fatalf("post = %+v, %v", m, err)
	}
	last := calls[len(calls)-1]
	if last.path != "/api/v1/accounts/1/conversations/42/messages" || last.token != "tok-SECRET" ||
		last.body["message_type"] != "outgoing" || last.body["private"] != false {
		t.Errorf("post call = %+v", last)
	}
	// Chatwoot never delivers an outgoing message with a source_id on
	// external channels (Base::SendOnChannelService#invalid_message?).
	if _, ok := last.body["source_id"]; ok {
		t.Errorf("post call = %+v", last)
	}
	if err := c.ToggleStatus(ctx, 1, 42, "open"); err != nil {
		t.Fatal(err)
	}
	if calls[len(calls)-1].body["status"] != "open" {
		t.Errorf("toggle body = %+v", calls[len(calls)-1].body)
	}
	err = c.SetLabels(ctx, 1, 42, []string{"a"})
	if !errors.Is(err, ErrUnauthorized) || !IsBotOnly(err) || Retryable(err) {
		t.Errorf("labels with a bot token: %v", err)
	}
	if err := c.CheckBotToken(ctx, 1); err != nil {
		t.Errorf("check bot token: %v", err)
	}
	err = c.Typing(ctx, 1, 42, true)
	if !Retryable(err) || !strings.Contains(err.Error(), "429") {
		t.Errorf("typing 429: %v", err)
	}
	v, err := c.Version(ctx)
	if err != nil || v.Version != "4.14.0" {
		t.Errorf("version = %+v, %v", v, err)
	}
	if calls[len(calls)-1].token != "" {
		t.Error("token sent to the unauthenticated /api")
	}
	bad := NewClient(Options{BaseURL: srv.URL, Token: "bad"})
	err = bad.ToggleStatus(ctx, 1, 42, "open")
	if !errors.Is(err, ErrUnauthorized) || IsBotOnly(err) || !strings.Contains(err.Error(), "Invalid Access Token") {
		t.Errorf("bad token: %v", err)
	}
	if err := bad.CheckBotToken(ctx, 1); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("check bad token: %v", err)
	}
	for _, e := range []error{err} {
		if e != nil && strings.Contains(e.Error(), "tok-SECRET") {
			t.Errorf("token in error: %v", e)
		}
	}
	// Network errors are retryable; a closed server refuses.
	srv.Close()
	if err := c.ToggleStatus(ctx, 1, 42, "open"); !Retryable(err) || strings.Contains(err.Error(), "tok-SECRET") {
		t.Errorf("closed server: %v", err)
	}
}

// TestErrorMasksTheToken: an error body that echoes the api_access_token
// does not carry it into the error text.
func TestErrorMasksTheToken(t *testing.T) {
	const token = "cw-token-9f8e7d6c5b4a3210"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprintf(w, `{"error":"token %s may not do this"}`, r.Header.Get("api_access_token"))
	}))
	defer srv.Close()
	c := NewClient(Options{BaseURL: srv.URL, Token: token})
	err := c.ToggleStatus(t.Context(), 1, 2, "open")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity {
		t.Fatalf("ToggleStatus: %v, want a 422 APIError", err)
	}
	if strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "****3210") {
		t.Errorf("error text %q: want the token masked", err)
	}
}

func TestParseVoiceNoteAndItsTranscription(t *testing.T) {
	dir := "../../testdata/corpus/upstream-2026-11/"
	body, err := os.ReadFile(dir + "cw_code_message_created_whatsapp_voice_note.json")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := ParseEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Attachments) != 1 {
		t.Fatalf("attachments %+v", ev.Attachments)
	}
	a := ev.Attachments[0]
	if a.FileType != "audio" || a.ContentType != "audio/ogg" || a.Extension != "ogg" || a.FileSize != 14237 ||
		!strings.HasPrefix(a.DataURL, "https://chatwoot.example.com/rails/active_storage/blobs/redirect/") || a.TranscribedText != "" {
		t.Errorf("attachment %+v", a)
	}
	if ev.Transcript() != "" || ev.Conversation.Channel != "Channel::Whatsapp" {
		t.Errorf("transcript %q channel %q", ev.Transcript(), ev.Conversation.Channel)
	}
	body, err = os.ReadFile(dir + "cw_code_message_updated_voice_note_transcribed.json")
	if err != nil {
		t.Fatal(err)
	}
	ev, err = ParseEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Name != "message_updated" || ev.MessageID != 9001 || ev.Transcript() != "Hi, where is my order 1234?" {
		t.Errorf("update %q %d %q", ev.Name, ev.MessageID, ev.Transcript())
	}
}

func TestParseAttachmentKindsAndContentAttributes(t *testing.T) {
	body := `{"event":"message_updated","id":77,"content":"How did we do?","content_type":"input_csat","message_type":"template",
	 "content_attributes":{"submitted_values":{"csat_survey_response":{"rating":"2","feedback_message":" slow "}},"external_error":"(#131047) Re-engagement message"},
	 "account":{"id":1},"inbox":{"id":3},"conversation":{"id":9,"status":"resolved"},
	 "attachments":[null,{"id":1,"file_type":"location","coordinates_lat":52.52,"coordinates_long":13.405,"fallback_title":"Berlin","data_url":"https://maps"},
	   {"id":2,"file_type":"contact","fallback_title":"+15551234"},
	   {"id":3,"file_type":"file","extension":"pdf","content_type":"application/pdf","data_url":"https://cw/x.pdf","file_size":1234,"width":null}]}`
	ev, err := ParseEvent([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if ev.CSAT == nil || ev.CSAT.Rating != 2 || ev.CSAT.Comment != "slow" || ev.ExternalError != "(#131047) Re-engagement message" {
		t.Errorf("csat %+v error %q", ev.CSAT, ev.ExternalError)
	}
	if len(ev.Attachments) != 4 || ev.Attachments[0].FileType != "" || ev.Attachments[1].Lat != 52.52 ||
		ev.Attachments[2].FallbackTitle != "+15551234" || ev.Attachments[3].FileSize != 1234 {
		t.Errorf("attachments %+v", ev.Attachments)
	}
	// Forms keep an array in submitted_values; a string-encoded hash is read too.
	for _, attrs := range []string{`{"submitted_values":[{"name":"email","value":"a@b"}]}`, `"{\"external_error\":\"boom\"}"`, `[]`, `null`} {
		b := strings.Replace(body, body[strings.Index(body, `"content_attributes":`):strings.Index(body, `,
	 "account"`)], `"content_attributes":`+attrs, 1)
		ev, err := ParseEvent([]byte(b))
		if err != nil {
			t.Fatalf("%s: %v", attrs, err)
		}
		if ev.CSAT != nil || (ev.ExternalError != "" && ev.ExternalError != "boom") {
			t.Errorf("%s: csat %+v error %q", attrs, ev.CSAT, ev.ExternalError)
		}
	}
}
