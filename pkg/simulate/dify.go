package simulate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Dify app modes (api/models/model.py AppMode).
const (
	ModeChat         = "chat"
	ModeAdvancedChat = "advanced-chat"
	ModeAgentChat    = "agent-chat" // a legacy Agent app: the answer streams as agent_message
	ModeAgent        = "agent"      // a New Agent app (1.14): narration in agent_message, the answer in message
	ModeCompletion   = "completion"
	ModeWorkflow     = "workflow"
)

// DifyServerVersion is what GET /v1/ reports. The fake behaves like this release: chatflow
// streams run in a worker, which reports a failure before the first node as a code-less
// error event, and New Agent apps exist.
const DifyServerVersion = "1.14.2"

// DifyApp is one app of the fake Dify, reached with its own key.
type DifyApp struct {
	Key    string // "app-..." bearer key
	Name   string
	Mode   string // "chat" | "advanced-chat" | "agent-chat" | "agent" | "completion" | "workflow"; "" means chat
	Inputs []DifyInput
	// Reply computes the answer; nil means DefaultReply. history holds the
	// earlier (query, answer) turns of this Dify conversation, oldest first.
	Reply func(history []Turn, query string, inputs map[string]any) string
	// Respond, when set, replaces Reply and may answer with files and
	// citations; it also sees the files that came with the message.
	Respond func(DifyCall) DifyResponse
	// FileUpload is the app's file upload feature; nil means off (files
	// sent with a message are then ignored, as Dify does).
	FileUpload *DifyFileUpload
	// SpeechToText turns /audio-to-text on for the app.
	SpeechToText bool
}

// DifyInput is one variable of an app's input form.
type DifyInput struct {
	Variable, Label string
	Type            string // "text-input" (default), "paragraph", "select", "number", ...
	Required        bool
	Options         []string // for "select"
}

// Turn is one finished exchange of a Dify conversation.
type Turn struct{ Query, Answer string }

// DefaultReply is a tiny deterministic brain that shows whether context is
// kept. A query asking about an earlier question ("what did i", "earlier",
// "previous") is answered with the first query of the conversation; a query
// containing "complicated" asks for a human with the [[handoff]] marker;
// anything else is echoed as "Answer to: <query>".
func DefaultReply(history []Turn, query string, inputs map[string]any) string {
	q := strings.ToLower(query)
	switch {
	case strings.Contains(q, "what did i") || strings.Contains(q, "earlier") || strings.Contains(q, "previous"):
		if len(history) == 0 {
			return "I have no earlier question from you."
		}
		return "Earlier you asked: \"" + history[0].Query + "\""
	case strings.Contains(q, "complicated"):
		return "This needs a specialist. [[handoff]]"
	default:
		return "Answer to: " + query
	}
}

// DifyFault is one scripted misbehaviour of a chat-messages call. Fields
// combine: Delay applies first, then Status, else the stream faults.
type DifyFault struct {
	// Status > 0 answers this HTTP status with Dify's error envelope before
	// streaming. Code and Message default to what Dify sends for that status.
	Status        int
	Code, Message string
	// HTML answers with a non-JSON body (an nginx error page), status 502
	// unless Status is set.
	HTML bool
	// Quota answers 429 rate_limit_error, the workspace's billing quota
	// (services/app_generate_service.py raises InvokeRateLimitError, which the
	// controller turns into controllers/web/error.py#InvokeRateLimitError):
	// {"code": "rate_limit_error", "message": "Workflow execution quota limit
	// reached for tenant <id>", "status": 429}. Message replaces the text.
	Quota bool
	// WorkerError streams one ping, then the error event a chatflow's worker
	// publishes when the run fails before its first node, without a code:
	// {"event": "error", "message": "", "status": 500}
	// (tasks/app_generate/workflow_execute_task.py#_publish_error_event).
	// Message fills "message", as the exception text does. A blocking call
	// gets a plain 500 instead.
	WorkerError bool
	// CutAfter > 0 streams that many answer deltas, then drops the
	// connection without message_end.
	CutAfter int
	// ErrorEvent streams one delta, then a mid-stream `error` event, then ends.
	ErrorEvent bool
	// WorkflowFailed streams workflow_started ... workflow_finished with
	// status "failed" and data.error "node llm failed", and no error event.
	WorkflowFailed bool
	// Paused streams a chatflow human-input pause: workflow_started,
	// human_input_required, workflow_paused.
	Paused bool
	// PingsOnly sends one `event: ping`, then nothing until the client goes
	// away (or the Dify is closed).
	PingsOnly bool
	// Empty answers successfully with "".
	Empty bool
	// Delay waits before the first byte. A client that gives up ends the wait.
	Delay time.Duration
}

// DifyRequest is one chat-messages request as the fake received it.
type DifyRequest struct {
	Key              string // masked, e.g. "app-…x7Qz"
	AppName          string
	Query            string
	User             string
	ConversationID   string
	ResponseMode     string
	Inputs           map[string]any
	AutoGenerateName *bool
	At               time.Time
	NewConversation  bool   // conversation_id was empty: the call asks for a new conversation
	TaskID           string // task id of the answer (valid for /stop once streaming started)
	Files            []DifyFileIn
}

type difyApp struct {
	DifyApp
	convs      int    // live conversations
	workflowID string // stable per app, like a published chatflow
}

// maxTurns bounds the history kept per conversation; the first turn is
// always kept because DefaultReply quotes it.
const maxTurns = 64

type difyConv struct {
	id, key, user string
	turns         []Turn
}

type difyTask struct {
	key, user string
	stop      chan struct{}
	stopped   bool
}

// Dify is a fake Dify service API. Serve it at the root of a server: its
// paths are /v1/..., so the client's base URL is server URL + "/v1".
type Dify struct {
	mu       sync.Mutex
	tenantID string
	apps     map[string]*difyApp
	convs    map[string]*difyConv
	faults   map[string][]DifyFault
	tasks    map[string]*difyTask
	latency  time.Duration
	gate     chan struct{} // non-nil while held; closed by Release
	held     int           // calls waiting at the gate
	done     chan struct{} // closed by Close
	closed   bool
	enc      encoder
	now      func() time.Time
	requests ring[DifyRequest]
	stops    ring[string]
	changed  notifier

	filesURL       string
	filesTimeout   time.Duration
	blockPrivate   bool
	uploads        []DifyUpload
	feedbacks      []DifyFeedback
	transcriptions []DifyTranscription
	toolFiles      map[string]*toolFile
	toolDownloads  int
	messages       map[string]msgOwner // answer message id → its app and user
	hosts          map[string]string   // MapHost
}

// NewDify returns a fake Dify serving the given apps.
func NewDify(apps ...DifyApp) *Dify {
	d := &Dify{
		tenantID: newUUID(),
		apps:     make(map[string]*difyApp),
		convs:    make(map[string]*difyConv),
		faults:   make(map[string][]DifyFault),
		tasks:    make(map[string]*difyTask),
		done:     make(chan struct{}),
		enc:      streamJSON,
		now:      time.Now,
		requests: newRing[DifyRequest](maxRecords),
		stops:    newRing[string](maxRecords),
	}
	for _, a := range apps {
		d.AddApp(a)
	}
	return d
}

// AddApp adds an app, or replaces the app with the same key (its
// conversations are kept).
func (d *Dify) AddApp(app DifyApp) {
	if app.Mode == "" {
		app.Mode = ModeChat
	}
	if app.Name == "" {
		app.Name = "Simulated " + app.Mode + " app"
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	a := &difyApp{DifyApp: app, workflowID: newUUID()}
	if old := d.apps[app.Key]; old != nil {
		a.convs, a.workflowID = old.convs, old.workflowID
	}
	d.apps[app.Key] = a
}

// Fail queues faults for the app with this key: its next len(faults)
// chat-messages calls get them in order, later calls are normal again.
func (d *Dify) Fail(key string, faults ...DifyFault) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults[key] = append(d.faults[key], faults...)
}

// SetLatency spreads total over every answer: streams send a ping first,
// then the deltas and message_end at even intervals; blocking calls answer
// after total. 0 answers at once.
func (d *Dify) SetLatency(total time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.latency = total
}

// SetCompact switches stream frames between the spaced JSON of the recorded
// examples (the default) and compact orjson output. Clients must read both.
func (d *Dify) SetCompact(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if on {
		d.enc = compactJSON
	} else {
		d.enc = streamJSON
	}
}

// SetClock replaces time.Now for created_at fields and recordings.
func (d *Dify) SetClock(now func() time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.now = now
}

// Hold makes chat-messages calls wait, after they are recorded and before
// anything is answered, until Release. It builds a backlog for benchmarks.
func (d *Dify) Hold() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gate == nil {
		d.gate = make(chan struct{})
	}
}

// Release lets held calls and later ones proceed.
func (d *Dify) Release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gate != nil {
		close(d.gate)
		d.gate = nil
	}
}

// Held returns how many chat-messages calls are waiting for Release.
func (d *Dify) Held() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.held
}

// Close ends every wait (Hold, Delay, latency, PingsOnly) so that servers
// can shut down; streams cut short that way end without a terminal event.
func (d *Dify) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.closed = true
		close(d.done)
	}
}

// Requests returns the chat-messages requests received, oldest first (the
// last 10,000).
func (d *Dify) Requests() []DifyRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.requests.slice()
}

// Stops returns the task ids whose /stop was called, oldest first (the last 10,000).
func (d *Dify) Stops() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stops.slice()
}

// ConversationCount returns how many live conversations the app with this key has.
func (d *Dify) ConversationCount(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a := d.apps[key]; a != nil {
		return a.convs
	}
	return 0
}

// History returns the finished turns of a conversation, oldest first.
func (d *Dify) History(conversationID string) []Turn {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.convs[conversationID]; c != nil {
		return append([]Turn(nil), c.turns...)
	}
	return nil
}

// WaitFor re-checks cond whenever the fake's state changes (a request is
// recorded, a stop arrives, an answer finishes) until it holds or ctx ends.
func (d *Dify) WaitFor(ctx context.Context, cond func() bool) error {
	return waitFor(ctx, func() <-chan struct{} {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.changed.wait()
	}, cond)
}

// ServeHTTP implements http.Handler.
func (d *Dify) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/v1" || p == "/v1/":
		if !allow(w, r, http.MethodGet) {
			return
		}
		writeJSON(w, http.StatusOK, pythonJSON.marshal(obj{
			{"welcome", "Dify OpenAPI"}, {"api_version", "v1"}, {"server_version", DifyServerVersion},
		}))
	case p == "/v1/info":
		if allow(w, r, http.MethodGet) {
			d.serveInfo(w, r)
		}
	case p == "/v1/parameters":
		if allow(w, r, http.MethodGet) {
			d.serveParameters(w, r)
		}
	case p == "/v1/chat-messages":
		if allow(w, r, http.MethodPost) {
			d.serveChat(w, r)
		}
	case strings.HasPrefix(p, "/v1/chat-messages/") && strings.HasSuffix(p, "/stop"):
		task := strings.TrimSuffix(strings.TrimPrefix(p, "/v1/chat-messages/"), "/stop")
		if task == "" || strings.Contains(task, "/") {
			difyNotFound(w)
			return
		}
		if allow(w, r, http.MethodPost) {
			d.serveStop(w, r, task)
		}
	case strings.HasPrefix(p, "/v1/conversations/") && !strings.Contains(strings.TrimPrefix(p, "/v1/conversations/"), "/"):
		if allow(w, r, http.MethodDelete) {
			d.serveDeleteConversation(w, r, strings.TrimPrefix(p, "/v1/conversations/"))
		}
	default:
		if !d.serveFiles(w, r) {
			difyNotFound(w)
		}
	}
}

// ---- errors ----

// difyError writes Dify's error envelope, {"code": ..., "message": ..., "status": ...}.
func difyError(w http.ResponseWriter, status int, code, message string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="api"`)
	}
	writeJSON(w, status, pythonJSON.marshal(obj{{"code", code}, {"message", message}, {"status", status}}))
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body) // a client that went away is not the server's problem
}

func allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method+", OPTIONS")
	difyError(w, http.StatusMethodNotAllowed, "method_not_allowed", "The method is not allowed for the requested URL.")
	return false
}

func difyNotFound(w http.ResponseWriter) {
	difyError(w, http.StatusNotFound, "not_found",
		"The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.")
}

const (
	msgConversationNotExists = "Conversation Not Exists."
	msgUserRequired          = "Arg user must be provided."
	msgBadJSON               = "The browser (or proxy) sent a request that this server could not understand."
	msgInternal              = "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application."
)

// defaultFaultError is what Dify answers for a status when a fault names no code.
func defaultFaultError(status int) (code, message string) {
	switch status {
	case http.StatusBadRequest:
		return "completion_request_error", "Completion request failed."
	case http.StatusUnauthorized:
		return "unauthorized", "Access token is invalid"
	case http.StatusForbidden:
		return "forbidden", "The app's API service has been disabled."
	case http.StatusNotFound:
		return "not_found", msgConversationNotExists
	case http.StatusTooManyRequests:
		return "too_many_requests", "Too many requests. Please try again later."
	case http.StatusInternalServerError:
		return "internal_server_error", msgInternal
	}
	text := http.StatusText(status)
	if text == "" {
		return "unknown", "Unknown error"
	}
	return strings.ReplaceAll(strings.ToLower(text), " ", "_"), text
}

func nginxPage(status int) []byte {
	line := strconv.Itoa(status) + " " + http.StatusText(status)
	return []byte("<html>\r\n<head><title>" + line + "</title></head>\r\n<body>\r\n<center><h1>" + line +
		"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
}

func (d *Dify) writeFault(w http.ResponseWriter, f DifyFault) {
	if f.Quota {
		msg := "Workflow execution quota limit reached for tenant " + d.tenantID
		if f.Message != "" {
			msg = f.Message
		}
		difyError(w, http.StatusTooManyRequests, "rate_limit_error", msg)
		return
	}
	if f.HTML {
		status := f.Status
		if status == 0 {
			status = http.StatusBadGateway
		}
		body := nginxPage(status)
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		_, _ = w.Write(body) // see writeJSON
		return
	}
	code, message := defaultFaultError(f.Status)
	if f.Code != "" {
		code = f.Code
	}
	if f.Message != "" {
		message = f.Message
	}
	difyError(w, f.Status, code, message)
}

// ---- auth and discovery ----

// auth checks the bearer key as Dify's validate_and_get_api_token does.
func (d *Dify) auth(w http.ResponseWriter, r *http.Request) (DifyApp, bool) {
	h := strings.TrimLeft(r.Header.Get("Authorization"), " \t")
	i := strings.IndexAny(h, " \t")
	if h == "" || i < 0 {
		difyError(w, http.StatusUnauthorized, "unauthorized", "Authorization header must be provided and start with 'Bearer'")
		return DifyApp{}, false
	}
	if !strings.EqualFold(h[:i], "bearer") {
		difyError(w, http.StatusUnauthorized, "unauthorized", "Authorization scheme must be 'Bearer'")
		return DifyApp{}, false
	}
	key := strings.TrimLeft(h[i+1:], " \t")
	d.mu.Lock()
	a := d.apps[key]
	d.mu.Unlock()
	if a == nil {
		difyError(w, http.StatusUnauthorized, "unauthorized", "Access token is invalid")
		return DifyApp{}, false
	}
	return a.DifyApp, true
}

func (d *Dify) serveInfo(w http.ResponseWriter, r *http.Request) {
	app, ok := d.auth(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, pythonJSON.marshal(obj{
		{"name", app.Name},
		{"description", "A simulated Dify app."},
		{"tags", []string{}},
		{"mode", app.Mode},
		{"author_name", "bridge"},
	}))
}

func (d *Dify) serveParameters(w http.ResponseWriter, r *http.Request) {
	app, ok := d.auth(w, r)
	if !ok {
		return
	}
	form := make([]obj, 0, len(app.Inputs))
	for _, in := range app.Inputs {
		typ := in.Type
		if typ == "" {
			typ = "text-input"
		}
		spec := obj{{"label", in.Label}, {"variable", in.Variable}, {"required", in.Required}, {"default", ""}}
		if typ == "select" || len(in.Options) > 0 {
			opts := in.Options
			if opts == nil {
				opts = []string{}
			}
			spec = append(spec, field{"options", opts})
		}
		if typ == "text-input" {
			spec = append(spec, field{"max_length", 256})
		}
		form = append(form, obj{{typ, spec}})
	}
	off := obj{{"enabled", false}}
	fileUpload := obj{{"image", obj{
		{"enabled", false}, {"number_limits", 3}, {"detail", "high"},
		{"transfer_methods", []string{"remote_url", "local_file"}},
	}}}
	if fu := app.FileUpload; fu != nil {
		methods := fu.Methods
		if len(methods) == 0 {
			methods = []string{"local_file", "remote_url"}
		}
		imageMethods := fu.ImageMethods
		if len(imageMethods) == 0 {
			imageMethods = methods
		}
		limit := fu.Limit
		if limit == 0 {
			limit = 3
		}
		imageLimit := fu.ImageLimit
		if imageLimit == 0 {
			imageLimit = limit
		}
		types := fu.Types
		if types == nil {
			types = []string{"image", "document", "audio", "video"}
		}
		exts := fu.Extensions
		if exts == nil {
			exts = []string{}
		}
		fileUpload = obj{{"enabled", true}, {"allowed_file_types", types}, {"allowed_file_extensions", exts},
			{"allowed_file_upload_methods", methods}, {"number_limits", limit},
			{"image", obj{{"enabled", slices.Contains(types, "image")}, {"number_limits", imageLimit}, {"detail", "high"},
				{"transfer_methods", imageMethods}}},
			{"fileUploadConfig", obj{{"image_file_size_limit", 10}, {"file_size_limit", 15}, {"audio_file_size_limit", 50},
				{"video_file_size_limit", 100}, {"workflow_file_upload_limit", 10}}}}
	}
	writeJSON(w, http.StatusOK, pythonJSON.marshal(obj{
		{"opening_statement", ""},
		{"suggested_questions", []string{}},
		{"suggested_questions_after_answer", off},
		{"speech_to_text", obj{{"enabled", app.SpeechToText}}},
		{"text_to_speech", obj{{"enabled", false}, {"voice", ""}, {"language", ""}, {"autoPlay", "disabled"}}},
		{"retriever_resource", obj{{"enabled", true}}},
		{"annotation_reply", off},
		{"more_like_this", off},
		{"sensitive_word_avoidance", off},
		{"user_input_form", form},
		{"file_upload", fileUpload},
		{"system_parameters", obj{
			{"file_size_limit", 15}, {"image_file_size_limit", 10}, {"audio_file_size_limit", 50},
			{"video_file_size_limit", 100}, {"workflow_file_upload_limit", 10},
		}},
	}))
}

// ---- request bodies ----

const maxDifyBody = 10 << 20

// readJSONBody reads the JSON body as flask does, answering 415 for another
// content type and 400 for malformed JSON.
func readJSONBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/json") {
		difyError(w, http.StatusUnsupportedMediaType, "unsupported_media_type",
			"Did not attempt to load JSON data because the request Content-Type was not 'application/json'.")
		return false
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxDifyBody))
	if err != nil {
		difyError(w, http.StatusRequestEntityTooLarge, "request_entity_too_large", "The data value transmitted exceeds the capacity limit.")
		return false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			difyError(w, http.StatusBadRequest, "invalid_param", "1 validation error for ChatRequestPayload\n"+te.Field+"\n  Input should be a valid "+te.Value)
			return false
		}
		difyError(w, http.StatusBadRequest, "bad_request", msgBadJSON)
		return false
	}
	return true
}

// userArg turns the JSON user field into Dify's session id: strings as they
// are, other values through str().
func userArg(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		if x {
			return "True"
		}
		return "False"
	}
	return ""
}

// bodyUser reads the JSON body's required "user", answering Dify's error
// when it is missing.
func bodyUser(w http.ResponseWriter, r *http.Request) (string, bool) {
	var body userBody
	if !readJSONBody(w, r, &body) {
		return "", false
	}
	user := userArg(body.User)
	if user == "" {
		difyError(w, http.StatusBadRequest, "invalid_param", msgUserRequired)
		return "", false
	}
	return user, true
}

type userBody struct {
	User any `json:"user"`
}

func (d *Dify) serveStop(w http.ResponseWriter, r *http.Request, taskID string) {
	app, ok := d.auth(w, r)
	if !ok {
		return
	}
	user, ok := bodyUser(w, r)
	if !ok {
		return
	}
	d.mu.Lock()
	d.stops.push(taskID)
	// Like Dify, an unknown task or another user's task is silently ignored.
	if t := d.tasks[taskID]; t != nil && t.key == app.Key && t.user == user && !t.stopped {
		t.stopped = true
		close(t.stop)
	}
	d.changed.broadcast()
	d.mu.Unlock()
	writeJSON(w, http.StatusOK, pythonJSON.marshal(obj{{"result", "success"}}))
}

func (d *Dify) serveDeleteConversation(w http.ResponseWriter, r *http.Request, id string) {
	app, ok := d.auth(w, r)
	if !ok {
		return
	}
	if app.Mode == ModeCompletion || app.Mode == ModeWorkflow {
		difyError(w, http.StatusBadRequest, "not_chat_app", "Please check if your app mode matches the right API route.")
		return
	}
	user, ok := bodyUser(w, r)
	if !ok {
		return
	}
	d.mu.Lock()
	c := d.convs[id]
	if c == nil || c.key != app.Key || c.user != user {
		d.mu.Unlock()
		difyError(w, http.StatusNotFound, "not_found", msgConversationNotExists)
		return
	}
	delete(d.convs, id)
	if a := d.apps[app.Key]; a != nil {
		a.convs--
	}
	d.changed.broadcast()
	d.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// ---- chat-messages ----

type chatBody struct {
	Query            *string         `json:"query"`
	Inputs           json.RawMessage `json:"inputs"`
	User             any             `json:"user"`
	ResponseMode     *string         `json:"response_mode"`
	ConversationID   *string         `json:"conversation_id"`
	AutoGenerateName *bool           `json:"auto_generate_name"`
	Files            json.RawMessage `json:"files"`
}

// chatCall is one accepted chat-messages call on its way to an answer.
type chatCall struct {
	app        DifyApp
	fault      DifyFault
	query      string
	inputs     map[string]any
	user       string
	streaming  bool
	conv       *difyConv
	taskID     string
	msgID      string
	created    int64
	task       *difyTask
	latency    time.Duration
	enc        encoder
	workflowID string
	clock      func() time.Time
	began      time.Time // wall clock, for latency figures
	files      []DifyFileIn
	response   *DifyResponse // the app's answer, once computed
}

func (c *chatCall) elapsed() float64 { return time.Since(c.began).Seconds() }

func pydanticMissing(field string) string {
	return "1 validation error for ChatRequestPayload\n" + field + "\n  Field required [type=missing]"
}

func (d *Dify) serveChat(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	app, ok := d.auth(w, r)
	if !ok {
		return
	}
	var body chatBody
	if !readJSONBody(w, r, &body) {
		return
	}
	var inputs map[string]any
	inputsOK := len(body.Inputs) > 0 && json.Unmarshal(body.Inputs, &inputs) == nil && inputs != nil
	user := userArg(body.User)
	query, mode, convID := "", "", ""
	if body.Query != nil {
		query = *body.Query
	}
	if body.ResponseMode != nil {
		mode = *body.ResponseMode
	}
	if body.ConversationID != nil {
		convID = strings.TrimSpace(*body.ConversationID)
	}
	call := &chatCall{app: app, query: strings.ReplaceAll(query, "\x00", ""), inputs: inputs, user: user,
		streaming: mode == "streaming", taskID: newUUID(), msgID: newUUID()}
	if app.Mode == ModeAgent {
		// New Agent apps stream unless blocking is asked for by name
		// (controllers/service_api/app/completion.py#_resolve_agent_app_streaming).
		call.streaming = mode != "blocking"
	}

	// Record, register the task (so /stop works from the first byte on),
	// then wait for Hold and take the next fault.
	d.mu.Lock()
	now := d.now()
	d.requests.push(DifyRequest{
		Key: maskKey(app.Key), AppName: app.Name, Query: query, User: user, ConversationID: convID,
		ResponseMode: mode, Inputs: inputs, AutoGenerateName: body.AutoGenerateName, At: now,
		NewConversation: convID == "", TaskID: call.taskID,
	})
	call.task = &difyTask{key: app.Key, user: user, stop: make(chan struct{})}
	d.tasks[call.taskID] = call.task
	d.changed.broadcast()
	gate, done := d.gate, d.done
	if gate != nil {
		d.held++
	}
	d.mu.Unlock()
	defer d.endTask(call.taskID)

	if gate != nil {
		var leave bool
		select {
		case <-gate:
		case <-ctx.Done():
			leave = true
		case <-done:
			difyError(w, http.StatusServiceUnavailable, "service_unavailable", "Service Unavailable")
			leave = true
		}
		d.mu.Lock()
		d.held--
		d.changed.broadcast()
		d.mu.Unlock()
		if leave {
			return
		}
	}

	d.mu.Lock()
	if q := d.faults[app.Key]; len(q) > 0 {
		call.fault = q[0]
		if len(q) == 1 {
			delete(d.faults, app.Key)
		} else {
			d.faults[app.Key] = q[1:]
		}
	}
	if a := d.apps[app.Key]; a != nil {
		call.workflowID = a.workflowID
	}
	call.latency, call.enc, call.clock, call.began = d.latency, d.enc, d.now, time.Now()
	call.created = d.now().Unix()
	d.mu.Unlock()

	f := call.fault
	if f.Delay > 0 {
		// A /stop during the delay ends it; the answer then ends at once.
		sleep(ctx, f.Delay, done, call.task.stop)
		if ctx.Err() != nil || isDone(done) {
			return
		}
	}
	if f.Status > 0 || f.HTML || f.Quota {
		d.writeFault(w, f)
		return
	}

	if app.Mode == ModeCompletion || app.Mode == ModeWorkflow {
		difyError(w, http.StatusBadRequest, "not_chat_app", "Please check if your app mode matches the right API route.")
		return
	}
	if user == "" {
		difyError(w, http.StatusBadRequest, "invalid_param", msgUserRequired)
		return
	}
	switch {
	case body.Query == nil:
		difyError(w, http.StatusBadRequest, "invalid_param", pydanticMissing("query"))
		return
	case !inputsOK:
		difyError(w, http.StatusBadRequest, "invalid_param", pydanticMissing("inputs"))
		return
	case mode != "" && mode != "blocking" && mode != "streaming":
		difyError(w, http.StatusBadRequest, "invalid_param",
			"1 validation error for ChatRequestPayload\nresponse_mode\n  Input should be 'blocking' or 'streaming'")
		return
	case convID != "" && !isUUID(convID):
		difyError(w, http.StatusBadRequest, "invalid_param",
			"1 validation error for ChatRequestPayload\nconversation_id\n  Value error, conversation_id must be a valid UUID")
		return
	case app.Mode == ModeAgentChat && !call.streaming:
		difyError(w, http.StatusBadRequest, "invalid_param", "Agent Chat App does not support blocking mode")
		return
	case app.Mode == ModeAgent && !call.streaming:
		difyError(w, http.StatusBadRequest, "bad_request", "Agent App only supports streaming response mode.")
		return
	case call.query == "":
		difyError(w, http.StatusBadRequest, "invalid_param", "query is required")
		return
	}
	if msg := validateInputs(app.Inputs, inputs); msg != "" {
		difyError(w, http.StatusBadRequest, "invalid_param", msg)
		return
	}
	files, msg := d.resolveFiles(ctx, app, body.Files)
	if msg != "" {
		difyError(w, http.StatusBadRequest, "invalid_param", msg)
		return
	}
	call.files = files
	if len(files) > 0 {
		d.mu.Lock()
		for seq := d.requests.total; seq > 0 && seq+64 > d.requests.total; seq-- {
			if rec := d.requests.at(seq - 1); rec != nil && rec.TaskID == call.taskID {
				rec.Files = files
				break
			}
		}
		d.mu.Unlock()
	}

	d.mu.Lock()
	if convID != "" {
		c := d.convs[convID]
		if c == nil || c.key != app.Key || c.user != user {
			d.mu.Unlock()
			if app.Mode == ModeAdvancedChat && call.streaming {
				// A chatflow stream looks the conversation up in its worker, which
				// reports ConversationNotExistsError (an empty text) as a code-less
				// error event, from #36348 until the eager check of #38801.
				d.streamWorkerError(ctx, w, call, "")
				return
			}
			difyError(w, http.StatusNotFound, "not_found", msgConversationNotExists)
			return
		}
		call.conv = c
	} else {
		call.conv = &difyConv{id: newUUID(), key: app.Key, user: user}
		d.convs[call.conv.id] = call.conv
		if a := d.apps[app.Key]; a != nil {
			a.convs++
		}
		d.changed.broadcast()
	}
	d.mu.Unlock()

	if call.streaming {
		d.stream(ctx, w, call)
	} else {
		d.blocking(ctx, w, call)
	}
}

func (d *Dify) endTask(taskID string) {
	d.mu.Lock()
	delete(d.tasks, taskID)
	d.mu.Unlock()
}

// validateInputs applies BaseAppGenerator._validate_inputs and returns the
// ValueError text, or "".
func validateInputs(form []DifyInput, inputs map[string]any) string {
	for _, in := range form {
		v, ok := inputs[in.Variable]
		if !ok || v == nil {
			if in.Required {
				return in.Variable + " is required in input form"
			}
			continue
		}
		typ := in.Type
		if typ == "" {
			typ = "text-input"
		}
		switch typ {
		case "text-input", "paragraph", "select":
			s, isString := v.(string)
			if !isString {
				return "(type '" + typ + "') " + in.Variable + " in input form must be a string"
			}
			if typ == "select" && len(in.Options) > 0 && s != "" {
				found := false
				for _, o := range in.Options {
					found = found || o == s
				}
				if !found {
					return in.Variable + " in input form must be one of the following: " + pyList(in.Options)
				}
			}
		}
	}
	return ""
}

func pyList(ss []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range ss {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("'" + s + "'")
	}
	b.WriteByte(']')
	return b.String()
}

// answer computes the reply from the conversation's history so far.
func (d *Dify) answer(call *chatCall) string {
	if call.fault.Empty {
		return ""
	}
	d.mu.Lock()
	history := append([]Turn(nil), call.conv.turns...)
	d.mu.Unlock()
	if call.app.Respond != nil {
		r := call.app.Respond(DifyCall{History: history, Query: call.query, Inputs: call.inputs, Files: call.files})
		call.response = &r
		return r.Text
	}
	reply := call.app.Reply
	if reply == nil {
		reply = DefaultReply
	}
	text := reply(history, call.query, call.inputs)
	if len(call.files) > 0 {
		// The default brain says what it was given, so a test can see it.
		var got []string
		for _, f := range call.files {
			got = append(got, fmt.Sprintf("%s %q", f.Type, f.Name))
		}
		text += "\n\n(I received: " + strings.Join(got, ", ") + ")"
	}
	return text
}

// finish records the turn so later calls of the conversation see it.
func (d *Dify) finish(call *chatCall, answer string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.messages == nil {
		d.messages = map[string]msgOwner{}
	}
	d.messages[call.msgID] = msgOwner{key: call.app.Key, user: call.user}
	c := call.conv
	if len(c.turns) >= maxTurns {
		c.turns = append(c.turns[:1], c.turns[2:]...)
	}
	c.turns = append(c.turns, Turn{Query: call.query, Answer: answer})
	d.changed.broadcast()
}
