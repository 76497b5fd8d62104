package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

const exampleFile = "../../bridge.example.toml"

func brokenFile(name string) string { return filepath.Join("..", "..", "testdata", "config", name) }

// isolate hides BRIDGE_* variables of the surrounding environment (viper
// ignores empty ones) and points the user config directory at an empty
// temporary directory.
func isolate(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "BRIDGE_") {
			t.Setenv(name, "")
		}
	}
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg"))
	t.Setenv("HOME", dir)
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustLoad(t *testing.T, v *viper.Viper, path string, explicit bool) *Config {
	t.Helper()
	cfg, err := Load(v, path, explicit)
	if err != nil {
		t.Fatalf("Load(%q): %v", path, err)
	}
	return cfg
}

func asConfigError(t *testing.T, err error) *Error {
	t.Helper()
	if err == nil {
		t.Fatal("got no error, want a *config.Error")
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %T %q, want a *config.Error", err, err)
	}
	return e
}

func TestExampleFileEqualsDefaults(t *testing.T) {
	isolate(t)
	cfg := mustLoad(t, viper.New(), exampleFile, true)
	if cfg.File != exampleFile {
		t.Errorf("File = %q, want %q", cfg.File, exampleFile)
	}
	def := Defaults()
	for _, f := range fields() {
		got, want := cfg.value(f).Interface(), def.value(f).Interface()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: example file has %#v, Defaults() has %#v", f.key, got, want)
		}
	}
	for _, f := range fields() {
		if src := cfg.Source(f.key); src != (Source{Kind: FromFile, Name: exampleFile}) {
			t.Errorf("%s: source %v, want the example file", f.key, src)
		}
	}
	cfg.File, cfg.sources, cfg.Warnings = "", nil, nil
	if !reflect.DeepEqual(*cfg, def) {
		t.Errorf("example file and Defaults() differ:\n%+v\n%+v", *cfg, def)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("example file does not validate: %v", err)
	}
}

func TestExampleFileHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	fv := viper.New()
	fv.SetConfigType("toml")
	if err := fv.ReadConfig(strings.NewReader(string(data))); err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		if !fv.InConfig(k) {
			t.Errorf("%s is missing from %s", k, exampleFile)
		}
	}
	// Each key has its one-line comment.
	for line := range strings.SplitSeq(string(data), "\n") {
		if before, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(strings.TrimSpace(line), "#") && !strings.Contains(line, "#") {
			t.Errorf("key %q has no comment", strings.TrimSpace(before))
		}
	}
}

func TestKeys(t *testing.T) {
	keys := Keys()
	if len(keys) != 38 {
		t.Errorf("len(Keys()) = %d, want 38: %v", len(keys), keys)
	}
	for i := 1; i < len(keys); i++ {
		if keys[i-1] >= keys[i] {
			t.Errorf("Keys() not sorted at %q, %q", keys[i-1], keys[i])
		}
	}
	for _, k := range []string{"listen", "chatwoot.account_id", "chatwoot.api_token", "dify.idle_timeout", "handoff.open_on_agent_reply", "retention.ignored", "dashboard.key"} {
		if _, ok := lookupField(k); !ok {
			t.Errorf("Keys() lacks %s", k)
		}
	}
	if _, ok := lookupField("file"); ok {
		t.Error("Keys() holds the File field")
	}
}

func TestBrokenFiles(t *testing.T) {
	tests := []struct {
		file string
		key  string
		want []string // in the message besides file and key
	}{
		{"unknown_key.toml", "chatwoot.api_tokn", []string{"unknown key", "did you mean chatwoot.api_token?"}},
		{"bad_duration.toml", "dify.timeout", []string{`invalid duration "abc"`}},
		{"bad_log_level.toml", "log_level", []string{`"verbose"`, "debug, info, warn or error"}},
		{"syntax_error.toml", "dify.idle_timeout", []string{"line 4"}},
		{"wrong_type.toml", "worker.concurrency", []string{`invalid integer "eight"`}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			isolate(t)
			path := brokenFile(tc.file)
			cfg, err := Load(viper.New(), path, true)
			if cfg != nil {
				t.Error("got a config along with the error")
			}
			e := asConfigError(t, err)
			if e.File != path || e.Key != tc.key {
				t.Errorf("File, Key = %q, %q; want %q, %q", e.File, e.Key, path, tc.key)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, path+": "+tc.key+": ") {
				t.Errorf("message %q does not start with file and key", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
		})
	}
}

func TestUnknownKeySuggestions(t *testing.T) {
	tests := []struct {
		name, toml, key, hint string
	}{
		{"typo", "[dify]\nmax_retrys = 1\n", "dify.max_retrys", "did you mean dify.max_retries?"},
		{"typo in table", "[chatwot]\napi_token = \"x\"\n", "chatwot.api_token", "did you mean chatwoot.api_token?"},
		{"wrong table", "timeout = \"30s\"\n", "timeout", "did you mean dify.timeout?"},
		{"ambiguous", "base_url = \"http://x\"\n", "base_url", "did you mean chatwoot.base_url or dify.base_url?"},
		{"far off", "colour = \"blue\"\n", "colour", "unknown key"},
		{"table as value", "dify = \"x\"\n", "dify", "write [dify]"},
		{"table below a key", "[dify.timeout]\nx = 1\n", "dify.timeout", "invalid duration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			isolate(t)
			path := writeFile(t, t.TempDir(), "bridge.toml", tc.toml)
			_, err := Load(viper.New(), path, true)
			e := asConfigError(t, err)
			if e.File != path || e.Key != tc.key || !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("got File %q Key %q msg %q; want key %q and %q", e.File, e.Key, err, tc.key, tc.hint)
			}
			if tc.name == "far off" && strings.Contains(err.Error(), "did you mean") {
				t.Errorf("suggestion for a far-off key: %v", err)
			}
		})
	}
}

func TestWrongTypes(t *testing.T) {
	tests := []struct {
		name, toml, key, want string
	}{
		{"bare number duration", "[dify]\ntimeout = 120\n", "dify.timeout", "invalid duration \"120\""},
		{"fraction for integer", "[worker]\nconcurrency = 2.5\n", "worker.concurrency", "invalid integer"},
		{"string for bool", "[handoff]\nopen_on_agent_reply = \"maybe\"\n", "handoff.open_on_agent_reply", "invalid boolean \"maybe\""},
		{"number for string", "listen = 8080\n", "listen", "invalid string \"8080\""},
		{"list of numbers", "[handoff]\nlabels = [1, 2]\n", "handoff.labels", "invalid list"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			isolate(t)
			path := writeFile(t, t.TempDir(), "bridge.toml", tc.toml)
			_, err := Load(viper.New(), path, true)
			e := asConfigError(t, err)
			if e.File != path || e.Key != tc.key || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got File %q Key %q msg %q; want key %q and %q", e.File, e.Key, err, tc.key, tc.want)
			}
		})
	}
}

// envValues holds a valid, non-default environment value for every key and
// the value it must decode to.
var envValues = map[string]struct {
	env  string
	want any
}{
	"listen":                         {"0.0.0.0:9090", "0.0.0.0:9090"},
	"database":                       {"/var/lib/bridge/env.db", "/var/lib/bridge/env.db"},
	"public_url":                     {"https://bridge.example.com", "https://bridge.example.com"},
	"log_level":                      {"debug", "debug"},
	"log_format":                     {"json", "json"},
	"memory_limit":                   {"96MiB", "96MiB"},
	"chatwoot.base_url":              {"https://chat.example.com", "https://chat.example.com"},
	"chatwoot.api_token":             {"cw-api-token-from-env-A1", Secret("cw-api-token-from-env-A1")},
	"chatwoot.user_token":            {"cw-user-token-from-env-B2", Secret("cw-user-token-from-env-B2")},
	"chatwoot.webhook_token":         {"cw-hook-token-from-env-C3", Secret("cw-hook-token-from-env-C3")},
	"chatwoot.webhook_secret":        {"cw-hook-secret-from-env-D4", Secret("cw-hook-secret-from-env-D4")},
	"chatwoot.bot_statuses":          {"pending, open", []string{"pending", "open"}},
	"chatwoot.account_id":            {"42", int64(42)},
	"chatwoot.echo_wait":             {"750ms", 750 * time.Millisecond},
	"chatwoot.allow_unauthenticated": {"true", true},
	"dify.base_url":                  {"https://dify.example.com/v1", "https://dify.example.com/v1"},
	"dify.timeout":                   {"3m", 3 * time.Minute},
	"dify.idle_timeout":              {"10s", 10 * time.Second},
	"dify.max_retries":               {"5", 5},
	"handoff.keywords":               {"human,real agent", []string{"human", "real agent"}},
	"handoff.ai_marker":              {"<<human>>", "<<human>>"},
	"handoff.message":                {"One moment, please.", "One moment, please."},
	"handoff.labels":                 {"bot-handoff,vip", []string{"bot-handoff", "vip"}},
	"handoff.team_id":                {"7", int64(7)},
	"handoff.open_on_agent_reply":    {"false", false},
	"worker.concurrency":             {"16", 16},
	"worker.debounce":                {"2s", 2 * time.Second},
	"worker.lease":                   {"40s", 40 * time.Second},
	"retention.ignored":              {"24h", 24 * time.Hour},
	"dashboard.key":                  {"dash-key-from-env-E5-0123456789", Secret("dash-key-from-env-E5-0123456789")},
	"attachments.transfer":           {"upload", "upload"},
	"attachments.max_mb":             {"40", 40},
	"attachments.download_timeout":   {"2m", 2 * time.Minute},
	"voice.transcription_wait":       {"20s", 20 * time.Second},
	"voice.fallback":                 {"handoff", "handoff"},
	"voice.ask_message":              {"Please type.", "Please type."},
	"answer.citations":               {"append", "append"},
	"feedback.csat":                  {"true", true},
}

func TestEnvOverridesEveryKey(t *testing.T) {
	def := Defaults()
	for _, tc := range []struct{ name, file string }{
		{"no file", ""},
		{"every key in the file", exampleFile},
		{"some keys in the file", "partial"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolate(t)
			path := tc.file
			if path == "partial" {
				path = writeFile(t, t.TempDir(), "bridge.toml", "listen = \"127.0.0.1:1\"\n[dify]\ntimeout = \"1s\"\n")
			}
			for _, k := range Keys() {
				ev, ok := envValues[k]
				if !ok {
					t.Fatalf("no environment value for %s in this test", k)
				}
				f, _ := lookupField(k)
				if reflect.DeepEqual(def.value(f).Interface(), ev.want) {
					t.Fatalf("%s: test value equals the default", k)
				}
				t.Setenv(envVar(k), ev.env)
			}
			cfg := mustLoad(t, viper.New(), path, path != "")
			for _, k := range Keys() {
				f, _ := lookupField(k)
				if got := cfg.value(f).Interface(); !reflect.DeepEqual(got, envValues[k].want) {
					t.Errorf("%s: %s=%q gave %#v, want %#v", k, envVar(k), envValues[k].env, got, envValues[k].want)
				}
			}
		})
	}
}

func TestEnvVarNames(t *testing.T) {
	for key, want := range map[string]string{
		"chatwoot.api_token": "BRIDGE_CHATWOOT_API_TOKEN",
		"worker.concurrency": "BRIDGE_WORKER_CONCURRENCY",
		"public_url":         "BRIDGE_PUBLIC_URL",
	} {
		if got := envVar(key); got != want {
			t.Errorf("envVar(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestPrecedence(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	file := writeFile(t, dir, "bridge.toml", "database = \"file.db\"\n")

	load := func(path string, args ...string) string {
		t.Helper()
		fs := pflag.NewFlagSet("bridge", pflag.ContinueOnError)
		fs.String("db", "bridge.db", "database path")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		v := viper.New()
		if err := v.BindPFlag("database", fs.Lookup("db")); err != nil {
			t.Fatal(err)
		}
		return mustLoad(t, v, path, path != "").Database
	}

	if got := load(""); got != "bridge.db" {
		t.Errorf("default: database = %q, want bridge.db", got)
	}
	if got := load(file); got != "file.db" {
		t.Errorf("file over default: database = %q, want file.db", got)
	}
	t.Setenv("BRIDGE_DATABASE", "env.db")
	if got := load(file); got != "env.db" {
		t.Errorf("env over file: database = %q, want env.db", got)
	}
	if got := load(file, "--db", "flag.db"); got != "flag.db" {
		t.Errorf("flag over env: database = %q, want flag.db", got)
	}
}

func TestFlagsOfEveryType(t *testing.T) {
	isolate(t)
	fs := pflag.NewFlagSet("bridge", pflag.ContinueOnError)
	fs.Int("concurrency", 8, "")
	fs.Duration("timeout", time.Minute, "")
	fs.Bool("open", true, "")
	fs.StringSlice("keywords", nil, "")
	if err := fs.Parse([]string{"--concurrency=3", "--timeout=90s", "--open=false", "--keywords=a,b"}); err != nil {
		t.Fatal(err)
	}
	v := viper.New()
	for key, flag := range map[string]string{
		"worker.concurrency": "concurrency", "dify.timeout": "timeout",
		"handoff.open_on_agent_reply": "open", "handoff.keywords": "keywords",
	} {
		if err := v.BindPFlag(key, fs.Lookup(flag)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := mustLoad(t, v, "", false)
	if cfg.Worker.Concurrency != 3 || cfg.Dify.Timeout != 90*time.Second || cfg.Handoff.OpenOnAgentReply ||
		!reflect.DeepEqual(cfg.Handoff.Keywords, []string{"a", "b"}) {
		t.Errorf("flags not applied: %+v", cfg)
	}
}

func TestNoFileEnvOnly(t *testing.T) {
	isolate(t)
	t.Chdir(t.TempDir())
	t.Setenv("BRIDGE_CHATWOOT_API_TOKEN", "cw-token-only-in-env-77")
	t.Setenv("BRIDGE_HANDOFF_KEYWORDS", "human, agent")
	cfg := mustLoad(t, viper.New(), "", false)
	if cfg.File != "" {
		t.Errorf("File = %q, want none", cfg.File)
	}
	if cfg.Chatwoot.APIToken.Reveal() != "cw-token-only-in-env-77" {
		t.Errorf("api_token = %q", cfg.Chatwoot.APIToken.Reveal())
	}
	if !reflect.DeepEqual(cfg.Handoff.Keywords, []string{"human", "agent"}) {
		t.Errorf("keywords = %q", cfg.Handoff.Keywords)
	}
	if cfg.Listen != "127.0.0.1:8080" {
		t.Errorf("listen = %q, want the default", cfg.Listen)
	}
}

func TestFileDiscovery(t *testing.T) {
	isolate(t)
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	work := t.TempDir()
	t.Chdir(work)

	if cfg := mustLoad(t, viper.New(), "", false); cfg.File != "" {
		t.Fatalf("File = %q with no file anywhere", cfg.File)
	}

	userFile := writeFile(t, xdg, "bridge/bridge.toml", "database = \"xdg.db\"\n")
	cfg := mustLoad(t, viper.New(), "", false)
	if cfg.File != userFile || cfg.Database != "xdg.db" {
		t.Errorf("XDG: File %q database %q, want %q xdg.db", cfg.File, cfg.Database, userFile)
	}

	writeFile(t, work, "bridge.toml", "database = \"cwd.db\"\n")
	cfg = mustLoad(t, viper.New(), "", false)
	if cfg.File != "bridge.toml" || cfg.Database != "cwd.db" {
		t.Errorf("cwd: File %q database %q, want bridge.toml cwd.db", cfg.File, cfg.Database)
	}

	t.Setenv("XDG_CONFIG_HOME", "")
	home := t.TempDir()
	t.Setenv("HOME", home)
	if err := os.Remove(filepath.Join(work, "bridge.toml")); err != nil {
		t.Fatal(err)
	}
	homeFile := writeFile(t, home, ".config/bridge/bridge.toml", "database = \"home.db\"\n")
	cfg = mustLoad(t, viper.New(), "", false)
	if cfg.File != homeFile || cfg.Database != "home.db" {
		t.Errorf("~/.config: File %q database %q, want %q home.db", cfg.File, cfg.Database, homeFile)
	}
}

func TestExplicitMissingFile(t *testing.T) {
	isolate(t)
	path := filepath.Join(t.TempDir(), "nope.toml")
	cfg, err := Load(viper.New(), path, true)
	if cfg != nil || !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, %v; want ErrNotFound", cfg, err)
	}
	if e := asConfigError(t, err); e.File != path || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}

	// The same path, not named by the user, is simply absent.
	t.Chdir(t.TempDir())
	if cfg := mustLoad(t, viper.New(), path, false); cfg.File != "" {
		t.Errorf("File = %q", cfg.File)
	}
}

func TestBadValueFromEnvNamesVariable(t *testing.T) {
	isolate(t)
	path := writeFile(t, t.TempDir(), "bridge.toml", "log_level = \"info\"\n[dify]\ntimeout = \"30s\"\n")

	t.Setenv("BRIDGE_DIFY_TIMEOUT", "abc")
	_, err := Load(viper.New(), path, true)
	e := asConfigError(t, err)
	if e.File != "" || e.Key != "dify.timeout" || e.Value != "abc" || !strings.Contains(err.Error(), "BRIDGE_DIFY_TIMEOUT") {
		t.Errorf("got File %q Key %q Value %q msg %q", e.File, e.Key, e.Value, err)
	}

	t.Setenv("BRIDGE_DIFY_TIMEOUT", "")
	t.Setenv("BRIDGE_LOG_LEVEL", "loud")
	_, err = Load(viper.New(), path, true)
	e = asConfigError(t, err)
	if e.File != "" || e.Key != "log_level" || !strings.Contains(err.Error(), "BRIDGE_LOG_LEVEL") || !strings.Contains(err.Error(), `"loud"`) {
		t.Errorf("got File %q Key %q msg %q", e.File, e.Key, err)
	}
}

func TestUnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file")
	}
	isolate(t)
	path := writeFile(t, t.TempDir(), "bridge.toml", "listen = \"127.0.0.1:1\"\n")
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	_, err := Load(viper.New(), path, true)
	if e := asConfigError(t, err); e.File != path {
		t.Errorf("error %q does not name the file", err)
	}
}

// TestCheckWebhookAuth: serve refuses unauthenticated webhooks on an
// address other hosts can reach, unless the operator says so.
func TestCheckWebhookAuth(t *testing.T) {
	for _, tc := range []struct {
		name    string
		listen  string
		set     func(*Config)
		wantErr bool
	}{
		{"LoopbackV4", "127.0.0.1:8080", nil, false},
		{"LoopbackV6", "[::1]:8080", nil, false},
		{"Localhost", "localhost:8080", nil, false},
		{"ErrAllInterfaces", "0.0.0.0:8080", nil, true},
		{"ErrEmptyHost", ":8080", nil, true},
		{"ErrPublicName", "bridge.example.com:8080", nil, true},
		{"Secret", "0.0.0.0:8080", func(c *Config) { c.Chatwoot.WebhookSecret = "s3cret-value" }, false},
		{"Token", "0.0.0.0:8080", func(c *Config) { c.Chatwoot.WebhookToken = "t0ken-value" }, false},
		{"AllowedExplicitly", "0.0.0.0:8080", func(c *Config) { c.Chatwoot.AllowUnauthenticated = true }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			c.File = "bridge.toml"
			c.Listen = tc.listen
			if tc.set != nil {
				tc.set(&c)
			}
			err := c.CheckWebhookAuth()
			if (err != nil) != tc.wantErr {
				t.Fatalf("CheckWebhookAuth() = %v, want error %v", err, tc.wantErr)
			}
			var ce *Error
			if err != nil && (!errors.As(err, &ce) || !strings.Contains(err.Error(), "chatwoot.allow_unauthenticated") ||
				!strings.HasPrefix(err.Error(), "bridge.toml: chatwoot.webhook_secret: ")) {
				t.Errorf("error %q: want a config error naming the file, the key and chatwoot.allow_unauthenticated", err)
			}
		})
	}
}
