// Package redact masks credentials inside free text: the configured tokens,
// keys and secrets, and anything shaped like one (a Dify app key, a bearer
// token, a token=... parameter), in the same form bridge prints a secret.
//
// Upstream error bodies sometimes echo the credential they were sent (a Dify
// 401 quoting the Authorization header, a proxy page quoting the request).
// Such text reaches logs, the journal, private notes and the CLI, so every
// string that comes back from an upstream goes through a Redactor before it
// is stored or shown. The package is a leaf (standard library only) so the
// API clients and the store can use the same masking.
package redact

import (
	"regexp"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// minVisibleLen is the shortest value whose last 4 characters may be shown:
// below it, the tail would give away too large a part of the value.
const minVisibleLen = 12

// minSecretLen is the shortest configured secret replaced wherever it
// appears: a shorter one would also match ordinary words.
const minSecretLen = 6

// Mask is the masked form of one credential: "app-…x7Qz" for a Dify key,
// and MaskTail's for any other value.
func Mask(s string) string {
	if rest, ok := strings.CutPrefix(s, "app-"); ok && rest != "" {
		if utf8.RuneCountInString(s) < minVisibleLen {
			return "app-…"
		}
		return "app-…" + lastRunes(s, 4)
	}
	return MaskTail(s)
}

// MaskTail is "****" plus the last 4 characters of a value of 12
// characters or more, "****" for a shorter one, "" for "".
func MaskTail(s string) string {
	switch {
	case s == "":
		return ""
	case utf8.RuneCountInString(s) < minVisibleLen:
		return "****"
	default:
		return "****" + lastRunes(s, 4)
	}
}

func lastRunes(s string, n int) string {
	i := len(s)
	for ; n > 0 && i > 0; n-- {
		_, size := utf8.DecodeLastRuneInString(s[:i])
		i -= size
	}
	return s[i:]
}

var (
	// A Dify app key: "app-" and a run of key characters.
	difyKey = regexp.MustCompile(`\bapp-[A-Za-z0-9_\-]{6,}`)
	// An Authorization header value, quoted or echoed.
	bearer = regexp.MustCompile(`(?i)\b(bearer)(\s+)([^\s"',;)]{4,})`)
	// token=..., api_access_token=... as in a query string or a form.
	param = regexp.MustCompile(`(?i)\b(api_access_token|access_token|api_key|apikey|token|secret|password)=([^\s&"',;)]{4,})`)
	// "token": "..." and the like, in an echoed JSON document or header list.
	field = regexp.MustCompile(`(?i)"(api_access_token|access_token|api_key|apikey|authorization|token|secret|password)"(\s*:\s*)"([^"]{4,})"`)
)

// Patterns masks what is shaped like a credential, without knowing any.
func Patterns(s string) string {
	if !mayHold(s) {
		return s
	}
	s = difyKey.ReplaceAllStringFunc(s, Mask)
	s = bearer.ReplaceAllStringFunc(s, func(m string) string {
		g := bearer.FindStringSubmatch(m)
		if strings.HasPrefix(g[3], "app-…") || strings.HasPrefix(g[3], "****") {
			return m // already masked
		}
		return g[1] + g[2] + Mask(g[3])
	})
	s = param.ReplaceAllStringFunc(s, func(m string) string {
		g := param.FindStringSubmatch(m)
		if strings.HasPrefix(g[2], "app-…") || strings.HasPrefix(g[2], "****") {
			return m
		}
		return g[1] + "=" + Mask(g[2])
	})
	s = field.ReplaceAllStringFunc(s, func(m string) string {
		g := field.FindStringSubmatch(m)
		if strings.HasPrefix(g[3], "app-…") || strings.HasPrefix(g[3], "****") {
			return m
		}
		return `"` + g[1] + `"` + g[2] + `"` + Mask(g[3]) + `"`
	})
	return s
}

// mayHold is a cheap test that spares the regular expressions the text
// that cannot match any of them, which is nearly all of it.
func mayHold(s string) bool {
	return strings.Contains(s, "app-") || strings.ContainsAny(s, "=\"") ||
		strings.Contains(s, "earer") || strings.Contains(s, "EARER")
}

// Known masks every occurrence of the given secrets in s, then the
// patterns. It is what an API client uses with its own token or key.
func Known(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) >= minSecretLen && strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, Mask(sec))
		}
	}
	return Patterns(s)
}

// Redactor masks a set of known secrets, which may grow while it is in use
// (route keys are read from the database after start), and the patterns.
// A nil *Redactor masks the patterns only.
type Redactor struct {
	mu      sync.RWMutex
	secrets []string
}

// New returns a Redactor that knows secrets (empty ones are ignored).
func New(secrets ...string) *Redactor {
	r := &Redactor{}
	r.Add(secrets...)
	return r
}

// Add makes r mask secrets too.
func (r *Redactor) Add(secrets ...string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range secrets {
		if len(s) < minSecretLen || slices.Contains(r.secrets, s) {
			continue
		}
		r.secrets = append(r.secrets, s)
		// Longest first, so a secret that contains another is masked whole.
		slices.SortFunc(r.secrets, func(a, b string) int { return len(b) - len(a) })
	}
}

// String masks s.
func (r *Redactor) String(s string) string {
	if r == nil {
		return Patterns(s)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return Known(s, r.secrets...)
}

// Bytes masks b, returning b itself when nothing needed masking.
func (r *Redactor) Bytes(b []byte) []byte {
	s := string(b)
	if m := r.String(s); m != s {
		return []byte(m)
	}
	return b
}
