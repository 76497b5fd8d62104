package dify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"unicode/utf8"
)

// ErrIdle means the stream stayed silent (not even a ping) for longer than the idle timeout.
// Dify chatflow streams hang after a single ping when the worker rejects the request, so
// silence is the only signal of that failure.
var ErrIdle = errors.New("dify stream idle timeout")

// ErrTruncated means the stream ended before a terminal event. Errors wrapping it also say how
// much was received and, for a broken connection, the read error.
var ErrTruncated = errors.New("dify stream ended before message_end")

// ErrLineTooLong means one SSE line, or the data of one event, exceeded the reader's limit.
var ErrLineTooLong = errors.New("sse line too long")

// snippetMax bounds the part of a non-JSON error body kept as the message: enough to recognise
// an nginx or Cloudflare page without copying a whole HTML document into logs and journals.
const snippetMax = 200

// APIError is an error reported by Dify: a non-2xx response carrying the error envelope
// {"code","message","status"}, a non-JSON error page from a proxy in front of Dify (Code ""),
// or an error event inside a stream (InStream).
type APIError struct {
	Status   int    // HTTP status, or the "status" field of an in-stream error event
	Code     string // Dify's snake_case code; "" when the body was not Dify's JSON envelope
	Message  string
	InStream bool // the error arrived as an "error" event after HTTP 200
}

// Error returns e.g. "dify 404 not_found: Conversation Not Exists.".
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("dify ")
	if e.FailedBeforeFirstNode() {
		// The bare "dify stream error 500" would read like an outage; say what it is.
		b.WriteString("chatflow failed before its first node (no error code)")
		if e.Message != "" {
			b.WriteString(": ")
			b.WriteString(e.Message)
		}
		return b.String()
	}
	if e.InStream {
		b.WriteString("stream error ")
	}
	fmt.Fprintf(&b, "%d", e.Status)
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// ConversationNotExists reports whether Dify no longer knows the conversation (deleted, or owned
// by another user), in which case the caller should start a new one. Only the prefix of the
// message is compared because flask-restx appends route suggestions to 404 messages.
func (e *APIError) ConversationNotExists() bool {
	return e.Status == http.StatusNotFound && e.Code == "not_found" &&
		strings.HasPrefix(e.Message, "Conversation Not Exists")
}

// FailedBeforeFirstNode reports the error event a chatflow's worker publishes when the run fails
// before its first node: {"event":"error","message":"","status":500}, with no code
// (api/tasks/app_generate/workflow_execute_task.py#_publish_error_event, Dify 1.14). The message
// is the exception text, often empty. Causes are in the request itself: missing required
// inputs, an empty query, and, until Dify stopped checking the conversation in the worker, a
// conversation_id Dify no longer knows. Sending the same request again cannot help.
func (e *APIError) FailedBeforeFirstNode() bool {
	return e.InStream && e.Code == "" && e.Status == http.StatusInternalServerError
}

// QuotaExceeded reports a 429 rate_limit_error: a billing quota of the Dify workspace (Dify
// Cloud's workflow execution quota, or a sandbox plan's requests per day;
// services/app_generate_service.py, controllers/web/error.py#InvokeRateLimitError). It lasts
// until the quota resets or the plan changes, so retrying within minutes only spends time; Dify's
// own error guide says not to retry it.
func (e *APIError) QuotaExceeded() bool {
	return e.Code == "rate_limit_error"
}

// ConcurrencyCapped reports that the app is at its cap of requests in progress at once
// (APP_MAX_ACTIVE_REQUESTS, or the app's own max_active_requests): Dify refuses the call at
// once, before any work, while that many of the app's calls run
// (core/app/features/rate_limiting/rate_limit.py, RateLimit.enter). Dify 1.13 answers it as a
// 400 invalid_param whose message begins "Too many requests"; a release whose exception
// handlers are ordered as intended answers 429 too_many_requests. A billing quota
// (rate_limit_error) is not a cap on calls in progress and is not reported here.
func (e *APIError) ConcurrencyCapped() bool {
	if e.InStream || e.QuotaExceeded() {
		return false
	}
	return e.Code == "too_many_requests" ||
		e.Status == http.StatusBadRequest && e.Code == "invalid_param" && strings.HasPrefix(e.Message, "Too many requests")
}

// WorkflowError is a chatflow run that finished with a status other than succeeded or
// partial-succeeded. Dify 1.13 does not relay the error event that follows it, so this is often
// the only failure report.
type WorkflowError struct {
	Status  string // e.g. "failed", "stopped"
	Message string // data.error of workflow_finished
}

func (e *WorkflowError) Error() string {
	if e.Status == "" {
		return strings.TrimSuffix("dify workflow finished without a status: "+e.Message, ": ")
	}
	if e.Message == "" {
		return fmt.Sprintf("dify workflow %s", e.Status)
	}
	return fmt.Sprintf("dify workflow %s: %s", e.Status, e.Message)
}

// Retryable reports whether a failed exchange is worth another try. It says nothing about
// whether the caller still has time: a retry loop must check its own context, because
// context.DeadlineExceeded from a per-attempt timeout looks the same as one from the overall
// deadline and is therefore treated as retryable.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var we *WorkflowError
	if errors.As(err, &we) {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.retryable()
	}
	if errors.Is(err, ErrIdle) || errors.Is(err, ErrTruncated) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if errors.Is(err, ErrLineTooLong) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return true
	}
	// The transport reports a server that hung up on a reused connection as a bare EOF.
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE)
}

func (e *APIError) retryable() bool {
	switch {
	case e.QuotaExceeded(), e.FailedBeforeFirstNode():
		return false
	case e.InStream:
		return e.Status >= 500
	case e.Status == http.StatusTooManyRequests, e.Status >= 500:
		return true
	case e.Code == "too_many_requests":
		return true
	case e.Status == http.StatusBadRequest && e.Code == "invalid_param" &&
		strings.HasPrefix(e.Message, "Too many requests"):
		// Dify 1.13 reports its per-app concurrency cap as a 400 (its 429 handler is shadowed).
		return true
	}
	return false
}

// errorEnvelope is Dify's error body. Status is not used: the HTTP status is what the wire says.
type errorEnvelope struct {
	Code    flexString `json:"code"`
	Message flexString `json:"message"`
}

// parseErrorBody turns a non-2xx body into an *APIError. Bodies that are not Dify's envelope
// (nginx 502 pages, Cloudflare 429 pages) keep a short snippet so the status still drives
// Retryable and a human can see what answered.
func parseErrorBody(status int, body []byte) *APIError {
	e := &APIError{Status: status}
	var env errorEnvelope
	if json.Unmarshal(body, &env) == nil && (env.Code != "" || env.Message != "") {
		e.Code = string(env.Code)
		e.Message = string(env.Message)
		return e
	}
	e.Message = snippet(body)
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

// snippet returns the start of body with whitespace runs collapsed, cut at a rune boundary.
func snippet(body []byte) string {
	if t := htmlTitle(body); len(t) > 0 {
		body = t
	}
	var b strings.Builder
	space := false
	for _, f := range bytes.Fields(body) {
		if space {
			if b.Len()+1 > snippetMax {
				break
			}
			b.WriteByte(' ')
		}
		space = true
		for len(f) > 0 {
			r, n := utf8.DecodeRune(f)
			if r == utf8.RuneError && n <= 1 {
				r, n = '\uFFFD', 1
			}
			if b.Len()+utf8.RuneLen(r) > snippetMax {
				return strings.TrimSpace(b.String())
			}
			b.WriteRune(r)
			f = f[n:]
		}
	}
	return strings.TrimSpace(b.String())
}

// htmlTitle extracts <title> from an HTML error page: "502 Bad Gateway" says more in 200 bytes
// than the page's doctype and style sheet.
func htmlTitle(body []byte) []byte {
	lower := bytes.ToLower(body)
	i := bytes.Index(lower, []byte("<title>"))
	if i < 0 {
		return nil
	}
	rest := body[i+len("<title>"):]
	j := bytes.Index(bytes.ToLower(rest), []byte("</title>"))
	if j < 0 {
		return nil
	}
	return bytes.TrimSpace(rest[:j])
}
