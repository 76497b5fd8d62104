package redact

import (
	"strings"
	"testing"
)

func TestMask(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"short", "****"},
		{"twelve-chars", "****hars"},
		{"app-short", "app-…"},
		{"app-abcdefghijklmnop1234", "app-…1234"},
	}
	for _, tc := range tests {
		if got := Mask(tc.in); got != tc.want {
			t.Errorf("Mask(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPatterns(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"dify key", "invalid key app-AbCdEfGh12345678 given", "invalid key app-…5678 given"},
		{"bearer", `Authorization: Bearer sk-live-0123456789abcdef rejected`, `Authorization: Bearer ****cdef rejected`},
		{"bearer of a dify key", `header "Bearer app-AbCdEfGh12345678"`, `header "Bearer app-…5678"`},
		{"query parameter", "GET /webhooks/chatwoot?token=s3cr3t-value-9876&x=1", "GET /webhooks/chatwoot?token=****9876&x=1"},
		{"json field", `{"api_access_token": "tok-1234567890abcd"}`, `{"api_access_token": "****abcd"}`},
		{"plain text is left alone", "Access token is invalid", "Access token is invalid"},
		{"a hint naming a key is left alone", "labels need a user access token: set chatwoot.user_token", "labels need a user access token: set chatwoot.user_token"},
		{"already masked", "Bearer ****cdef and app-…5678", "Bearer ****cdef and app-…5678"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Patterns(tc.in); got != tc.want {
				t.Errorf("Patterns(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRedactor(t *testing.T) {
	const tok = "Zq8v3JxYwK2mN7pR"
	r := New(tok, "", "abc") // empty and short secrets are not masked as words
	got := r.String("chatwoot said: invalid token " + tok + " for abc")
	if strings.Contains(got, tok) {
		t.Fatalf("token left in %q", got)
	}
	if !strings.Contains(got, "****7pR") && !strings.Contains(got, "****N7pR") {
		t.Errorf("token not masked as a secret is: %q", got)
	}
	if !strings.HasSuffix(got, " for abc") {
		t.Errorf("a short secret was masked as a word: %q", got)
	}

	// A secret added later is masked from then on.
	const key = "route-key-7777777777"
	if got := r.String("x " + key); !strings.Contains(got, key) {
		t.Fatalf("masked before it was known: %q", got)
	}
	r.Add(key)
	if got := r.String("x " + key); strings.Contains(got, key) {
		t.Errorf("not masked after Add: %q", got)
	}

	var nilR *Redactor
	if got := nilR.String("Bearer app-AbCdEfGh12345678"); strings.Contains(got, "AbCdEfGh12345678") {
		t.Errorf("nil redactor left a key: %q", got)
	}
	if b := []byte("nothing here"); &r.Bytes(b)[0] != &b[0] {
		t.Error("Bytes copied text that needed no masking")
	}
}
