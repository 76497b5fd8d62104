package config

import (
	"encoding/json"
	"log/slog"
	"net/url"
	"strings"

	"github.com/bridge-dev/bridge/pkg/redact"
)

// Secret holds a token or key. Every way of printing it (fmt verbs, slog,
// JSON, text encoders such as TOML and YAML) shows only a masked form, so a
// config can be logged or dumped without leaking credentials.
type Secret string

// String returns the masked value: "" for an empty secret, "****" plus the
// last 4 characters for a secret of 12 characters or more, "****" otherwise.
func (s Secret) String() string { return redact.MaskTail(string(s)) }

// GoString masks the value for the %#v verb.
func (s Secret) GoString() string { return redact.MaskTail(string(s)) }

// LogValue masks the value in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redact.MaskTail(string(s))) }

// MarshalJSON encodes the masked value as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(redact.MaskTail(string(s))) }

// MarshalText returns the masked value, for encoders that use
// encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redact.MaskTail(string(s))), nil }

// Reveal returns the raw value. Call it only where the value is put into a
// request header or compared with a received credential.
func (s Secret) Reveal() string { return string(s) }

// Mask masks a plain string such as a Dify app key. A key with the "app-"
// prefix keeps it: "app-…x7Qz". Anything else is masked like a Secret.
func Mask(s string) string { return redact.Mask(s) }

// KeyRef shows a route's Dify key as output may: the variable it is read
// from ($NAME) when there is one, else the key masked.
func KeyRef(env, key string) string {
	if env != "" {
		return "$" + env
	}
	return Mask(key)
}

// Secrets returns the value of every secret key that is set, for a masker
// that must recognise them inside text such as an upstream's error body.
func (c *Config) Secrets() []string {
	var out []string
	for _, f := range fields() {
		if f.secret {
			if v := c.value(f).String(); v != "" {
				out = append(out, v)
			}
		}
	}
	if p := DatabasePassword(c.Database); p != "" {
		out = append(out, p)
	}
	return out
}

// DatabasePassword is the password a PostgreSQL URL in the database key
// carries ("" for a SQLite path or a URL without one).
func DatabasePassword(database string) string {
	if !IsPostgresURL(database) {
		return ""
	}
	u, err := url.Parse(strings.TrimSpace(database))
	if err != nil || u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	return p
}

// IsPostgresURL reports whether the database key names a PostgreSQL
// database (postgres:// or postgresql://) rather than a SQLite file.
func IsPostgresURL(database string) bool {
	d := strings.ToLower(strings.TrimSpace(database))
	return strings.HasPrefix(d, "postgres://") || strings.HasPrefix(d, "postgresql://")
}
