package config

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// boundFlag is a --name flag set to value and bound to key in a fresh
// viper, as cmd binds --listen and --db.
func boundFlag(t *testing.T, key, name, value string) *viper.Viper {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.String(name, "", "")
	if err := fs.Parse([]string{"--" + name + "=" + value}); err != nil {
		t.Fatal(err)
	}
	v := viper.New()
	if err := v.BindPFlag(key, fs.Lookup(name)); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestBadFlagValueNamesTheFlag(t *testing.T) {
	isolate(t)
	file := writeFile(t, t.TempDir(), "bridge.toml", "listen = \"127.0.0.1:8080\"\n")
	v := boundFlag(t, "listen", "listen", "127.0.0.1:99999")
	_, err := LoadWithFlags(v, file, true, map[string]string{"listen": "--listen"})
	e := asConfigError(t, err)
	if e.Flag != "--listen" || e.File != "" || !strings.HasPrefix(err.Error(), `--listen: invalid address "127.0.0.1:99999"`) {
		t.Errorf("got %q (flag %q, file %q), want the flag blamed, not %s", err, e.Flag, e.File, file)
	}
	// The same value in the file is the file's fault.
	file = writeFile(t, t.TempDir(), "bridge.toml", "listen = \"127.0.0.1:99999\"\n")
	_, err = Load(viper.New(), file, true)
	if e := asConfigError(t, err); e.Flag != "" || e.File != file {
		t.Errorf("file value: got %q (flag %q, file %q)", err, e.Flag, e.File)
	}
}

func TestSources(t *testing.T) {
	isolate(t)
	file := writeFile(t, t.TempDir(), "bridge.toml", "log_level = \"debug\"\n[chatwoot]\napi_token = \"file-token-abcdef123456\"\n")
	t.Setenv("BRIDGE_WORKER_CONCURRENCY", "3")
	v := boundFlag(t, "database", "db", "/tmp/x.db")
	cfg, err := LoadWithFlags(v, file, true, map[string]string{"database": "--db"})
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]Source{
		"database":           {Kind: FromFlag, Name: "--db"},
		"worker.concurrency": {Kind: FromEnv, Name: "BRIDGE_WORKER_CONCURRENCY"},
		"log_level":          {Kind: FromFile, Name: file},
		"chatwoot.api_token": {Kind: FromFile, Name: file},
		"listen":             {Kind: FromDefault},
	} {
		if got := cfg.Source(key); got != want {
			t.Errorf("%s: source %v, want %v", key, got, want)
		}
	}
	got := map[string]Setting{}
	for _, s := range cfg.Settings() {
		got[s.Key] = s
	}
	if len(got) != len(Keys()) {
		t.Errorf("%d settings for %d keys", len(got), len(Keys()))
	}
	if s := got["chatwoot.api_token"]; !s.Secret || strings.Contains(s.Value, "abcdef") || s.Value != "****3456" {
		t.Errorf("api_token shown as %+v", s)
	}
	if s := got["worker.concurrency"]; s.Value != "3" {
		t.Errorf("worker.concurrency = %+v", s)
	}
	if s := got["handoff.keywords"]; s.Value != "human,agent,operator,real person" {
		t.Errorf("handoff.keywords = %+v", s)
	}
	if s := got["dify.timeout"]; s.Value != "2m0s" || s.Source.String() != "default" {
		t.Errorf("dify.timeout = %+v", s)
	}
	if s := got["database"]; s.Source.String() != "flag --db" {
		t.Errorf("database source shown as %q", s.Source)
	}
}

func TestMisspeltVariableWarns(t *testing.T) {
	isolate(t)
	t.Setenv("BRIDGE_WORKER_CONCURENCY", "4")
	t.Setenv("BRIDGE_TIMEOUT", "30s")
	t.Setenv("BRIDGE_SUPPORT_KEY", "app-abc") // a route's key, named by the operator
	t.Setenv("BRIDGE_EMPTY_SETTNG", "")
	cfg := mustLoad(t, viper.New(), "", false)
	want := []string{
		"BRIDGE_TIMEOUT is not a bridge setting and is ignored; did you mean BRIDGE_DIFY_TIMEOUT?",
		"BRIDGE_WORKER_CONCURENCY is not a bridge setting and is ignored; did you mean BRIDGE_WORKER_CONCURRENCY?",
	}
	if strings.Join(cfg.Warnings, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(cfg.Warnings, "\n"), strings.Join(want, "\n"))
	}
	if cfg.Worker.Concurrency != Defaults().Worker.Concurrency {
		t.Errorf("misspelt variable took effect: %d", cfg.Worker.Concurrency)
	}
}
