package cmd

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/config"
)

// TestLogger: JSON when stderr is not a terminal or log_format is json,
// text otherwise; the level from log_level; and the ReplaceAttr net masks
// attributes whose keys look like credentials, whatever their type.
func TestLogger(t *testing.T) {
	cases := []struct {
		name, level, format string
		tty                 bool
		json                bool
		debug               bool
	}{
		{"TerminalText", "info", "text", true, false, false},
		{"PipeJSON", "info", "text", false, true, false},
		{"TerminalJSON", "debug", "json", true, true, true},
		{"Warn", "warn", "text", false, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := newLogger(&buf, tc.level, tc.format, tc.tty, nil)
			log.Debug("debug line")
			log.Warn("warn line", "api_token", secBotToken, "Authorization", "Bearer "+secDifyKey,
				"dify_key", []byte(secDifyKey), "webhook_secret", config.Secret(secHookSecret),
				slog.Group("chatwoot", "user_token", secUserToken), "event_id", 7)
			out := buf.String()
			if got := strings.HasPrefix(out, "{"); got != tc.json {
				t.Errorf("JSON = %v, want %v:\n%s", got, tc.json, out)
			}
			if got := strings.Contains(out, "debug line"); got != tc.debug {
				t.Errorf("debug line shown = %v, want %v", got, tc.debug)
			}
			if !strings.Contains(out, "warn line") || !strings.Contains(out, "event_id") {
				t.Errorf("warn line missing:\n%s", out)
			}
			for _, s := range secSecrets {
				if strings.Contains(out, s) {
					t.Errorf("credential %s in the log:\n%s", config.Mask(s), out)
				}
			}
		})
	}
}
