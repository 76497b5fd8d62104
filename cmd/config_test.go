package cmd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/config"
)

// TestConfigShowsValuesAndSources: bridge config prints every key with
// the value in effect and where it came from, secrets masked.
func TestConfigShowsValuesAndSources(t *testing.T) {
	dir := isolate(t)
	file := filepath.Join(dir, "bridge.toml")
	if err := os.WriteFile(file, []byte("log_level = \"debug\"\n[chatwoot]\napi_token = \""+testBotToken+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BRIDGE_CHATWOOT_WEBHOOK_SECRET", testWebhookSecret)
	t.Setenv("BRIDGE_WORKER_CONCURRENCY", "3")
	t.Setenv("BRIDGE_WORKER_CONCURENCY", "4")
	var tr transcript
	tr.dir = dir
	args := []string{"config", "--config", file, "--db", "/srv/bridge/bridge.db"}
	res := runCLI(t, args...)
	tr.add(args, res)
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Err)
	}
	for _, s := range testSecrets {
		if strings.Contains(res.Out+res.Err, s) {
			t.Errorf("a secret (%s) was printed", config.Mask(s))
		}
	}
	if !strings.Contains(res.Err, "Warning: BRIDGE_WORKER_CONCURENCY is not a bridge setting and is ignored; did you mean BRIDGE_WORKER_CONCURRENCY?") {
		t.Errorf("no warning for the misspelt variable: %q", res.Err)
	}
	checkGolden(t, "config", tr.String())

	res = runCLI(t, append(args, "--json")...)
	var v configView
	if err := json.Unmarshal([]byte(res.Out), &v); err != nil || res.Code != 0 {
		t.Fatalf("config --json: %v, exit %d\n%s", err, res.Code, res.Out)
	}
	got := map[string]config.Setting{}
	for _, s := range v.Settings {
		got[s.Key] = s
	}
	for key, want := range map[string]string{
		"database":                "flag --db",
		"chatwoot.webhook_secret": "env BRIDGE_CHATWOOT_WEBHOOK_SECRET",
		"worker.concurrency":      "env BRIDGE_WORKER_CONCURRENCY",
		"chatwoot.api_token":      "file " + file,
		"log_level":               "file " + file,
		"listen":                  "default",
	} {
		if s := got[key].Source.String(); s != want {
			t.Errorf("%s: source %q, want %q", key, s, want)
		}
	}
	if s := got["chatwoot.api_token"]; !s.Secret || s.Value != config.Mask(testBotToken) {
		t.Errorf("api_token = %+v", s)
	}
	if v.File != file || len(v.Warnings) != 1 || len(v.Settings) != len(config.Keys()) {
		t.Errorf("file %q, warnings %q, %d settings", v.File, v.Warnings, len(v.Settings))
	}
}
