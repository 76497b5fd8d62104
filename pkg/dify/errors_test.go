package dify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestErrorCorpus(t *testing.T) {
	tests := []struct {
		file      string
		status    int
		code      string
		retryable bool
		notExists bool
	}{
		{"error_400_agent_streaming_only.json", 400, "bad_request", false, false},
		{"error_400_app_unavailable.json", 400, "app_unavailable", false, false},
		{"error_400_completion_request_error.json", 400, "completion_request_error", false, false},
		{"error_400_invalid_param_user.json", 400, "invalid_param", false, false},
		{"error_400_provider_not_initialize.json", 400, "provider_not_initialize", false, false},
		{"error_404_conversation_not_exists.json", 404, "not_found", false, true},
		{"error_429_too_many_requests.json", 429, "too_many_requests", true, false},
		{"error_500_internal_server_error.json", 500, "internal_server_error", true, false},
	}
	paths, err := filepath.Glob(filepath.Join(corpusDir, "error_*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != len(tests) {
		t.Errorf("corpus has %d error files, table has %d", len(paths), len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join(corpusDir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			e := parseErrorBody(tc.status, body)
			if e.Status != tc.status || e.Code != tc.code || e.Message == "" || e.InStream {
				t.Errorf("APIError = %+v", e)
			}
			if got := Retryable(e); got != tc.retryable {
				t.Errorf("Retryable = %v, want %v", got, tc.retryable)
			}
			if got := e.ConversationNotExists(); got != tc.notExists {
				t.Errorf("ConversationNotExists = %v, want %v", got, tc.notExists)
			}
			if got := Retryable(fmt.Errorf("dify chat: %w", e)); got != tc.retryable {
				t.Errorf("wrapped: Retryable = %v, want %v", got, tc.retryable)
			}
		})
	}
}

func TestAPIError(t *testing.T) {
	const restx = `{"code": "not_found", "message": "Conversation Not Exists. You have requested this URI [/v1/chat-messages] but did you mean /v1/chat-messages or /api/chat-messages or /v1/chat-messages/<string:task_id>/stop ?", "status": 404}`
	tests := []struct {
		name      string
		status    int
		body      string
		code      string
		message   string
		retryable bool
		notExists bool
	}{
		{name: "NotExistsRestxSuffix", status: 404, body: restx, code: "not_found",
			message: "Conversation Not Exists. You have requested", notExists: true},
		{name: "NotExistsPlain", status: 404, body: `{"code":"not_found","message":"Conversation Not Exists.","status":404}`,
			code: "not_found", message: "Conversation Not Exists.", notExists: true},
		{name: "MessageNotExists", status: 404, body: `{"code": "not_found", "message": "Message Not Exists.", "status": 404}`,
			code: "not_found", message: "Message Not Exists."},
		{name: "NotFoundOtherCode", status: 404, body: `{"code": "conversation_not_exists", "message": "Conversation Not Exists.", "status": 404}`,
			code: "conversation_not_exists", message: "Conversation Not Exists."},
		{name: "ConcurrencyCapAs400", status: 400,
			body: `{"code": "invalid_param", "message": "Too many requests. Please try again later. The current maximum concurrent requests allowed for 5f3c is 2.", "status": 400}`,
			code: "invalid_param", message: "Too many requests.", retryable: true},
		{name: "OtherInvalidParam", status: 400, body: `{"code": "invalid_param", "message": "ticket_id is required in input form", "status": 400}`,
			code: "invalid_param", message: "ticket_id is required"},
		{name: "RateLimit", status: 429, body: `{"code": "rate_limit_error", "message": "Workflow execution quota limit reached for tenant x", "status": 429}`,
			code: "rate_limit_error", message: "Workflow execution quota"},
		{name: "RateLimitDaily", status: 429, body: `{"code": "rate_limit_error", "message": "Rate limit exceeded, please upgrade your plan or your RPD was 5000 requests/day", "status": 429}`,
			code: "rate_limit_error", message: "Rate limit exceeded"},
		{name: "TooManyRequests429", status: 429, body: `{"code": "too_many_requests", "message": "Too many requests. Please try again later.", "status": 429}`,
			code: "too_many_requests", message: "Too many requests.", retryable: true},
		{name: "Unauthorized", status: 401, body: `{"code": "unauthorized", "message": "Access token is invalid", "status": 401}`,
			code: "unauthorized", message: "Access token is invalid"},
		{name: "Forbidden", status: 403, body: `{"code": "forbidden", "message": "The app's API service has been disabled.", "status": 403}`,
			code: "forbidden", message: "The app's API service"},
		{name: "Nginx502", status: 502,
			body:    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
			message: "502 Bad Gateway", retryable: true},
		{name: "Cloudflare429", status: 429,
			body:    "<!DOCTYPE html><html><head><title>Access denied | api.dify.ai used Cloudflare to restrict access</title></head><body>" + strings.Repeat("<p>Error 1015 You are being rate limited</p>", 50) + "</body></html>",
			message: "Access denied | api.dify.ai", retryable: true},
		{name: "PlainTextLong", status: 503, body: strings.Repeat("upstream connect error or disconnect/reset before headers. ", 20),
			message: "upstream connect error", retryable: true},
		{name: "EmptyBody", status: 504, body: "", message: "Gateway Timeout", retryable: true},
		{name: "JSONWithoutEnvelope", status: 400, body: `{"detail":"nope"}`, message: `{"detail":"nope"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := parseErrorBody(tc.status, []byte(tc.body))
			if e.Status != tc.status || e.Code != tc.code || !strings.HasPrefix(e.Message, tc.message) {
				t.Errorf("APIError = %+v, want status %d code %q message %q…", e, tc.status, tc.code, tc.message)
			}
			if len(e.Message) > snippetMax && tc.code == "" {
				t.Errorf("snippet is %d bytes, want <= %d", len(e.Message), snippetMax)
			}
			if got := Retryable(e); got != tc.retryable {
				t.Errorf("Retryable = %v, want %v", got, tc.retryable)
			}
			if got := e.ConversationNotExists(); got != tc.notExists {
				t.Errorf("ConversationNotExists = %v, want %v", got, tc.notExists)
			}
		})
	}
}

func TestAPIErrorString(t *testing.T) {
	tests := []struct {
		err  *APIError
		want string
	}{
		{&APIError{Status: 404, Code: "not_found", Message: "Conversation Not Exists."}, "dify 404 not_found: Conversation Not Exists."},
		{&APIError{Status: 502, Message: "502 Bad Gateway"}, "dify 502: 502 Bad Gateway"},
		{&APIError{Status: 500, Code: "internal_server_error", Message: "x", InStream: true}, "dify stream error 500 internal_server_error: x"},
	}
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	we := &WorkflowError{Status: "failed", Message: "node llm: boom"}
	if got := we.Error(); got != "dify workflow failed: node llm: boom" {
		t.Errorf("WorkflowError = %q", got)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"Nil", nil, false},
		{"Idle", fmt.Errorf("%w after 45s", ErrIdle), true},
		{"Truncated", fmt.Errorf("dify chat: %w (3 events)", ErrTruncated), true},
		{"TruncatedByReset", fmt.Errorf("%w: %w", ErrTruncated, syscall.ECONNRESET), true},
		{"LineTooLong", fmt.Errorf("x: %w", ErrLineTooLong), false},
		{"Workflow", fmt.Errorf("dify chat: %w", &WorkflowError{Status: "failed"}), false},
		{"Canceled", fmt.Errorf("dify chat: %w", context.Canceled), false},
		{"CanceledWhileTruncated", fmt.Errorf("%w: %w", ErrTruncated, context.Canceled), false},
		{"DeadlineExceeded", context.DeadlineExceeded, true},
		{"NetTimeout", fmt.Errorf("post: %w", timeoutErr{}), true},
		{"DialRefused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"ServerHungUp", fmt.Errorf("post: %w", io.EOF), true},
		{"Other", errors.New("unsupported protocol scheme"), false},
		{"InStream400", &APIError{Status: 400, Code: "completion_request_error", InStream: true}, false},
		{"InStream500", &APIError{Status: 500, Code: "internal_server_error", InStream: true}, true},
		{"HTTP401", &APIError{Status: 401, Code: "unauthorized"}, false},
		{"HTTP403", &APIError{Status: 403, Code: "forbidden"}, false},
		{"HTTP429NoCode", &APIError{Status: 429}, true},
		{"HTTP503", &APIError{Status: 503}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Retryable(tc.err); got != tc.want {
				t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
