package config

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultsValidate(t *testing.T) {
	def := Defaults()
	if err := def.Validate(); err != nil {
		t.Fatal(err)
	}
	// Defaults returns fresh slices each time.
	def.Handoff.Keywords[0] = "changed"
	if Defaults().Handoff.Keywords[0] != "human" {
		t.Error("Defaults shares its slices between calls")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(c *Config)
		key   string
		value string // "" when none is expected
	}{
		{"listen empty", func(c *Config) { c.Listen = "" }, "listen", ""},
		{"listen no port", func(c *Config) { c.Listen = "localhost" }, "listen", "localhost"},
		{"listen bad port", func(c *Config) { c.Listen = "127.0.0.1:99999" }, "listen", "127.0.0.1:99999"},
		{"database empty", func(c *Config) { c.Database = " " }, "database", ""},
		{"public_url not http", func(c *Config) { c.PublicURL = "ftp://bridge.example.com" }, "public_url", "ftp://bridge.example.com"},
		{"public_url relative", func(c *Config) { c.PublicURL = "bridge.example.com/hooks" }, "public_url", "bridge.example.com/hooks"},
		{"public_url password redacted", func(c *Config) { c.PublicURL = "ftp://u:hunter2secret@x" }, "public_url", "ftp://u:xxxxx@x"},
		{"log_level", func(c *Config) { c.LogLevel = "verbose" }, "log_level", "verbose"},
		{"log_level case", func(c *Config) { c.LogLevel = "INFO" }, "log_level", "INFO"},
		{"log_format", func(c *Config) { c.LogFormat = "yaml" }, "log_format", "yaml"},
		{"memory_limit not a size", func(c *Config) { c.MemoryLimit = "lots" }, "memory_limit", "lots"},
		{"memory_limit too low", func(c *Config) { c.MemoryLimit = "8MiB" }, "memory_limit", "8MiB"},
		{"chatwoot.base_url empty", func(c *Config) { c.Chatwoot.BaseURL = "" }, "chatwoot.base_url", ""},
		{"chatwoot.base_url no scheme", func(c *Config) { c.Chatwoot.BaseURL = "localhost:3000" }, "chatwoot.base_url", "localhost:3000"},
		{"chatwoot.base_url no host", func(c *Config) { c.Chatwoot.BaseURL = "http://" }, "chatwoot.base_url", "http://"},
		{"bot_statuses empty", func(c *Config) { c.Chatwoot.BotStatuses = nil }, "chatwoot.bot_statuses", ""},
		{"bot_statuses unknown", func(c *Config) { c.Chatwoot.BotStatuses = []string{"pending", "closed"} }, "chatwoot.bot_statuses", "closed"},
		{"account_id negative", func(c *Config) { c.Chatwoot.AccountID = -1 }, "chatwoot.account_id", "-1"},
		{"dify.base_url", func(c *Config) { c.Dify.BaseURL = "api.dify.ai" }, "dify.base_url", "api.dify.ai"},
		{"dify.timeout zero", func(c *Config) { c.Dify.Timeout = 0 }, "dify.timeout", "0s"},
		{"dify.idle_timeout negative", func(c *Config) { c.Dify.IdleTimeout = -time.Second }, "dify.idle_timeout", "-1s"},
		{"dify.max_retries negative", func(c *Config) { c.Dify.MaxRetries = -1 }, "dify.max_retries", "-1"},
		{"keywords empty entry", func(c *Config) { c.Handoff.Keywords = []string{"human", ""} }, "handoff.keywords", ""},
		{"ai_marker empty", func(c *Config) { c.Handoff.AIMarker = "" }, "handoff.ai_marker", ""},
		{"labels empty entry", func(c *Config) { c.Handoff.Labels = []string{" "} }, "handoff.labels", ""},
		{"team_id negative", func(c *Config) { c.Handoff.TeamID = -3 }, "handoff.team_id", "-3"},
		{"concurrency zero", func(c *Config) { c.Worker.Concurrency = 0 }, "worker.concurrency", "0"},
		{"debounce negative", func(c *Config) { c.Worker.Debounce = -time.Millisecond }, "worker.debounce", "-1ms"},
		{"lease too short", func(c *Config) { c.Worker.Lease = 500 * time.Millisecond }, "worker.lease", "500ms"},
		{"retention negative", func(c *Config) { c.Retention.Ignored = -time.Hour }, "retention.ignored", "-1h0m0s"},
		{"dashboard.key short", func(c *Config) { c.Dashboard.Key = "hunter2secret" }, "dashboard.key", ""},
		{"dashboard.key not url-safe", func(c *Config) { c.Dashboard.Key = "hunter2secret&with=query+chars" }, "dashboard.key", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			c.File = "bridge.toml"
			tc.edit(&c)
			err := c.Validate()
			e := asConfigError(t, err)
			if e.File != "bridge.toml" || e.Key != tc.key || e.Value != tc.value {
				t.Errorf("got File %q Key %q Value %q, want bridge.toml %q %q", e.File, e.Key, e.Value, tc.key, tc.value)
			}
			if !strings.HasPrefix(err.Error(), "bridge.toml: "+tc.key+": ") {
				t.Errorf("message %q does not start with file and key", err)
			}
			if strings.Contains(err.Error(), "hunter2secret") {
				t.Errorf("password in message %q", err)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
	}{
		{"listen any host", func(c *Config) { c.Listen = ":8080" }},
		{"listen port 0", func(c *Config) { c.Listen = "127.0.0.1:0" }},
		{"listen ipv6", func(c *Config) { c.Listen = "[::1]:8080" }},
		{"public_url https", func(c *Config) { c.PublicURL = "https://bridge.example.com/base" }},
		{"every bot status", func(c *Config) { c.Chatwoot.BotStatuses = []string{"open", "pending", "snoozed", "resolved"} }},
		{"idle_timeout above timeout", func(c *Config) { c.Dify.IdleTimeout = 10 * time.Minute }},
		{"no retries", func(c *Config) { c.Dify.MaxRetries = 0 }},
		{"no keywords", func(c *Config) { c.Handoff.Keywords = nil }},
		{"no handoff message", func(c *Config) { c.Handoff.Message = "" }},
		{"debounce and retention zero", func(c *Config) { c.Worker.Debounce, c.Retention.Ignored = 0, 0 }},
		{"account and team", func(c *Config) { c.Chatwoot.AccountID, c.Handoff.TeamID = 1, 2 }},
		{"dashboard key", func(c *Config) { c.Dashboard.Key = "3f9a_B-c.~0123456789abcdef" }},
		{"memory limit", func(c *Config) { c.MemoryLimit = "96MiB" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			tc.edit(&c)
			if err := c.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		e    *Error
		want string
	}{
		{&Error{File: "bridge.toml", Key: "dify.timeout", Value: "abc", Err: errString("invalid duration")},
			`bridge.toml: dify.timeout: invalid duration "abc"`},
		{&Error{Key: "listen", Err: errString("required")}, "listen: required"},
		{&Error{File: "x.toml", Err: ErrNotFound}, "x.toml: config file not found"},
		{&Error{File: "x.toml", Key: "a", Err: errString("unknown key"), hint: "did you mean b?"}, "x.toml: a: unknown key (did you mean b?)"},
	}
	for _, tc := range tests {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestMemoryLimitBytes(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "96MiB": 96 << 20, "1GiB": 1 << 30, "64M": 64 << 20, "100000000": 100000000} {
		c := Defaults()
		c.MemoryLimit = in
		if err := c.Validate(); err != nil {
			t.Errorf("%q: %v", in, err)
		}
		if got := c.MemoryLimitBytes(); got != want {
			t.Errorf("MemoryLimitBytes(%q) = %d, want %d", in, got, want)
		}
	}
}
