package dify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Usage is the token and cost accounting of message_end.metadata.usage.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
	TotalTokens      int
	TotalPrice       string // a decimal string, kept as text to avoid float rounding
	Currency         string
	Latency          float64 // seconds, as measured by Dify
}

// Answer is a chat answer assembled from a stream (or a blocking response).
type Answer struct {
	Text           string
	ConversationID string
	MessageID      string
	TaskID         string
	// Files are the assistant's files: message_file events that carry no answer text, or the
	// files of message_end when no such event came.
	Files []AnswerFile
	// Citations are message_end.metadata.retriever_resources: the knowledge the answer used.
	Citations   []Citation
	Paused      bool // workflow_paused or human_input_required: the app wants a human
	PauseReason string
	Usage       Usage
	Events      int           // JSON events seen
	Pings       int           // keep-alive events seen
	FirstToken  time.Duration // from stream start to the first answer delta (0 if none)
}

// AnswerFile is a file the app produced for the customer. URL is where Dify serves it, signed
// and short-lived (FILES_ACCESS_TIMEOUT, 300 s by default; api/core/tools/signature.py); it
// is relative ("/files/tools/...") when Dify's FILES_URL is unset.
type AnswerFile struct {
	ID   string
	Type string // image, document, audio, video, custom
	URL  string
	Name string // when Dify names it (message_end files)
}

// Citation is one retriever resource of an answer.
type Citation struct {
	Position     int
	DatasetName  string
	DocumentName string
}

// StreamOptions configures ReadStreamWith.
type StreamOptions struct {
	// Idle bounds the silence between any two events, pings included; 0 disables it.
	Idle time.Duration
	// OnStart, if set, is called once, as soon as an event carries a task_id, with that task id
	// and the conversation id known so far. It lets a caller stop the task or remember the
	// conversation before the answer is complete.
	OnStart func(taskID, conversationID string)
	// MaxLine is the SSE line limit; 0 means DefaultMaxLine.
	MaxLine int
	// Now is the clock for Answer.FirstToken; nil means time.Now.
	Now func() time.Time
	// AppMode is the app's mode from GET /info, when known. ModeAgent reads the stream as a New
	// Agent app's: agent_message is never part of the answer. Other values, and "", leave it to
	// the stream (see ReadStreamWith).
	AppMode string
}

// ReadStream reads a Dify chat stream until a terminal event. idle bounds the silence between
// any two events (pings included); 0 disables it. onStart is called once with task_id and
// conversation_id as soon as the first JSON event carrying a task id arrives (may be nil).
// See ReadStreamWith for the rules.
func ReadStream(ctx context.Context, body io.Reader, idle time.Duration, onStart func(taskID, conversationID string)) (*Answer, error) {
	return ReadStreamWith(ctx, body, StreamOptions{Idle: idle, OnStart: onStart})
}

// ReadStreamWith reads a Dify chat stream until a terminal event.
//
// Text is the answer for the customer. Chat and chatflow apps stream it as message deltas
// (message_file events that carry answer text count too); message_replace replaces it.
// Legacy Agent apps (agent-chat) stream it as agent_message deltas. New Agent apps (mode
// "agent") use agent_message for the agent's process text, narration and tool talk, and send
// the answer as message events: deltas of the final output, or one message with the complete
// answer, and the docs also describe deltas followed by one closing message that repeats the
// whole answer (api/core/app/apps/agent_app/app_runner.py, publish_agent_message_delta and
// _publish_terminal_answer; dify-docs en/api-reference/guides/streaming.mdx: "treat it as the
// final answer"). So:
//   - once a stream has sent any message text, Text is the message text alone and agent_message
//     text is narration; a stream with no message text (a legacy agent) answers with its
//     agent_message text, unless opts.AppMode is ModeAgent;
//   - in a stream of a New Agent app (opts.AppMode, or agent_message or agent_thought events
//     before), a message that starts with all the message text so far is that closing repeat
//     and replaces the text instead of doubling it. Chat apps never get this rule: their deltas
//     may legitimately repeat.
//
// Reasoning (reasoning_chunk), agent thoughts, TTS and node events never reach Text.
//
// The result:
//   - message_end: the answer, nil error.
//   - workflow_finished with status succeeded or partial-succeeded: chatflow sends it after
//     message_end, but Dify's own doc example sends it before the messages, so reading goes on
//     until message_end; a clean end of stream (or silence) after it also counts as success.
//   - workflow_paused, human_input_required, or workflow_finished(paused): Paused is set and the
//     error is nil; the app wants a human and retrying would not help.
//   - an error event: *APIError with InStream set.
//   - workflow_finished with any other status: *WorkflowError.
//   - the end of body before any of these: an error wrapping ErrTruncated.
//   - idle silence: ErrIdle; ctx done: ctx.Err().
//
// On error the returned Answer, when not nil, holds what was assembled so far, for diagnostics.
//
// body is read on a separate goroutine so that silence can be timed; it reads one event at a
// time and has ended when ReadStreamWith returns, except in one case: on idle timeout or
// cancellation a Read may be blocked, so body is closed if it is an io.Closer, and otherwise
// the goroutine ends only when that Read returns, which is why the caller must close the
// underlying connection. The caller owns body and should close it in any case.
func ReadStreamWith(ctx context.Context, body io.Reader, opts StreamOptions) (*Answer, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	st := &assembler{start: now(), now: now, onStart: opts.OnStart, newAgent: opts.AppMode == ModeAgent}

	fr := startFrames(body, opts.MaxLine)
	defer fr.stop()

	var (
		idleC     <-chan time.Time
		resetIdle = func() {}
	)
	if opts.Idle > 0 {
		t := time.NewTimer(opts.Idle)
		defer t.Stop()
		idleC = t.C
		resetIdle = func() { t.Reset(opts.Idle) }
	}

	for {
		fr.request()
		var f frame
		select {
		case f = <-fr.frames:
		case <-idleC:
			fr.abort(body)
			if st.workflowSucceeded {
				return st.answer(), nil
			}
			return st.answer(), fmt.Errorf("%w after %s (%s)", ErrIdle, opts.Idle, st.progress())
		case <-ctx.Done():
			fr.abort(body)
			return st.answer(), ctx.Err()
		}
		resetIdle()
		if f.err != nil {
			if ctx.Err() != nil {
				return st.answer(), ctx.Err()
			}
			if f.err == io.EOF && st.workflowSucceeded {
				return st.answer(), nil
			}
			if f.err == io.EOF || errors.Is(f.err, io.ErrUnexpectedEOF) {
				return st.answer(), fmt.Errorf("%w (%s)", ErrTruncated, st.progress())
			}
			if errors.Is(f.err, ErrLineTooLong) {
				return st.answer(), f.err
			}
			// A connection broken mid-answer is a truncation too; keep the cause for the log.
			return st.answer(), fmt.Errorf("%w (%s): %w", ErrTruncated, st.progress(), f.err)
		}
		done, err := st.handle(f.ev)
		if done || err != nil {
			return st.answer(), err
		}
	}
}

type frame struct {
	ev  SSEEvent
	err error
}

// frameReader runs the SSE reader on its own goroutine, one frame per request, so that the
// goroutine is never left holding a frame nobody will take and is idle between requests.
type frameReader struct {
	next   chan struct{}
	frames chan frame
	quit   chan struct{}
	exited chan struct{}
}

func startFrames(body io.Reader, maxLine int) *frameReader {
	fr := &frameReader{
		next:   make(chan struct{}),
		frames: make(chan frame),
		quit:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	sr := NewSSEReader(body, maxLine)
	go func() {
		defer close(fr.exited)
		for {
			select {
			case <-fr.next:
			case <-fr.quit:
				return
			}
			ev, err := sr.Next()
			select {
			case fr.frames <- frame{ev, err}:
			case <-fr.quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return fr
}

// request asks for one more frame. It does not block for long: the goroutine waits for it
// whenever no frame is outstanding, and has exited only after sending an error, which ends the
// caller's loop.
func (fr *frameReader) request() {
	select {
	case fr.next <- struct{}{}:
	case <-fr.exited:
	}
}

// abort stops reading while a Read may be blocked on a silent connection. It closes body, if it
// can be closed, so that the Read returns and the goroutine can be waited for; otherwise the
// goroutine is left to end with the Read.
func (fr *frameReader) abort(body io.Reader) {
	close(fr.quit)
	c, ok := body.(io.Closer)
	if !ok {
		return
	}
	_ = c.Close() // the stream is abandoned; a close error changes nothing for the caller
	<-fr.exited
}

// stop ends the goroutine after a frame was taken, when it is waiting for the next request or
// has already exited, and waits for it.
func (fr *frameReader) stop() {
	select {
	case <-fr.quit:
		return // aborted
	default:
	}
	close(fr.quit)
	<-fr.exited
}

// streamEvent holds the fields of every event type the bridge reads. Fields use lenient types
// because upstream examples disagree on them (e.g. total_steps as a string).
type streamEvent struct {
	Event          flexString      `json:"event"`
	TaskID         flexString      `json:"task_id"`
	ConversationID flexString      `json:"conversation_id"`
	MessageID      flexString      `json:"message_id"`
	Answer         *flexString     `json:"answer"`
	URL            flexString      `json:"url"`
	BelongsTo      flexString      `json:"belongs_to"`
	Metadata       json.RawMessage `json:"metadata"`
	Data           json.RawMessage `json:"data"`
	// error events
	Code    flexString `json:"code"`
	Message flexString `json:"message"`
	Status  flexInt    `json:"status"`
}

type workflowData struct {
	Status  flexString `json:"status"`
	Error   flexString `json:"error"`
	Reasons []struct {
		UpperType flexString `json:"TYPE"`
		Type      flexString `json:"type"`
	} `json:"reasons"`
}

// reason is the type of the first pause reason, or def. Dify's code writes the key as TYPE,
// its docs as type.
func (d *workflowData) reason(def string) string {
	for _, r := range d.Reasons {
		if r.UpperType != "" {
			return string(r.UpperType)
		}
		if r.Type != "" {
			return string(r.Type)
		}
	}
	return def
}

type usageJSON struct {
	PromptTokens     flexInt    `json:"prompt_tokens"`
	CompletionTokens flexInt    `json:"completion_tokens"`
	TotalTokens      flexInt    `json:"total_tokens"`
	TotalPrice       flexString `json:"total_price"`
	Currency         flexString `json:"currency"`
	Latency          flexFloat  `json:"latency"`
}

func (u usageJSON) usage() Usage {
	return Usage{
		PromptTokens:     int(u.PromptTokens),
		CompletionTokens: int(u.CompletionTokens),
		TotalTokens:      int(u.TotalTokens),
		TotalPrice:       string(u.TotalPrice),
		Currency:         string(u.Currency),
		Latency:          float64(u.Latency),
	}
}

// assembler is the state of one stream.
type assembler struct {
	a                 Answer
	msg               strings.Builder // text of message, message_file and message_replace
	agent             strings.Builder // text of agent_message
	msgSeen           bool            // a message event carried text (possibly replaced by "")
	newAgent          bool            // the caller knows the app is a New Agent app
	agentish          bool            // agent_message or agent_thought seen: an agent app
	start             time.Time
	now               func() time.Time
	onStart           func(taskID, conversationID string)
	started           bool
	workflowSucceeded bool // workflow_finished(succeeded) arrived before message_end
}

// text is the answer so far, by the rules of ReadStreamWith.
func (s *assembler) text() string {
	if s.msgSeen || s.newAgent {
		return s.msg.String()
	}
	return s.agent.String()
}

func (s *assembler) answer() *Answer {
	a := s.a
	a.Text = s.text()
	return &a
}

func (s *assembler) progress() string {
	return fmt.Sprintf("%d events, %d pings, %d bytes of answer", s.a.Events, s.a.Pings, s.msg.Len()+s.agent.Len())
}

// handle applies one SSE event and reports whether the stream reached a successful or paused end.
func (s *assembler) handle(ev SSEEvent) (bool, error) {
	if ev.Name == "ping" {
		s.a.Pings++
		return false, nil
	}
	if ev.Data == nil {
		return false, nil // an unknown data-less event; it only proves the stream is alive
	}
	var e streamEvent
	if err := json.Unmarshal(ev.Data, &e); err != nil {
		return false, fmt.Errorf("decode dify stream event %d: %w", s.a.Events+1, err)
	}
	s.a.Events++
	kind := string(e.Event)
	if kind == "" {
		kind = ev.Name
	}
	s.noteIDs(&e)

	switch kind {
	case "message":
		if e.Answer == nil {
			return false, nil
		}
		delta := string(*e.Answer)
		if (s.newAgent || s.agentish) && s.msg.Len() > 0 && strings.HasPrefix(delta, s.msg.String()) {
			// A New Agent app's closing message repeats the whole answer.
			s.replace(delta)
		} else {
			s.appendMsg(delta)
		}
	case "agent_message":
		s.agentish = true
		if e.Answer != nil && *e.Answer != "" {
			if !s.newAgent && !s.msgSeen {
				s.firstToken() // a legacy agent's answer, as far as the stream can tell
			}
			s.agent.WriteString(string(*e.Answer))
		}
	case "agent_thought":
		s.agentish = true
	case "message_file":
		// Chat apps relabel text deltas message_file once the message has an assistant file.
		if e.Answer != nil {
			s.appendMsg(string(*e.Answer))
		} else if e.URL != "" && e.BelongsTo != "user" {
			// Files are rare: their id and type are read only here, so text
			// deltas cost nothing more.
			var f struct {
				ID   flexString `json:"id"`
				Type flexString `json:"type"`
			}
			_ = json.Unmarshal(ev.Data, &f) // the event already decoded once; the URL is what matters
			s.a.Files = append(s.a.Files, AnswerFile{ID: string(f.ID), Type: string(f.Type), URL: string(e.URL)})
		}
	case "message_replace":
		if e.Answer != nil {
			s.replace(string(*e.Answer))
		}
	case "message_end":
		s.takeUsage(e.Metadata)
		var end struct {
			Files json.RawMessage `json:"files"`
		}
		if len(s.a.Files) == 0 && json.Unmarshal(ev.Data, &end) == nil {
			s.takeEndFiles(end.Files)
		}
		return true, nil
	case "error":
		return false, &APIError{Status: int(e.Status), Code: string(e.Code), Message: string(e.Message), InStream: true}
	case "workflow_finished":
		var d workflowData
		if len(e.Data) > 0 {
			if err := json.Unmarshal(e.Data, &d); err != nil {
				return false, fmt.Errorf("decode dify workflow_finished: %w", err)
			}
		}
		switch d.Status {
		case "succeeded", "partial-succeeded":
			s.workflowSucceeded = true
		case "paused":
			s.pause("paused")
			return true, nil
		default:
			return false, &WorkflowError{Status: string(d.Status), Message: string(d.Error)}
		}
	case "human_input_required":
		s.pause(kind)
		return true, nil
	case "workflow_paused":
		var d workflowData
		_ = json.Unmarshal(e.Data, &d) // the reason is informative; a pause is a pause without it
		s.pause(d.reason(kind))
		return true, nil
	}
	return false, nil
}

func (s *assembler) noteIDs(e *streamEvent) {
	if s.a.ConversationID == "" {
		s.a.ConversationID = string(e.ConversationID)
	}
	if s.a.MessageID == "" {
		s.a.MessageID = string(e.MessageID)
	}
	if s.a.TaskID == "" && e.TaskID != "" {
		s.a.TaskID = string(e.TaskID)
	}
	if !s.started && s.a.TaskID != "" {
		s.started = true
		if s.onStart != nil {
			s.onStart(s.a.TaskID, s.a.ConversationID)
		}
	}
}

func (s *assembler) appendMsg(delta string) {
	if delta == "" {
		return
	}
	s.firstToken()
	s.msgSeen = true
	s.msg.WriteString(delta)
}

func (s *assembler) replace(text string) {
	if text != "" {
		s.firstToken()
	}
	s.msgSeen = true
	s.msg.Reset()
	s.msg.WriteString(text)
}

func (s *assembler) firstToken() {
	if s.a.FirstToken == 0 {
		s.a.FirstToken = max(s.now().Sub(s.start), time.Nanosecond)
	}
}

func (s *assembler) pause(reason string) {
	s.a.Paused = true
	s.a.PauseReason = reason
}

// takeUsage reads metadata.usage and metadata.retriever_resources. Both are extras, so a
// malformed value is ignored rather than failing an otherwise complete answer.
func (s *assembler) takeUsage(metadata json.RawMessage) {
	var m struct {
		Usage     *usageJSON `json:"usage"`
		Resources []struct {
			Position     flexInt    `json:"position"`
			DatasetName  flexString `json:"dataset_name"`
			DocumentName flexString `json:"document_name"`
		} `json:"retriever_resources"`
	}
	if len(metadata) == 0 || json.Unmarshal(metadata, &m) != nil {
		return
	}
	if m.Usage != nil {
		s.a.Usage = m.Usage.usage()
	}
	for _, r := range m.Resources {
		s.a.Citations = append(s.a.Citations, Citation{Position: int(r.Position), DatasetName: string(r.DatasetName),
			DocumentName: string(r.DocumentName)})
	}
}

// takeEndFiles reads message_end.files (File.to_dict: type, url, filename, related_id...), the
// answer's files in newer chatflows, unless message_file events already named them.
func (s *assembler) takeEndFiles(raw json.RawMessage) {
	if len(s.a.Files) > 0 || len(raw) == 0 {
		return
	}
	var files []struct {
		ID        flexString `json:"id"`
		RelatedID flexString `json:"related_id"`
		Type      flexString `json:"type"`
		URL       flexString `json:"url"`
		RemoteURL flexString `json:"remote_url"`
		Filename  flexString `json:"filename"`
		BelongsTo flexString `json:"belongs_to"`
	}
	if json.Unmarshal(raw, &files) != nil {
		return
	}
	for _, f := range files {
		u := string(f.URL)
		if u == "" {
			u = string(f.RemoteURL)
		}
		if u == "" || f.BelongsTo == "user" {
			continue
		}
		id := string(f.ID)
		if id == "" {
			id = string(f.RelatedID)
		}
		s.a.Files = append(s.a.Files, AnswerFile{ID: id, Type: string(f.Type), URL: u, Name: string(f.Filename)})
	}
}

// flexString accepts a JSON string, or any other scalar as its literal text; null is "".
type flexString string

func (s *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		*s = ""
	case len(b) >= 2 && b[0] == '"' && bytes.IndexByte(b, '\\') < 0 && utf8.Valid(b):
		// The decoder has validated the literal; without escapes its text is the value.
		*s = flexString(b[1 : len(b)-1])
	case b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = flexString(v)
	default:
		*s = flexString(b)
	}
	return nil
}

// flexInt accepts a JSON number (fractions truncated) or a numeric string; anything else is 0.
type flexInt int

func (n *flexInt) UnmarshalJSON(b []byte) error {
	var f flexFloat
	if err := f.UnmarshalJSON(b); err != nil {
		return err
	}
	if f > math.MaxInt32 || f < math.MinInt32 {
		f = 0 // no count Dify reports comes near this; treat it as garbage
	}
	*n = flexInt(f)
	return nil
}

// flexFloat accepts a JSON number or a numeric string; anything else is 0.
type flexFloat float64

func (f *flexFloat) UnmarshalJSON(b []byte) error {
	var s flexString
	if err := s.UnmarshalJSON(b); err != nil {
		return err
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(s)), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		v = 0
	}
	*f = flexFloat(v)
	return nil
}
