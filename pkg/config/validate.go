package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
)

var (
	logLevels   = []string{"debug", "info", "warn", "error"}
	logFormats  = []string{"text", "json"}
	botStatuses = []string{"open", "pending", "snoozed", "resolved"}
)

// Validate checks every value and returns a *Error for the first one that is
// out of range, with File set to c.File. Load calls it; call it yourself on a
// Config built in code.
func (c *Config) Validate() error {
	bad := func(key, value, msg, hint string) error {
		return &Error{File: c.File, Key: key, Value: value, Err: errors.New(msg), hint: hint}
	}

	if c.Listen == "" {
		return bad("listen", "", "required", "want host:port, e.g. 127.0.0.1:8080")
	}
	if !validHostPort(c.Listen) {
		return bad("listen", c.Listen, "invalid address", "want host:port, e.g. 127.0.0.1:8080")
	}
	if strings.TrimSpace(c.Database) == "" {
		return bad("database", "", "required", "want the path of the SQLite file, or a postgres:// URL")
	}
	if IsPostgresURL(c.Database) {
		// A URL without a host names the server by ?host=: a Unix socket
		// directory, as libpq reads it (postgres://bridge@/bridge?host=/var/run/postgresql).
		if u, err := url.Parse(strings.TrimSpace(c.Database)); err != nil || (u.Host == "" && u.Query().Get("host") == "") {
			return bad("database", redactURL(c.Database), "invalid PostgreSQL URL",
				"want postgres://user:password@host:5432/dbname?sslmode=require, or postgres://user@/dbname?host=/var/run/postgresql for a local socket")
		}
	}
	if c.PublicURL != "" && !validHTTPURL(c.PublicURL) {
		return bad("public_url", redactURL(c.PublicURL), "invalid URL", "want the http(s) URL at which Chatwoot reaches bridge, or empty")
	}
	if !slices.Contains(logLevels, c.LogLevel) {
		return bad("log_level", c.LogLevel, "invalid log level", "want debug, info, warn or error")
	}
	if !slices.Contains(logFormats, c.LogFormat) {
		return bad("log_format", c.LogFormat, "invalid log format", "want text or json")
	}
	if c.MemoryLimit != "" {
		n, err := ParseSize(c.MemoryLimit)
		if err != nil {
			return bad("memory_limit", c.MemoryLimit, "invalid size", `e.g. "96MiB" or "1GiB"; "" for none`)
		}
		if n < minMemoryLimit {
			return bad("memory_limit", c.MemoryLimit, "below 32MiB", `bridge idles at about 20MiB; e.g. "96MiB"`)
		}
	}

	if c.Chatwoot.BaseURL == "" {
		return bad("chatwoot.base_url", "", "required", "want an http(s) URL, e.g. http://localhost:3000")
	}
	if !validHTTPURL(c.Chatwoot.BaseURL) {
		return bad("chatwoot.base_url", redactURL(c.Chatwoot.BaseURL), "invalid URL", "want an http(s) URL, e.g. http://localhost:3000")
	}
	if len(c.Chatwoot.BotStatuses) == 0 {
		return bad("chatwoot.bot_statuses", "", "required", "want one or more of open, pending, snoozed, resolved")
	}
	for _, s := range c.Chatwoot.BotStatuses {
		if !slices.Contains(botStatuses, s) {
			return bad("chatwoot.bot_statuses", s, "invalid status", "want open, pending, snoozed or resolved")
		}
	}
	if c.Chatwoot.EchoWait <= 0 || c.Chatwoot.EchoWait > 10*time.Minute {
		return bad("chatwoot.echo_wait", c.Chatwoot.EchoWait.String(), "must be positive and at most 10m", `e.g. "5s"`)
	}
	if c.Chatwoot.AccountID < 0 {
		return bad("chatwoot.account_id", strconv.FormatInt(c.Chatwoot.AccountID, 10), "must not be negative", "0 means any account")
	}

	if c.Dify.BaseURL == "" {
		return bad("dify.base_url", "", "required", "want an http(s) URL, e.g. https://api.dify.ai/v1")
	}
	if !validHTTPURL(c.Dify.BaseURL) {
		return bad("dify.base_url", redactURL(c.Dify.BaseURL), "invalid URL", "want an http(s) URL, e.g. https://api.dify.ai/v1")
	}
	if c.Dify.Timeout <= 0 {
		return bad("dify.timeout", c.Dify.Timeout.String(), "must be positive", `e.g. "120s"`)
	}
	if c.Dify.IdleTimeout <= 0 {
		return bad("dify.idle_timeout", c.Dify.IdleTimeout.String(), "must be positive", `e.g. "45s"`)
	}
	if c.Dify.MaxRetries < 0 {
		return bad("dify.max_retries", strconv.Itoa(c.Dify.MaxRetries), "must not be negative", "0 disables retries")
	}

	for _, k := range c.Handoff.Keywords {
		if strings.TrimSpace(k) == "" {
			return bad("handoff.keywords", "", "empty keyword", "remove it from the list")
		}
	}
	if strings.TrimSpace(c.Handoff.AIMarker) == "" {
		// An empty marker would be found in every answer.
		return bad("handoff.ai_marker", "", "required", `want a marker the AI writes to ask for a human, e.g. "[[handoff]]"`)
	}
	for _, l := range c.Handoff.Labels {
		if strings.TrimSpace(l) == "" {
			return bad("handoff.labels", "", "empty label", "remove it from the list")
		}
	}
	if c.Handoff.TeamID < 0 {
		return bad("handoff.team_id", strconv.FormatInt(c.Handoff.TeamID, 10), "must not be negative", "0 assigns no team")
	}

	if c.Worker.Concurrency < 1 {
		return bad("worker.concurrency", strconv.Itoa(c.Worker.Concurrency), "must be at least 1", "")
	}
	if c.Worker.Debounce < 0 {
		return bad("worker.debounce", c.Worker.Debounce.String(), "must not be negative", `"0s" answers each message at once`)
	}
	if c.Worker.Lease < time.Second {
		return bad("worker.lease", c.Worker.Lease.String(), "must be at least 1s", `e.g. "15s"; the worker renews it every third of that`)
	}
	if c.Retention.Ignored < 0 {
		return bad("retention.ignored", c.Retention.Ignored.String(), "must not be negative", `e.g. "168h"`)
	}
	if k := c.Dashboard.Key.Reveal(); k != "" {
		// The key rides in a URL that every agent of the account can read:
		// it must survive there unescaped and not be guessable.
		if len(k) < minDashboardKey || strings.Trim(k, urlSafe) != "" {
			return bad("dashboard.key", "", fmt.Sprintf("want at least %d letters, digits, '-', '_', '.' or '~'", minDashboardKey),
				"e.g. the output of: openssl rand -hex 24")
		}
	}
	if !slices.Contains(TransferModes, c.Attachments.Transfer) {
		return bad("attachments.transfer", c.Attachments.Transfer, "invalid transfer mode", "want auto, remote_url or upload")
	}
	if c.Attachments.MaxMB < 1 || c.Attachments.MaxMB > 2048 {
		return bad("attachments.max_mb", strconv.Itoa(c.Attachments.MaxMB), "must be between 1 and 2048", "")
	}
	if c.Attachments.DownloadTimeout <= 0 {
		return bad("attachments.download_timeout", c.Attachments.DownloadTimeout.String(), "must be positive", `e.g. "60s"`)
	}
	if c.Voice.TranscriptionWait < 0 || c.Voice.TranscriptionWait > 10*time.Minute {
		return bad("voice.transcription_wait", c.Voice.TranscriptionWait.String(), "must be between 0s and 10m", `"0s" when Chatwoot does not transcribe`)
	}
	if !slices.Contains(VoiceFallbacks, c.Voice.Fallback) {
		return bad("voice.fallback", c.Voice.Fallback, "invalid fallback", "want ask or handoff")
	}
	if c.Voice.Fallback == VoiceAsk && strings.TrimSpace(c.Voice.AskMessage) == "" {
		return bad("voice.ask_message", "", "required when voice.fallback is ask", "want the message asking the customer to type")
	}
	if c.Answer.Citations != "off" && c.Answer.Citations != "append" {
		return bad("answer.citations", c.Answer.Citations, "invalid value", "want off or append")
	}
	return nil
}

// minDashboardKey is the shortest dashboard.key accepted.
const minDashboardKey = 24

// urlSafe are the characters a URL query carries as they are (RFC 3986
// unreserved).
const urlSafe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"

// CheckWebhookAuth refuses what serve must not run with: webhooks accepted
// without chatwoot.webhook_secret or chatwoot.webhook_token on an address
// that other hosts can reach, unless chatwoot.allow_unauthenticated says so.
// Anyone who reaches such a server can make bridge answer, in any account
// and conversation a body names. On loopback only local programs reach it.
func (c *Config) CheckWebhookAuth() error {
	if c.Chatwoot.WebhookSecret != "" || c.Chatwoot.WebhookToken != "" || c.Chatwoot.AllowUnauthenticated || loopback(c.Listen) {
		return nil
	}
	return &Error{File: c.File, Key: "chatwoot.webhook_secret",
		Err: fmt.Errorf("required when listen (%s) is not a loopback address: without it or chatwoot.webhook_token anyone who reaches bridge can make it answer", c.Listen),
		hint: "set chatwoot.webhook_secret to the agent bot's secret, or chatwoot.webhook_token and ?token= on the webhook URL; " +
			"or listen on 127.0.0.1 behind a proxy that authenticates, or set chatwoot.allow_unauthenticated = true to accept the risk"}
}

// loopback reports whether a listen address is reachable from this host only.
func loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validHostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

func validHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Hostname() != ""
}

// redactURL hides a password in a URL before it goes into an error.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if strings.Contains(s, "@") {
			return ""
		}
		return s
	}
	if _, ok := u.User.Password(); ok {
		return u.Redacted()
	}
	return s
}

// FilePermissionsWarning returns a warning for doctor when the config file
// holds a non-empty secret and can be read by its group or by others, and ""
// otherwise.
func (c *Config) FilePermissionsWarning() string {
	if c.File == "" || runtime.GOOS == "windows" {
		// Windows reports no group or other permission bits.
		return ""
	}
	fi, err := os.Stat(c.File)
	if err != nil {
		return ""
	}
	mode := fi.Mode().Perm()
	if mode&0o044 == 0 {
		return ""
	}
	keys := secretsInFile(c)
	if len(keys) == 0 {
		return ""
	}
	return fmt.Sprintf("%s holds %s and is readable by group or others (mode %04o); run: chmod 600 %s",
		c.File, strings.Join(keys, ", "), mode, c.File)
}

// secretsInFile lists the secret keys with a non-empty value in c.File. When
// the file cannot be read or parsed, it falls back to the secrets of c.
func secretsInFile(c *Config) []string {
	var fv *viper.Viper
	if data, err := os.ReadFile(c.File); err == nil {
		fv = viper.New()
		fv.SetConfigType("toml")
		if fv.ReadConfig(bytes.NewReader(data)) != nil {
			fv = nil
		}
	}
	var keys []string
	for _, f := range fields() {
		if !f.secret {
			continue
		}
		set := false
		if fv != nil {
			set = fv.GetString(f.key) != ""
		} else {
			set = c.value(f).String() != ""
		}
		if set {
			keys = append(keys, f.key)
		}
	}
	return keys
}

// minMemoryLimit is the lowest memory_limit taken: below it the garbage
// collector would run all the time.
const minMemoryLimit = 32 << 20

// ParseSize reads sizes such as 512MiB, 1GiB, 1GB or 4096 (bytes); K, M and
// G are powers of 1024 with or without the "iB".
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10},
		{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 || n*float64(mult) > math.MaxInt64/2 {
		return 0, fmt.Errorf("bad size %q: want e.g. 512MiB or 1GiB", s)
	}
	return int64(n * float64(mult)), nil
}

// MemoryLimitBytes is memory_limit in bytes, 0 when unset.
func (c *Config) MemoryLimitBytes() int64 {
	n, _ := ParseSize(c.MemoryLimit) // validated
	return n
}
