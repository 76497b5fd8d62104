// Package dify is a client for the Dify service API ("backend API for apps"): it sends chat
// messages to a Dify app, assembles the streamed answer, and reads the app's settings.
package dify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/bridge-dev/bridge/pkg/redact"
)

const (
	// DefaultIdleTimeout bounds silence on a stream. Dify pings every 10 s while a run is alive,
	// so several missed pings mean the run is gone (a chatflow worker that rejected the request
	// otherwise keeps the stream open for 300 s).
	DefaultIdleTimeout = 45 * time.Second
	// DefaultUserAgent is sent when Options.UserAgent is empty.
	DefaultUserAgent = "bridge"

	// maxErrorBody bounds how much of an error response is read; the envelope is small and
	// anything larger is a proxy page of which only a snippet is kept.
	maxErrorBody = 64 << 10
	// maxJSONBody bounds non-streaming responses (app info, parameters, blocking answers).
	maxJSONBody = 16 << 20
)

// Options configures a Client.
type Options struct {
	BaseURL     string        // e.g. "https://api.dify.ai/v1", including /v1
	Key         string        // app key, sent only as "Authorization: Bearer <key>"
	HTTPClient  *http.Client  // nil: a client with connect and header timeouts but no overall one
	IdleTimeout time.Duration // silence allowed on a stream; 0: DefaultIdleTimeout, < 0: none
	MaxLine     int           // SSE line limit; 0: DefaultMaxLine
	UserAgent   string        // "": DefaultUserAgent
}

// String describes the options without the key, so they can be logged.
func (o Options) String() string {
	return fmt.Sprintf("{BaseURL:%s Key:%s IdleTimeout:%s MaxLine:%d UserAgent:%q}",
		o.BaseURL, maskKey(o.Key), o.IdleTimeout, o.MaxLine, o.UserAgent)
}

// GoString keeps the key out of %#v as well.
func (o Options) GoString() string { return "dify.Options" + o.String() }

func maskKey(k string) string {
	if len(k) < 12 {
		return "****"
	}
	return "****" + k[len(k)-4:]
}

// Client talks to one Dify app. It is safe for concurrent use.
type Client struct {
	base      string
	key       string
	hc        *http.Client
	idle      time.Duration
	maxLine   int
	userAgent string
}

// NewClient returns a client for the app whose key is opts.Key.
func NewClient(opts Options) *Client {
	c := &Client{
		base:      strings.TrimRight(opts.BaseURL, "/"),
		key:       opts.Key,
		hc:        opts.HTTPClient,
		idle:      opts.IdleTimeout,
		maxLine:   opts.MaxLine,
		userAgent: opts.UserAgent,
	}
	if c.hc == nil {
		c.hc = newHTTPClient()
	}
	switch {
	case c.idle == 0:
		c.idle = DefaultIdleTimeout
	case c.idle < 0:
		c.idle = 0
	}
	if c.maxLine <= 0 {
		c.maxLine = DefaultMaxLine
	}
	if c.userAgent == "" {
		c.userAgent = DefaultUserAgent
	}
	return c
}

// newHTTPClient bounds each phase up to the response headers but sets no overall Timeout,
// which would cut a long stream; streams are bounded by the idle timeout and the caller's ctx.
func newHTTPClient() *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		// Dify validates the request, including a HEAD of every remote file, before it sends
		// headers; 100 s is also where Dify Cloud's Cloudflare gives up.
		ResponseHeaderTimeout: 100 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		// No cap on connections: bridge's workers (and a route's
		// max_in_flight) bound the calls in flight, each of which holds its
		// connection for the whole answer. Enough of them stay open between
		// bursts that the next burst does not dial (and, over TLS, shake
		// hands) again for most of its calls.
		MaxConnsPerHost:     0,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
	}}
}

// String describes the client without its key.
func (c *Client) String() string { return "dify.Client(" + c.base + ")" }

// File is a file attached to a chat message (api/factories/file_factory.py build_from_mapping):
// a remote_url file by URL, which Dify fetches itself, or a local_file by the id POST
// /files/upload returned.
type File struct {
	Type           string `json:"type"`            // image, document, audio, video, custom
	TransferMethod string `json:"transfer_method"` // remote_url or local_file
	URL            string `json:"url,omitempty"`
	UploadFileID   string `json:"upload_file_id,omitempty"`
}

// ChatRequest is one user turn.
type ChatRequest struct {
	Query          string
	Inputs         map[string]any // app variables; Dify validates them on every turn, so resend them
	User           string         // stable per end user: Dify scopes conversations to it
	ConversationID string         // "" starts a new conversation
	Files          []File
	// AppMode is the app's mode from GET /info, if known; ModeAgent makes sure a New Agent app's
	// narration never reaches the answer (see ReadStreamWith).
	AppMode string
}

type chatBody struct {
	Query            string         `json:"query"`
	Inputs           map[string]any `json:"inputs"`
	User             string         `json:"user"`
	ResponseMode     string         `json:"response_mode"`
	ConversationID   string         `json:"conversation_id"`
	AutoGenerateName bool           `json:"auto_generate_name"`
	Files            []File         `json:"files,omitempty"`
}

// Chat POSTs /chat-messages with response_mode "streaming" (agent apps accept nothing else)
// and auto_generate_name false (naming costs an extra LLM call), and assembles the answer with
// ReadStreamWith. onStart may be nil; it runs on the calling goroutine. A 200 response with a
// JSON body, which some proxies produce, is read as a blocking answer. On a stream error the
// returned Answer, when not nil, holds the partial answer for diagnostics.
func (c *Client) Chat(ctx context.Context, req ChatRequest, onStart func(taskID, conversationID string)) (*Answer, error) {
	if req.User == "" {
		return nil, errors.New("dify chat: user is required")
	}
	body := chatBody{
		Query:          req.Query,
		Inputs:         req.Inputs,
		User:           req.User,
		ResponseMode:   "streaming",
		ConversationID: req.ConversationID,
		Files:          req.Files,
	}
	if body.Inputs == nil {
		body.Inputs = map[string]any{}
	}
	resp, err := c.do(ctx, http.MethodPost, "/chat-messages", body, true)
	if err != nil {
		return nil, fmt.Errorf("dify chat: %w", err)
	}
	defer resp.Body.Close()

	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch mt {
	case "application/json":
		a, err := readBlocking(resp.Body, onStart)
		if err != nil {
			return nil, fmt.Errorf("dify chat: %w", c.maskErr(err))
		}
		return a, nil
	case "text/html":
		// A login page or a web UI answered instead of the API; retrying will not change that.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody)) // the snippet is best effort
		return nil, fmt.Errorf("dify chat: html instead of an event stream: %w", parseErrorBody(resp.StatusCode, c.mask(b)))
	}
	a, err := ReadStreamWith(ctx, resp.Body, StreamOptions{Idle: c.idle, OnStart: onStart, MaxLine: c.maxLine, AppMode: req.AppMode})
	if err != nil {
		return a, fmt.Errorf("dify chat: %w", c.maskErr(err))
	}
	return a, nil
}

// blockingAnswer is the body of a blocking chat response.
type blockingAnswer struct {
	Event          flexString      `json:"event"`
	TaskID         flexString      `json:"task_id"`
	ID             flexString      `json:"id"`
	MessageID      flexString      `json:"message_id"`
	ConversationID flexString      `json:"conversation_id"`
	Answer         *flexString     `json:"answer"`
	Metadata       json.RawMessage `json:"metadata"`
	Data           json.RawMessage `json:"data"`
	Code           flexString      `json:"code"`
	Message        flexString      `json:"message"`
	Status         flexInt         `json:"status"`
}

func readBlocking(r io.Reader, onStart func(taskID, conversationID string)) (*Answer, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxJSONBody))
	if err != nil {
		return nil, fmt.Errorf("read blocking answer: %w", err)
	}
	var v blockingAnswer
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("decode blocking answer: %w", err)
	}
	if v.Event == "error" || (v.Answer == nil && v.Code != "") {
		return nil, &APIError{Status: int(v.Status), Code: string(v.Code), Message: string(v.Message), InStream: true}
	}
	// A chatflow that stops at a Human Input node answers a blocking call with the pause itself:
	// event workflow_paused, answer "" and data.status "paused" (template_advanced_chat.en.mdx,
	// "Paused Response Example"). That is a request for a human, not an empty answer.
	var wd workflowData
	_ = json.Unmarshal(v.Data, &wd) // data is optional; an odd one only loses the pause reason
	paused := v.Event == "workflow_paused" || wd.Status == "paused"
	if v.Answer == nil && !paused {
		return nil, fmt.Errorf("decode blocking answer: no answer field in %q", snippet(b))
	}
	st := assembler{now: time.Now}
	st.a.Events = 1
	st.a.TaskID = string(v.TaskID)
	st.a.ConversationID = string(v.ConversationID)
	st.a.MessageID = string(v.MessageID)
	if st.a.MessageID == "" {
		st.a.MessageID = string(v.ID)
	}
	if paused {
		st.pause(wd.reason("workflow_paused"))
	} else {
		st.msgSeen = true
		st.msg.WriteString(string(*v.Answer))
	}
	st.takeUsage(v.Metadata)
	if onStart != nil && st.a.TaskID != "" {
		onStart(st.a.TaskID, st.a.ConversationID)
	}
	return st.answer(), nil
}

// Stop asks Dify to stop a streaming task. Dify answers success even for unknown tasks or
// another user's; the stream then ends with message_end (or workflow_finished(stopped)).
func (c *Client) Stop(ctx context.Context, taskID, user string) error {
	if taskID == "" {
		return errors.New("dify stop: task id is required")
	}
	resp, err := c.do(ctx, http.MethodPost, "/chat-messages/"+url.PathEscape(taskID)+"/stop",
		map[string]string{"user": user}, true)
	if err != nil {
		return fmt.Errorf("dify stop task %s: %w", taskID, err)
	}
	drain(resp)
	return nil
}

// AppInfo is GET /info.
type AppInfo struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Mode        string   `json:"mode"` // chat, advanced-chat, agent-chat, agent, completion, workflow
	AuthorName  string   `json:"author_name"`
	Tags        []string `json:"tags"`
}

// Info returns the app's name and mode; it also proves the key is valid.
func (c *Client) Info(ctx context.Context) (*AppInfo, error) {
	var info AppInfo
	if err := c.getJSON(ctx, "/info", true, &info); err != nil {
		return nil, fmt.Errorf("dify app info: %w", err)
	}
	return &info, nil
}

// ModeAgent is the mode GET /info reports for a New Agent app (Dify 1.14). Its answers come
// only as streams, and its agent_message events are the agent's narration, not the answer.
// Legacy Agent apps report "agent-chat".
const ModeAgent = "agent"

// HasChatEndpoint reports whether apps of this mode are served by /chat-messages.
func HasChatEndpoint(mode string) bool {
	switch mode {
	case "chat", "advanced-chat", "agent-chat", ModeAgent:
		return true
	}
	return false
}

// InputField is one variable of the app's input form.
type InputField struct {
	Type      string // text-input, paragraph, select, number, file, ... as keyed in user_input_form
	Variable  string
	Label     string
	Required  bool
	Options   []string
	MaxLength int
	Default   string // strings as is; other JSON values as their JSON text
}

// Parameters is the part of GET /parameters the bridge uses.
type Parameters struct {
	OpeningStatement string
	Inputs           []InputField
	FileUploadImage  bool // the app accepts images
	// FileUpload is the app's file upload feature; SpeechToText whether its
	// POST /audio-to-text works.
	FileUpload   FileUpload
	SpeechToText bool
	// Limits are Dify's upload size limits (system_parameters, in MB).
	Limits SizeLimits
}

// FileUpload is the file_upload feature of an app as /parameters shows it (the app's
// features_dict; api/core/file/models.py FileUploadConfig reads the same keys). The legacy
// "image" block alone (Chatbot apps of older versions) turns images on.
type FileUpload struct {
	Enabled    bool
	Types      []string // allowed_file_types: image, document, audio, video, custom
	Extensions []string // allowed_file_extensions, for custom files (".zip")
	Methods    []string // allowed_file_upload_methods; empty means both
	Limit      int      // number_limits; 0 means none
	// Image* is the legacy image block: its transfer_methods restrict images, and
	// number_limits caps them.
	ImageEnabled bool
	ImageLimit   int
	ImageMethods []string
}

// Accepts reports whether the app takes a file of this Dify type (and extension, with or
// without its dot, for custom files), by this transfer method, as
// file_factory._is_file_valid_with_config decides.
func (f *FileUpload) Accepts(typ, ext, method string) bool {
	if typ == FileImage && f.ImageEnabled && !f.Enabled {
		return len(f.ImageMethods) == 0 || slices.Contains(f.ImageMethods, method)
	}
	if !f.Enabled {
		return false
	}
	if len(f.Methods) > 0 && !slices.Contains(f.Methods, method) {
		return false
	}
	if typ == FileImage && f.ImageEnabled && len(f.ImageMethods) > 0 && !slices.Contains(f.ImageMethods, method) {
		return false
	}
	if typ == FileCustom {
		if !slices.Contains(f.Types, FileCustom) {
			return false
		}
		e := "." + strings.ToLower(strings.TrimPrefix(ext, "."))
		return slices.ContainsFunc(f.Extensions, func(x string) bool { return strings.EqualFold(x, e) })
	}
	return len(f.Types) == 0 || slices.Contains(f.Types, typ)
}

// AcceptedTypes lists the file types the app takes, for people ("image, document").
func (f *FileUpload) AcceptedTypes() []string {
	var out []string
	for _, t := range []string{FileImage, FileDocument, FileAudio, FileVideo} {
		if f.Accepts(t, "", TransferLocalFile) || f.Accepts(t, "", TransferRemoteURL) {
			out = append(out, t)
		}
	}
	if f.Enabled && slices.Contains(f.Types, FileCustom) && len(f.Extensions) > 0 {
		out = append(out, "custom ("+strings.Join(f.Extensions, " ")+")")
	}
	return out
}

// SizeLimits are Dify's upload limits in MB (UPLOAD_*_FILE_SIZE_LIMIT); 0 means unknown.
type SizeLimits struct {
	ImageMB, FileMB, AudioMB, VideoMB int
}

// For returns the limit in bytes for a Dify file type (0 when unknown).
func (l SizeLimits) For(typ string) int64 {
	mb := l.FileMB
	switch typ {
	case FileImage:
		mb = l.ImageMB
	case FileAudio:
		mb = l.AudioMB
	case FileVideo:
		mb = l.VideoMB
	}
	return int64(mb) << 20
}

// RequiredInputs returns the input fields Dify will refuse to run without.
func (p *Parameters) RequiredInputs() []InputField {
	var out []InputField
	for _, f := range p.Inputs {
		if f.Required {
			out = append(out, f)
		}
	}
	return out
}

type parametersJSON struct {
	OpeningStatement flexString                   `json:"opening_statement"`
	UserInputForm    []map[string]json.RawMessage `json:"user_input_form"`
	FileUpload       struct {
		Enabled           bool     `json:"enabled"`
		AllowedFileTypes  []string `json:"allowed_file_types"`
		AllowedExtensions []string `json:"allowed_file_extensions"`
		AllowedMethods    []string `json:"allowed_file_upload_methods"`
		NumberLimits      flexInt  `json:"number_limits"`
		Image             struct {
			Enabled         bool     `json:"enabled"`
			NumberLimits    flexInt  `json:"number_limits"`
			TransferMethods []string `json:"transfer_methods"`
		} `json:"image"`
	} `json:"file_upload"`
	SpeechToText struct {
		Enabled bool `json:"enabled"`
	} `json:"speech_to_text"`
	System struct {
		Image flexInt `json:"image_file_size_limit"`
		File  flexInt `json:"file_size_limit"`
		Audio flexInt `json:"audio_file_size_limit"`
		Video flexInt `json:"video_file_size_limit"`
	} `json:"system_parameters"`
}

type inputFieldJSON struct {
	Variable  flexString      `json:"variable"`
	Label     flexString      `json:"label"`
	Required  bool            `json:"required"`
	Options   json.RawMessage `json:"options"`
	MaxLength flexInt         `json:"max_length"`
	Default   json.RawMessage `json:"default"`
}

// Parameters returns the app's input form and features. Unknown input types are kept with their
// key as Type, so a required field of a type this package does not know still shows up.
func (c *Client) Parameters(ctx context.Context) (*Parameters, error) {
	var raw parametersJSON
	if err := c.getJSON(ctx, "/parameters", true, &raw); err != nil {
		return nil, fmt.Errorf("dify app parameters: %w", err)
	}
	p := &Parameters{OpeningStatement: string(raw.OpeningStatement)}
	for _, item := range raw.UserInputForm {
		// Each item has one key, the type; sorting keeps odd multi-key items deterministic.
		for _, typ := range slices.Sorted(maps.Keys(item)) {
			v := item[typ]
			var f inputFieldJSON
			if err := json.Unmarshal(v, &f); err != nil {
				return nil, fmt.Errorf("dify app parameters: input %q: %w", typ, err)
			}
			p.Inputs = append(p.Inputs, InputField{
				Type:      typ,
				Variable:  string(f.Variable),
				Label:     string(f.Label),
				Required:  f.Required,
				Options:   stringList(f.Options),
				MaxLength: int(f.MaxLength),
				Default:   jsonText(f.Default),
			})
		}
	}
	fu := raw.FileUpload
	p.FileUpload = FileUpload{Enabled: fu.Enabled, Types: fu.AllowedFileTypes, Extensions: fu.AllowedExtensions,
		Methods: fu.AllowedMethods, Limit: int(fu.NumberLimits), ImageEnabled: fu.Image.Enabled,
		ImageLimit: int(fu.Image.NumberLimits), ImageMethods: fu.Image.TransferMethods}
	p.FileUploadImage = p.FileUpload.Accepts(FileImage, "", TransferRemoteURL) || p.FileUpload.Accepts(FileImage, "", TransferLocalFile)
	p.SpeechToText = raw.SpeechToText.Enabled
	sys := raw.System
	p.Limits = SizeLimits{ImageMB: int(sys.Image), FileMB: int(sys.File), AudioMB: int(sys.Audio), VideoMB: int(sys.Video)}
	return p, nil
}

// stringList reads select options, which are strings; other values keep their JSON text.
func stringList(raw json.RawMessage) []string {
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, jsonText(it))
	}
	return out
}

func jsonText(raw json.RawMessage) string {
	var s flexString
	if json.Unmarshal(raw, &s) != nil {
		return string(bytes.TrimSpace(raw))
	}
	return string(s)
}

// Ping reads GET / (no key needed) and returns Dify's server_version. It tells whether BaseURL
// points at a Dify service API at all, before any key is involved.
func (c *Client) Ping(ctx context.Context) (string, error) {
	var v struct {
		Welcome       string `json:"welcome"`
		APIVersion    string `json:"api_version"`
		ServerVersion string `json:"server_version"`
	}
	if err := c.getJSON(ctx, "/", false, &v); err != nil {
		return "", fmt.Errorf("dify ping: %w", err)
	}
	if v.ServerVersion == "" && v.Welcome == "" {
		return "", errors.New("dify ping: the answer is not a dify service api index")
	}
	return v.ServerVersion, nil
}

func (c *Client) getJSON(ctx context.Context, path string, auth bool, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil, auth)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJSONBody))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// do sends one request and turns a non-2xx answer into an *APIError; the caller closes the body
// of a 2xx answer.
func (c *Client) do(ctx context.Context, method, path string, body any, auth bool) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if auth {
		if strings.ContainsFunc(c.key, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
			return nil, errors.New("api key contains spaces or control characters")
		}
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if body != nil {
		// Dify reads "user" with request.get_json(), which answers 415 to any other type.
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "text/event-stream, application/json")
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody)) // a cut body still has a status
		return nil, parseErrorBody(resp.StatusCode, c.mask(b))
	}
	return resp, nil
}

// mask hides the client's key, and anything shaped like a credential, in an
// error body before it becomes an error's text: a 401 may quote the
// Authorization header it got, and error texts end up in logs, the journal
// and private notes.
func (c *Client) mask(body []byte) []byte {
	s := string(body)
	if m := redact.Known(s, c.key); m != s {
		return []byte(m)
	}
	return body
}

// maskErr masks the messages of errors reported inside a stream.
func (c *Client) maskErr(err error) error {
	var ae *APIError
	if errors.As(err, &ae) {
		ae.Message = redact.Known(ae.Message, c.key)
	}
	var we *WorkflowError
	if errors.As(err, &we) {
		we.Message = redact.Known(we.Message, c.key)
	}
	return err
}

// url joins the base URL, which already ends in /v1, and an endpoint path with one slash.
func (c *Client) url(path string) string {
	return c.base + "/" + strings.TrimLeft(path, "/")
}

// drain reads a little of a body we do not need so the connection can be reused, then closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody)) // reuse is an optimisation only
	_ = resp.Body.Close()                                               // nothing was expected from it
}
