package simulate

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// splitAnswer cuts an answer into a few deltas, at spaces where it can
// (each later piece starts with its space, as LLM tokens do) and otherwise
// at rune boundaries. The pieces concatenate to the answer.
func splitAnswer(s string) []string {
	if s == "" {
		return nil
	}
	const parts = 4
	var out []string
	last := 0
	for i := 1; i < parts; i++ {
		t := len(s) * i / parts
		if t <= last {
			continue
		}
		if j := strings.IndexByte(s[t:], ' '); j >= 0 && j < len(s)/parts+1 {
			t += j
		}
		for t < len(s) && !utf8.RuneStart(s[t]) {
			t++
		}
		if t <= last || t >= len(s) {
			continue
		}
		out = append(out, s[last:t])
		last = t
	}
	return append(out, s[last:])
}

// pacer spreads waits over a stream and notices a stop, a client that went
// away and Close.
type pacer struct {
	ctx      context.Context
	done     <-chan struct{}
	stop     <-chan struct{}
	interval time.Duration
	timer    *time.Timer
}

type paceResult int

const (
	paceOK paceResult = iota
	paceStopped
	paceGone
)

func (p *pacer) wait() paceResult {
	select {
	case <-p.ctx.Done():
		return paceGone
	case <-p.done:
		return paceGone
	case <-p.stop:
		return paceStopped
	default:
	}
	if p.interval <= 0 {
		return paceOK
	}
	if p.timer == nil {
		p.timer = time.NewTimer(p.interval)
	} else {
		p.timer.Reset(p.interval)
	}
	select {
	case <-p.timer.C:
		return paceOK
	case <-p.ctx.Done():
		return paceGone
	case <-p.done:
		return paceGone
	case <-p.stop:
		return paceStopped
	}
}

func (p *pacer) close() {
	if p.timer != nil {
		p.timer.Stop()
	}
}

// sseWriter writes frames exactly as Dify does: JSON events as a lone
// `data: <json>` line, pings as a lone `event: ping` line, each frame
// followed by a blank line and flushed.
type sseWriter struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	call *chatCall
	buf  []byte
}

func (s *sseWriter) flush() bool {
	if _, err := s.w.Write(s.buf); err != nil {
		return false
	}
	return s.rc.Flush() == nil
}

func (s *sseWriter) ping() bool {
	s.buf = append(s.buf[:0], "event: ping\n\n"...)
	return s.flush()
}

// event writes one JSON event with the wrapper fields every chat, agent
// and chatflow event starts with.
func (s *sseWriter) event(name string, withTask bool, fields ...field) bool {
	c := s.call
	o := make(obj, 0, 5+len(fields))
	o = append(o, field{"event", name}, field{"conversation_id", c.conv.id}, field{"message_id", c.msgID}, field{"created_at", c.created})
	if withTask {
		o = append(o, field{"task_id", c.taskID})
	}
	o = append(o, fields...)
	s.buf = append(s.buf[:0], "data: "...)
	s.buf = c.enc.append(s.buf, o)
	s.buf = append(s.buf, '\n', '\n')
	return s.flush()
}

func (s *sseWriter) errorEvent(f DifyFault) bool {
	code, msg := "completion_request_error", "[openai] Rate Limit Error"
	if f.Code != "" {
		code = f.Code
	}
	if f.Message != "" {
		msg = f.Message
	}
	// The error event has no task_id.
	return s.event("error", false, field{"code", code}, field{"message", msg}, field{"status", 400})
}

func price(p float64) string { return strconv.FormatFloat(p, 'f', 7, 64) }

func (c *chatCall) usage(answer string, history int) obj {
	prompt := 20 + len(c.query)/4 + history*12
	completion := len(answer)/4 + 1
	latency := math.Round(c.elapsed()*1000) / 1000
	pp, cp := float64(prompt)*0.0005*0.001, float64(completion)*0.0015*0.001
	return obj{
		{"prompt_tokens", prompt}, {"prompt_unit_price", "0.0005"}, {"prompt_price_unit", "0.001"}, {"prompt_price", price(pp)},
		{"completion_tokens", completion}, {"completion_unit_price", "0.0015"}, {"completion_price_unit", "0.001"},
		{"completion_price", price(cp)}, {"total_tokens", prompt + completion}, {"total_price", price(pp + cp)},
		{"currency", "USD"}, {"latency", latency}, {"time_to_first_token", nil}, {"time_to_generate", nil},
	}
}

func (c *chatCall) metadata(answer string, history int) obj {
	resources := []any{}
	if c.response != nil {
		for i, cit := range c.response.Citations {
			// api/core/rag/entities/citation_metadata.py
			resources = append(resources, obj{{"position", i + 1}, {"dataset_id", newUUID()}, {"dataset_name", cit.DatasetName},
				{"document_id", newUUID()}, {"document_name", cit.DocumentName}, {"data_source_type", "upload_file"},
				{"segment_id", newUUID()}, {"retriever_from", "api"}, {"score", 0.87}, {"content", "..."}})
		}
	}
	if c.app.Mode == ModeAdvancedChat {
		// Chatflow metadata has no annotation_reply when none matched.
		return obj{{"usage", c.usage(answer, history)}, {"retriever_resources", resources}}
	}
	return obj{{"annotation_reply", nil}, {"retriever_resources", resources}, {"usage", c.usage(answer, history)}}
}

func (d *Dify) historyLen(call *chatCall) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(call.conv.turns)
}

func startStream(w http.ResponseWriter, call *chatCall) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &sseWriter{w: w, rc: http.NewResponseController(w), call: call, buf: make([]byte, 0, 512)}
}

// streamWorkerError answers as a chatflow stream whose worker failed before
// the first node: the relay's immediate ping, then the worker's error event,
// which is not a task pipeline event and so has neither the wrapper fields
// nor a code (tasks/app_generate/workflow_execute_task.py#_publish_error_event,
// relayed by core/app/apps/streaming_utils.py).
func (d *Dify) streamWorkerError(ctx context.Context, w http.ResponseWriter, call *chatCall, message string) {
	s := startStream(w, call)
	if ctx.Err() != nil || !s.ping() {
		return
	}
	s.buf = append(s.buf[:0], "data: "...)
	s.buf = call.enc.append(s.buf, obj{{"event", "error"}, {"message", message}, {"status", http.StatusInternalServerError}})
	s.buf = append(s.buf, '\n', '\n')
	s.flush()
}

// stream answers a streaming call.
func (d *Dify) stream(ctx context.Context, w http.ResponseWriter, call *chatCall) {
	f := call.fault
	if f.WorkerError {
		d.streamWorkerError(ctx, w, call, f.Message)
		return
	}
	s := startStream(w, call)
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	p := &pacer{ctx: ctx, done: done, stop: call.task.stop}
	defer p.close()

	adv := call.app.Mode == ModeAdvancedChat
	workflowish := adv || f.Paused || f.WorkflowFailed
	// Celery-backed chatflow streams ping at once; with latency every
	// stream starts with a ping, as a slow model's does.
	if workflowish || call.latency > 0 || f.PingsOnly {
		if !s.ping() {
			return
		}
	} else if s.rc.Flush() != nil {
		return
	}
	if f.PingsOnly {
		select {
		case <-ctx.Done():
		case <-done:
		}
		return
	}

	runID := newUUID()
	nodeExec := newUUID()
	run := func(name string, data obj) bool {
		return s.event(name, true, field{"workflow_run_id", runID}, field{"data", data})
	}
	now := func() int64 { return call.clock().Unix() }
	if workflowish && !run("workflow_started", obj{
		{"id", runID}, {"workflow_id", call.workflowID}, {"inputs", call.inputs}, {"created_at", call.created}, {"reason", "initial"},
	}) {
		return
	}
	nodeData := func(status string, errText any, outputs any) obj {
		o := obj{{"id", nodeExec}, {"node_id", "llm"}, {"node_type", "llm"}, {"title", "LLM"}, {"index", 2},
			{"predecessor_node_id", "start"}, {"inputs", nil}}
		if status != "" {
			o = append(o, field{"process_data", nil}, field{"outputs", outputs}, field{"status", status},
				field{"error", errText}, field{"elapsed_time", call.elapsed()},
				field{"execution_metadata", obj{{"total_tokens", 0}, {"total_price", "0"}, {"currency", "USD"}}},
				field{"created_at", call.created}, field{"finished_at", now()})
			return o
		}
		return append(o, field{"created_at", call.created})
	}
	workflowData := func(status string, errText any, outputs any) obj {
		return obj{{"id", runID}, {"workflow_id", call.workflowID}, {"status", status}, {"outputs", outputs},
			{"error", errText}, {"elapsed_time", call.elapsed()}, {"total_tokens", 0}, {"total_steps", 3},
			{"created_by", obj{{"id", newUUID()}, {"user", call.user}}}, {"created_at", call.created},
			{"finished_at", now()}, {"exceptions_count", 0}, {"files", []any{}}}
	}

	switch {
	case f.Paused:
		formID := newUUID()
		form := obj{{"form_id", formID}, {"form_token", "tok_" + randToken(12)}, {"node_id", "human_input"},
			{"node_title", "Human Input"}, {"form_content", "Please review the answer."},
			{"inputs", []obj{{{"type", "paragraph"}, {"output_variable_name", "comment"}, {"default", nil}}}},
			{"actions", []obj{{{"id", "approve"}, {"title", "Approve"}, {"button_style", "primary"}}}},
			{"display_in_ui", false}, {"resolved_default_values", obj{{"comment", ""}}}, {"expiration_time", call.created + 86400}}
		if !run("human_input_required", form) {
			return
		}
		reason := append(obj{{"TYPE", "human_input_required"}}, form...)
		run("workflow_paused", obj{{"workflow_run_id", runID}, {"paused_nodes", []string{"human_input"}},
			{"outputs", obj{}}, {"reasons", []obj{reason}}, {"status", "paused"}, {"created_at", call.created},
			{"elapsed_time", call.elapsed()}, {"total_tokens", 0}, {"total_steps", 2}})
		return
	case f.WorkflowFailed:
		const failure = "node llm failed"
		if run("node_started", nodeData("", nil, nil)) && run("node_finished", nodeData("failed", failure, nil)) {
			run("workflow_finished", workflowData("failed", failure, obj{}))
		}
		return
	}

	if adv && !run("node_started", nodeData("", nil, nil)) {
		return
	}
	deltaName := "message"
	newAgent := call.app.Mode == ModeAgent
	switch call.app.Mode {
	case ModeAgentChat:
		deltaName = "agent_message"
		if !s.event("agent_thought", true, field{"id", newUUID()}, field{"position", 1}, field{"thought", ""},
			field{"observation", ""}, field{"tool", ""}, field{"tool_labels", obj{}}, field{"tool_input", ""},
			field{"message_files", []any{}}) {
			return
		}
	case ModeAgent:
		if !d.agentToolTurn(s, call) {
			return
		}
	}

	history := d.historyLen(call)
	chunks := splitAnswer(d.answer(call))
	p.interval = call.latency / time.Duration(len(chunks)+1)
	if call.response != nil {
		for _, f := range call.response.Files {
			id, u := d.toolFileURL(f)
			// task_pipeline/message_cycle_manager.py message_file_to_stream_response
			if !s.event("message_file", true, field{"id", id}, field{"type", f.Type}, field{"belongs_to", "assistant"}, field{"url", u}) {
				return
			}
			if call.app.Mode == ModeChat {
				// Once the message has an assistant file, a chat app relabels
				// its text deltas message_file (get_message_event_type).
				deltaName = "message_file"
			}
		}
	}
	var sent strings.Builder
	stopped := false
	for i, chunk := range chunks {
		if f.CutAfter > 0 && i >= f.CutAfter {
			dropConnection(w)
			return
		}
		switch p.wait() {
		case paceGone:
			return
		case paceStopped:
			stopped = true
		}
		if stopped {
			break
		}
		delta := []field{{"id", call.msgID}, {"answer", chunk}}
		if deltaName != "agent_message" {
			var sel any
			if adv {
				sel = []string{"llm", "text"}
			}
			delta = append(delta, field{"from_variable_selector", sel})
		}
		if !s.event(deltaName, true, delta...) {
			return
		}
		sent.WriteString(chunk)
		if f.ErrorEvent {
			s.errorEvent(f)
			return
		}
	}
	if f.CutAfter > 0 && !stopped {
		dropConnection(w)
		return
	}
	if f.ErrorEvent {
		s.errorEvent(f)
		return
	}
	if !stopped {
		switch p.wait() {
		case paceGone:
			return
		case paceStopped:
			stopped = true
		}
	}

	answer := sent.String()
	d.finish(call, answer)
	if newAgent && !stopped && answer != "" {
		// The closing message repeats the complete answer (dify-docs
		// en/api-reference/guides/streaming.mdx: "treat it as the final answer").
		if !s.event("message", true, field{"id", call.msgID}, field{"answer", answer}, field{"from_variable_selector", nil}) {
			return
		}
	}
	if adv && !run("node_finished", nodeData("succeeded", nil, obj{{"text", answer}})) {
		return
	}
	var files any
	if adv {
		files = []any{}
	}
	if !s.event("message_end", true, field{"id", call.msgID}, field{"metadata", call.metadata(answer, history)}, field{"files", files}) {
		return
	}
	if adv {
		status := "succeeded"
		if stopped {
			status = "stopped"
		}
		run("workflow_finished", workflowData(status, nil, obj{{"answer", answer}}))
	}
}

// newAgentNarration is what the fake New Agent says before its tool call.
const newAgentNarration = "Let me look that up for you. "

// agentToolTurn streams what a New Agent app sends before its answer: the
// agent's narration as agent_message (AgentAppRunner publishes model text as
// agent-process deltas), then one tool call as agent_thought events, sent
// when the thought row is created and again when the tool's result lands in
// it (app_runner.py#_AgentProcessRecorder; the row's fields as the legacy
// agent_thought event shows them).
func (d *Dify) agentToolTurn(s *sseWriter, call *chatCall) bool {
	const tool = "knowledge_lookup"
	thought := newUUID()
	labels := obj{{tool, obj{{"en_US", tool}, {"zh_Hans", tool}}}}
	input := pythonJSON.marshal(obj{{"query", call.query}})
	row := func(observation string) []field {
		return []field{{"id", thought}, {"position", 1}, {"thought", ""}, {"observation", observation},
			{"tool", tool}, {"tool_labels", labels}, {"tool_input", string(input)}, {"message_files", []any{}}}
	}
	return s.event("agent_message", true, field{"id", call.msgID}, field{"answer", newAgentNarration}) &&
		s.event("agent_thought", true, row("")...) &&
		s.event("agent_thought", true, row(`{"status": "found"}`)...)
}

// blocking answers a blocking call with one JSON body.
func (d *Dify) blocking(ctx context.Context, w http.ResponseWriter, call *chatCall) {
	f := call.fault
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	switch {
	case f.PingsOnly:
		// A hung run: nothing at all until the client gives up.
		select {
		case <-ctx.Done():
		case <-done:
		}
		return
	case f.ErrorEvent:
		code, msg := "completion_request_error", "[openai] Rate Limit Error"
		if f.Code != "" {
			code = f.Code
		}
		if f.Message != "" {
			msg = f.Message
		}
		difyError(w, http.StatusBadRequest, code, msg)
		return
	case f.WorkflowFailed:
		difyError(w, http.StatusBadRequest, "invalid_param", "Run failed: node llm failed")
		return
	case f.WorkerError:
		difyError(w, http.StatusInternalServerError, "internal_server_error", msgInternal)
		return
	}
	history := d.historyLen(call)
	var chunks []string
	if !f.Paused {
		chunks = splitAnswer(d.answer(call))
	}
	p := &pacer{ctx: ctx, done: done, stop: call.task.stop, interval: call.latency / time.Duration(len(chunks)+1)}
	defer p.close()
	var sent strings.Builder
	for i, chunk := range chunks {
		if f.CutAfter > 0 && i >= f.CutAfter {
			break
		}
		r := p.wait()
		if r == paceGone {
			return
		}
		if r == paceStopped {
			break
		}
		sent.WriteString(chunk)
	}
	if f.CutAfter > 0 {
		dropConnection(w)
		return
	}
	if p.wait() == paceGone {
		return
	}
	answer := sent.String()
	d.finish(call, answer)
	writeJSON(w, http.StatusOK, pythonJSON.marshal(obj{
		{"event", "message"}, {"task_id", call.taskID}, {"id", call.msgID}, {"message_id", call.msgID},
		{"conversation_id", call.conv.id}, {"mode", call.app.Mode}, {"answer", answer},
		{"metadata", call.metadata(answer, history)}, {"created_at", call.created},
	}))
}
