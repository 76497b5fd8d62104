package dify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"testing/synctest"
	"time"
)

func TestReadStreamCorpus(t *testing.T) {
	tests := map[string]struct {
		text       string
		files      []string
		paused     bool
		reason     string
		taskID     string
		convID     string
		messageID  string
		totalToken int
	}{
		"chat_streaming_basic": {
			text: " I", taskID: "mock_task_id", convID: "45701982-8118-4bc5-8e9b-64562b4555f2",
			messageID: "5ad4cb98-f0c7-4085-b384-88c403be6290", totalToken: 10,
		},
		"agent_streaming": {
			text: "Here is the image: ", files: []string{"https://example.com/cat.png"},
			taskID: "task123", convID: "conv123", messageID: "msg123", totalToken: 50,
		},
		"chatflow_streaming": {
			text: " I", taskID: "task123", convID: "conv123", messageID: "msg123", totalToken: 50,
		},
		"chatflow_human_input_pause": {
			paused: true, reason: "human_input_required", taskID: "c3800678-a077-43df-a102-53f23ed20b88",
			convID: "9d3a2f1b-6c7d-4e8f-a0b1-c2d3e4f5a6b7", messageID: "2e4f6a8b-1c3d-5e7f-9a0b-2c4d6e8f0a1b",
		},
		// workflow_finished(succeeded) comes first in this doc example; the messages after it
		// must still be read.
		"advanced_chat_streaming_template": {
			text: " I'm glad to meet you", taskID: "5ad4cb98-f0c7-4085-b384-88c403be6290",
			convID: "45701982-8118-4bc5-8e9b-64562b4555f2", messageID: "5ad4cb98-f0c7-4085-b384-88c403be6290",
			totalToken: 1168,
		},
	}
	corpus := corpusSSE(t)
	for name := range corpus {
		if _, ok := tests[name]; !ok {
			t.Errorf("corpus file %s.sse has no expectation", name)
		}
	}
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			in, ok := corpus[name]
			if !ok {
				t.Fatalf("%s.sse missing from the corpus", name)
			}
			var starts [][2]string
			a, err := ReadStream(t.Context(), bytes.NewReader(in), time.Minute, func(task, conv string) {
				starts = append(starts, [2]string{task, conv})
			})
			if err != nil {
				t.Fatalf("ReadStream: %v", err)
			}
			if a.Text != want.text {
				t.Errorf("Text = %q, want %q", a.Text, want.text)
			}
			if !reflect.DeepEqual(fileURLs(a.Files), want.files) {
				t.Errorf("Files = %v, want %q", a.Files, want.files)
			}
			if a.Paused != want.paused || a.PauseReason != want.reason {
				t.Errorf("Paused = %v %q, want %v %q", a.Paused, a.PauseReason, want.paused, want.reason)
			}
			if a.TaskID != want.taskID || a.ConversationID != want.convID || a.MessageID != want.messageID {
				t.Errorf("ids = %q %q %q, want %q %q %q", a.TaskID, a.ConversationID, a.MessageID,
					want.taskID, want.convID, want.messageID)
			}
			if a.Usage.TotalTokens != want.totalToken {
				t.Errorf("TotalTokens = %d, want %d", a.Usage.TotalTokens, want.totalToken)
			}
			if len(starts) != 1 || starts[0][0] != want.taskID {
				t.Errorf("onStart calls = %q, want one with task %q", starts, want.taskID)
			}
			if want.text != "" && a.FirstToken <= 0 {
				t.Errorf("FirstToken = %v, want > 0", a.FirstToken)
			}
		})
	}
}

// sse renders events as Dify frames; "ping" becomes the data-less ping.
func sse(events ...string) string {
	var b strings.Builder
	for _, e := range events {
		if e == "ping" {
			b.WriteString("event: ping\n\n")
			continue
		}
		b.WriteString("data: " + e + "\n\n")
	}
	return b.String()
}

func TestReadStreamRules(t *testing.T) {
	const end = `{"event":"message_end","task_id":"t","conversation_id":"c","metadata":{"usage":{"prompt_tokens":812,"completion_tokens":64,"total_tokens":876,"total_price":"0.000502","currency":"USD","latency":1.42}}}`
	msg := func(s string) string {
		return fmt.Sprintf(`{"event":"message","task_id":"t","conversation_id":"c","message_id":"m","answer":%q}`, s)
	}
	agent := func(s string) string {
		return fmt.Sprintf(`{"event": "agent_message", "task_id": "t", "conversation_id": "c", "answer": %q}`, s)
	}
	const thought = `{"event":"agent_thought","id":"a1","position":1,"thought":"","observation":"","tool":"lookup","tool_input":"{}"}`
	tests := []struct {
		name    string
		mode    string // StreamOptions.AppMode
		in      string
		text    string
		files   []string
		paused  string // pause reason, "" when not paused
		wantErr error
		check   func(t *testing.T, a *Answer, err error)
	}{
		{name: "CompactDeltas", in: sse(msg("Sorry"), "ping", msg(" about that!"), end), text: "Sorry about that!",
			check: func(t *testing.T, a *Answer, _ error) {
				want := Usage{PromptTokens: 812, CompletionTokens: 64, TotalTokens: 876, TotalPrice: "0.000502", Currency: "USD", Latency: 1.42}
				if a.Usage != want || a.Pings != 1 || a.Events != 3 {
					t.Errorf("usage %+v pings %d events %d", a.Usage, a.Pings, a.Events)
				}
			}},
		{name: "SpacedJSON", in: sse(`{"event": "message", "answer": "a\u00e9"}`, `{"event": "message_end"}`), text: "aé"},
		{name: "MessageReplace", in: sse(msg("bad words"), `{"event":"message_replace","answer":"[removed]"}`, end), text: "[removed]"},
		{name: "MessageFileTextDelta", in: sse(msg("a"), `{"event":"message_file","answer":"b"}`, msg("c"), end), text: "abc"},
		{name: "MessageFileFromUserIgnored", in: sse(`{"event":"message_file","belongs_to":"user","url":"u"}`, msg("x"), end), text: "x"},
		{name: "NewAgentClosingMessage", in: sse(agent("Hel"), agent("lo"), msg("Hello"), end), text: "Hello"},
		{name: "NewAgentClosingMessageLonger", in: sse(agent("Hel"), agent("lo"), msg("Hello there"), end), text: "Hello there"},
		{name: "NewAgentNarrationIsNotAnswer", in: sse(agent("Let me check. "), msg("Shipped."), end), text: "Shipped."},
		{name: "NewAgentDeltasThenClosingRepeat", in: sse(agent("Checking. "), thought, msg("Your order"), msg(" shipped."),
			agent("Done checking."), msg("Your order shipped."), end), text: "Your order shipped."},
		// Dify's runner sends only the missing tail when the streamed output is a prefix of the final one.
		{name: "NewAgentDeltasThenSuffix", in: sse(agent("Checking. "), msg("Your order"), msg(" shipped."), end), text: "Your order shipped."},
		{name: "NewAgentKnownByModeOnly", mode: ModeAgent, in: sse(msg("ab"), msg("ab"), end), text: "ab"},
		{name: "NewAgentNarrationOnly", mode: ModeAgent, in: sse(agent("Thinking about it"), end), text: ""},
		{name: "LegacyAgentAnswer", mode: "agent-chat", in: sse(thought, agent("Hel"), agent("lo"), end), text: "Hello"},
		{name: "LegacyAgentModeration", in: sse(agent("bad words"), `{"event":"message_replace","answer":"[removed]"}`, end), text: "[removed]"},
		{name: "MessageDeltasNeverCollapse", in: sse(msg("ab"), msg("ab"), end), text: "abab"},
		{name: "NotAppended", in: sse(
			`{"event":"reasoning_chunk","data":{"reasoning":"hmm"}}`,
			`{"event":"agent_thought","thought":"tool?","answer":"no"}`,
			`{"event":"tts_message","audio":"qqq","answer":"no"}`,
			`{"event":"node_finished","data":{"status":"succeeded"},"answer":"no"}`,
			`{"event":"text_chunk","data":{"text":"no"}}`,
			msg("yes"), end), text: "yes"},
		{name: "ChatflowMessageEndFirst", in: sse(msg("a"), end, `{"event":"workflow_finished","data":{"status":"failed","error":"late"}}`), text: "a"},
		{name: "WorkflowSucceededThenEOF", in: sse(msg("a"), `{"event":"workflow_finished","data":{"status":"succeeded"}}`), text: "a"},
		{name: "WorkflowPartialSucceededThenEOF", in: sse(msg("a"), `{"event":"workflow_finished","data":{"status":"partial-succeeded"}}`), text: "a"},
		{name: "WorkflowSucceededThenCut", in: sse(`{"event":"workflow_finished","data":{"status":"succeeded"}}`, msg("a")) + "data: {\"event\":\"mess",
			wantErr: ErrTruncated},
		{name: "WorkflowFailed", in: sse(msg("a"), `{"event":"workflow_finished","data":{"status":"failed","error":"LLM node: boom"}}`, `{"event":"error","code":"x","message":"y","status":500}`),
			check: func(t *testing.T, _ *Answer, err error) {
				var we *WorkflowError
				if !errors.As(err, &we) || we.Status != "failed" || we.Message != "LLM node: boom" {
					t.Errorf("error = %#v, want WorkflowError failed", err)
				}
			}},
		{name: "WorkflowStopped", in: sse(`{"event":"workflow_finished","data":{"status":"stopped","error":null}}`),
			check: func(t *testing.T, _ *Answer, err error) {
				var we *WorkflowError
				if !errors.As(err, &we) || we.Status != "stopped" {
					t.Errorf("error = %#v, want WorkflowError stopped", err)
				}
			}},
		{name: "WorkflowFinishedPaused", in: sse(`{"event":"workflow_finished","data":{"status":"paused"}}`), paused: "paused"},
		{name: "WorkflowPausedLowerType", in: sse(`{"event":"workflow_paused","data":{"reasons":[{"type":"scheduled"}]}}`), paused: "scheduled"},
		{name: "WorkflowPausedNoReasons", in: sse(`{"event":"workflow_paused","data":{}}`), paused: "workflow_paused"},
		{name: "ErrorEvent", in: sse(msg("par"), `{"event": "error", "conversation_id": "c", "message_id": "m", "code": "completion_request_error", "message": "[openai] Rate Limit Error", "status": 400}`),
			check: func(t *testing.T, a *Answer, err error) {
				var ae *APIError
				if !errors.As(err, &ae) {
					t.Fatalf("error = %v, want *APIError", err)
				}
				want := APIError{Status: 400, Code: "completion_request_error", Message: "[openai] Rate Limit Error", InStream: true}
				if *ae != want {
					t.Errorf("APIError = %+v, want %+v", *ae, want)
				}
				if Retryable(err) {
					t.Error("in-stream 400 retryable")
				}
				if a == nil || a.Text != "par" {
					t.Errorf("partial answer = %+v", a)
				}
			}},
		{name: "ErrorEvent500", in: sse(`{"event":"error","code":"internal_server_error","message":"Internal Server Error, please contact support.","status":500}`),
			check: func(t *testing.T, _ *Answer, err error) {
				var ae *APIError
				if !Retryable(err) || !errors.As(err, &ae) || ae.FailedBeforeFirstNode() {
					t.Errorf("in-stream 500 with a code: %v, want retryable and not a worker failure", err)
				}
			}},
		{name: "ErrorEventNoCode", in: sse("ping", `{"event": "error", "message": "query is required", "status": 500}`),
			check: func(t *testing.T, _ *Answer, err error) {
				var ae *APIError
				if Retryable(err) || !errors.As(err, &ae) || !ae.FailedBeforeFirstNode() {
					t.Fatalf("error = %v, want a non-retryable failure before the first node", err)
				}
				if want := "dify chatflow failed before its first node (no error code): query is required"; err.Error() != want {
					t.Errorf("text = %q, want %q", err.Error(), want)
				}
			}},
		{name: "EOFBeforeEnd", in: sse(msg("half an ans")), wantErr: ErrTruncated,
			check: func(t *testing.T, a *Answer, err error) {
				if !strings.Contains(err.Error(), "1 events") || !Retryable(err) {
					t.Errorf("error = %v, want the event count and retryable", err)
				}
			}},
		{name: "Empty", in: "", wantErr: ErrTruncated},
		{name: "OnlyPing", in: sse("ping"), wantErr: ErrTruncated},
		{name: "NotJSON", in: sse("hello"),
			check: func(t *testing.T, _ *Answer, err error) {
				if err == nil || errors.Is(err, ErrTruncated) || Retryable(err) {
					t.Errorf("error = %v, want a non-retryable decode error", err)
				}
			}},
		{name: "EventNameFromSSEField", in: "event: message_end\ndata: {}\n\n"},
		{name: "CRLF", in: strings.ReplaceAll(sse(msg("a"), "ping", end), "\n", "\r\n"), text: "a"},
		{name: "LineTooLong", in: sse(msg(strings.Repeat("a", 5<<20)), end), wantErr: ErrLineTooLong},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ReadStreamWith(t.Context(), iotest.HalfReader(strings.NewReader(tc.in)), StreamOptions{AppMode: tc.mode})
			if tc.check != nil {
				tc.check(t, a, err)
				return
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadStream: %v", err)
			}
			if a.Text != tc.text || !reflect.DeepEqual(fileURLs(a.Files), tc.files) {
				t.Errorf("Text %q Files %v, want %q %q", a.Text, a.Files, tc.text, tc.files)
			}
			if a.Paused != (tc.paused != "") || a.PauseReason != tc.paused {
				t.Errorf("Paused %v %q, want %q", a.Paused, a.PauseReason, tc.paused)
			}
		})
	}
}

func TestReadStreamFirstToken(t *testing.T) {
	base := time.Date(2026, 3, 21, 0, 0, 0, 0, time.UTC)
	tick := base
	clock := func() time.Time { tick = tick.Add(100 * time.Millisecond); return tick }
	in := sse(`{"event":"workflow_started","task_id":"t"}`, `{"event":"message","answer":"a"}`, `{"event":"message","answer":"b"}`, `{"event":"message_end"}`)
	a, err := ReadStreamWith(t.Context(), strings.NewReader(in), StreamOptions{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	// start reads the clock once, the first delta once more; later deltas do not move it.
	if a.FirstToken != 100*time.Millisecond {
		t.Errorf("FirstToken = %v, want 100ms", a.FirstToken)
	}

	a, err = ReadStream(t.Context(), strings.NewReader(sse(`{"event":"message_end"}`)), 0, nil)
	if err != nil || a.FirstToken != 0 {
		t.Errorf("no deltas: FirstToken = %v, err %v; want 0", a.FirstToken, err)
	}
}

func TestReadStreamOnStartOnce(t *testing.T) {
	in := sse(`{"event":"message","conversation_id":"c1","answer":"a"}`,
		`{"event":"message","task_id":"t1","conversation_id":"c2","answer":"b"}`,
		`{"event":"message","task_id":"t2","answer":"c"}`, `{"event":"message_end"}`)
	var calls []string
	a, err := ReadStream(t.Context(), strings.NewReader(in), 0, func(task, conv string) { calls = append(calls, task+"/"+conv) })
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(calls, []string{"t1/c1"}) || a.TaskID != "t1" || a.ConversationID != "c1" {
		t.Errorf("calls %q, task %q conv %q", calls, a.TaskID, a.ConversationID)
	}
}

// bareReader hides io.Closer so ReadStream cannot close the body itself.
type bareReader struct{ io.Reader }

func TestReadStreamIdle(t *testing.T) {
	t.Run("PingThenSilence", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() {
				// The write returns once ReadStream has taken the ping, or fails once it gave up.
				_, _ = pw.Write([]byte(sse(`{"event":"message","task_id":"t","answer":"a"}`, "ping")))
			}()
			start := time.Now()
			a, err := ReadStream(t.Context(), pr, 100*time.Millisecond, nil)
			if !errors.Is(err, ErrIdle) || !Retryable(err) {
				t.Fatalf("error = %v, want retryable ErrIdle", err)
			}
			if a.Pings != 1 || a.Text != "a" {
				t.Errorf("answer so far = %+v", a)
			}
			// Fake time: exactly one idle period after the ping, not a moment of real waiting.
			if got := time.Since(start); got != 100*time.Millisecond {
				t.Errorf("returned after %v of silence, want 100ms", got)
			}
		})
	})
	t.Run("PingsResetTheTimer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() {
				for range 5 {
					time.Sleep(80 * time.Millisecond)
					if _, err := pw.Write([]byte(sse("ping"))); err != nil {
						return
					}
				}
				_, _ = pw.Write([]byte(sse(`{"event":"message","answer":"ok"}`, `{"event":"message_end"}`))) // checked by the reader
			}()
			a, err := ReadStream(t.Context(), pr, 100*time.Millisecond, nil)
			if err != nil || a.Text != "ok" || a.Pings != 5 {
				t.Fatalf("answer %+v, error %v; want ok after 5 pings", a, err)
			}
		})
	})
	t.Run("CallerClosesBody", func(t *testing.T) {
		// With a body that cannot be closed by ReadStream, its reader goroutine lives until the
		// caller closes the pipe; synctest.Test fails if it never ends.
		synctest.Test(t, func(t *testing.T) {
			pr, pw := io.Pipe()
			go func() { _, _ = pw.Write([]byte(sse("ping"))) }() // checked by the reader
			_, err := ReadStream(t.Context(), bareReader{pr}, time.Second, nil)
			if !errors.Is(err, ErrIdle) {
				t.Fatalf("error = %v, want ErrIdle", err)
			}
			pw.Close()
		})
	})
	t.Run("IdleAfterWorkflowSucceeded", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() {
				_, _ = pw.Write([]byte(sse(`{"event":"message","answer":"a"}`, `{"event":"workflow_finished","data":{"status":"succeeded"}}`))) // checked by the reader
			}()
			a, err := ReadStream(t.Context(), pr, time.Second, nil)
			if err != nil || a.Text != "a" {
				t.Fatalf("answer %+v, error %v; want success", a, err)
			}
		})
	})
	t.Run("Cancel", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			ctx, cancel := context.WithCancel(t.Context())
			go func() {
				_, _ = pw.Write([]byte(sse("ping"))) // checked by the reader
				cancel()
			}()
			_, err := ReadStream(ctx, pr, 0, nil)
			if !errors.Is(err, context.Canceled) || Retryable(err) {
				t.Fatalf("error = %v, want non-retryable context.Canceled", err)
			}
		})
	})
}

// longStream is a chat stream of n deltas, ~20 bytes of answer each.
func longStream(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "data: {\"event\": \"message\", \"conversation_id\": \"45701982-8118-4bc5-8e9b-64562b4555f2\", \"message_id\": \"9da23599-e713-473b-982c-4328d4f5c78a\", \"created_at\": 1705407629, \"task_id\": \"c3800678-a077-43df-a102-53f23ed20b88\", \"id\": \"9da23599-e713-473b-982c-4328d4f5c78a\", \"answer\": \"token %06d \\u00e9t\\u00e9 \", \"from_variable_selector\": null}\n\n", i)
		if i%100 == 0 {
			b.WriteString("event: ping\n\n")
		}
	}
	b.WriteString(`data: {"event": "message_end", "metadata": {"usage": {"total_tokens": 4000}}}` + "\n\n")
	return b.Bytes()
}

func TestLongStream(t *testing.T) {
	a, err := ReadStream(t.Context(), bytes.NewReader(longStream(2000)), time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Events != 2001 || a.Pings != 20 || !strings.HasPrefix(a.Text, "token 000000 été token 000001 été ") ||
		!strings.HasSuffix(a.Text, "token 001999 été ") {
		t.Errorf("events %d pings %d text %.40q…", a.Events, a.Pings, a.Text)
	}
}

func BenchmarkReadStreamLongAnswer(b *testing.B) {
	in := longStream(2000)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		a, err := ReadStream(b.Context(), bytes.NewReader(in), time.Minute, nil)
		if err != nil || a.Events != 2001 {
			b.Fatalf("events %d, error %v", a.Events, err)
		}
	}
}

// fileURLs lists the URLs of an answer's files (nil when there are none).
func fileURLs(fs []AnswerFile) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.URL)
	}
	return out
}

func TestStreamFilesAndCitations(t *testing.T) {
	stream := `data: {"event": "message", "conversation_id": "c", "message_id": "m", "task_id": "t", "answer": "See the chart"}

data: {"event": "message_file", "conversation_id": "c", "message_id": "m", "id": "f1", "type": "image", "belongs_to": "assistant", "url": "/files/tools/f1.png?timestamp=1&nonce=n&sign=s"}

data: {"event": "message_file", "conversation_id": "c", "message_id": "m", "id": "f0", "type": "image", "belongs_to": "user", "url": "https://cdn.example/in.png"}

data: {"event": "message_file", "conversation_id": "c", "message_id": "m", "task_id": "t", "answer": "."}

data: {"event": "message_end", "conversation_id": "c", "message_id": "m", "task_id": "t", "metadata": {"retriever_resources": [{"position": 1, "dataset_name": "Manuals", "document_name": "returns.pdf", "score": 0.9}, {"position": "2", "dataset_name": "FAQ", "document_name": "shipping.md"}]}, "files": [{"related_id": "f9", "type": "document", "url": "https://dify/files/x.pdf", "filename": "x.pdf"}]}

`
	a, err := ReadStream(t.Context(), strings.NewReader(stream), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []AnswerFile{{ID: "f1", Type: "image", URL: "/files/tools/f1.png?timestamp=1&nonce=n&sign=s"}}
	if a.Text != "See the chart." || !reflect.DeepEqual(a.Files, want) {
		t.Errorf("text %q files %+v", a.Text, a.Files)
	}
	wantC := []Citation{{1, "Manuals", "returns.pdf"}, {2, "FAQ", "shipping.md"}}
	if !reflect.DeepEqual(a.Citations, wantC) {
		t.Errorf("citations %+v", a.Citations)
	}
	// Without message_file events, message_end's files are the answer's.
	end := `data: {"event": "message_end", "conversation_id": "c", "message_id": "m", "task_id": "t", "metadata": {}, "files": [{"related_id": "f9", "type": "document", "url": "https://dify/files/x.pdf", "filename": "x.pdf"}, {"id": "u1", "type": "image", "url": "https://in", "belongs_to": "user"}]}

`
	a, err = ReadStream(t.Context(), strings.NewReader(end), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.Files, []AnswerFile{{ID: "f9", Type: "document", URL: "https://dify/files/x.pdf", Name: "x.pdf"}}) {
		t.Errorf("end files %+v", a.Files)
	}
}
