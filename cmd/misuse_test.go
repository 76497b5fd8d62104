package cmd

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// TestMisuse: typos and wrong values are usage errors (exit 2) that say
// what was wrong and what to try; config problems name the key and file.
func TestMisuse(t *testing.T) {
	dir := isolate(t)
	db := filepath.Join(dir, "bridge.db")
	badValue := filepath.Join(dir, "bad-value.toml")
	unknownKey := filepath.Join(dir, "unknown-key.toml")
	listenFile := filepath.Join(dir, "listen.toml")
	if err := os.WriteFile(badValue, []byte("[dify]\ntimeout = \"abc\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unknownKey, []byte("listen = \"127.0.0.1:8080\"\n\n[dify]\ntimout = \"30s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want []string // in stderr
	}{
		{[]string{"serv"}, []string{`unknown command "serv"`, "serve"}},
		{[]string{"routes", "lst"}, []string{`unknown command "lst"`, "Try: bridge routes list"}},
		{[]string{"events", "lsit"}, []string{"Try: bridge events list"}},
		{[]string{"conversations", "rest", "4"}, []string{"Try: bridge conversations reset"}},
		{[]string{"events", "list", "--stauts", "failed"}, []string{"unknown flag: --stauts", "Try: bridge events list --status"}},
		{[]string{"routes", "add", "--inbx", "3"}, []string{"--inbox"}},
		{[]string{"events", "show"}, []string{"Try: bridge events show 17"}},
		{[]string{"events", "show", "1", "2"}, []string{"Try:"}},
		{[]string{"events", "list", "--limit", "abc"}, []string{`"abc"`, "--limit", "Try:"}},
		{[]string{"events", "list", "--limit", "0"}, []string{"--limit must be positive", "Try:"}},
		{[]string{"events", "list", "--status", "nope"}, []string{`bad --status "nope"`, "Try: --status rejected|ignored"}},
		{[]string{"events", "list", "--since", "1x"}, []string{`"1x"`, "--since", "Try:"}},
		{[]string{"events", "list", "--conversation", "x"}, []string{"--conversation", "Try:"}},
		{[]string{"version", "now"}, []string{"Try:"}},
		{[]string{"events", "list", "--config", "/nope.toml"}, []string{"/nope.toml", "not found"}},
		{[]string{"routes", "list", "--config", badValue}, []string{badValue, "dify.timeout", `"abc"`}},
		{[]string{"routes", "list", "--config", unknownKey}, []string{unknownKey, "dify.timout", "unknown key", "dify.timeout"}},
		// --json only where a command prints JSON.
		{[]string{"demo", "--json"}, []string{"unknown flag: --json"}},
		{[]string{"serve", "--json"}, []string{"unknown flag: --json"}},
		// The file sets a good listen; the flag's bad one is the flag's fault.
		{[]string{"serve", "--listen", "127.0.0.1:99999", "--config", listenFile}, []string{`--listen: invalid address "127.0.0.1:99999"`, "Try: bridge serve --help"}},
	}
	if err := os.WriteFile(listenFile, []byte("listen = \"127.0.0.1:8080\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var tr transcript
	for _, tc := range cases {
		res := runCLI(t, append(tc.args, "--db", db)...)
		if strings.Contains(res.Err, "config:") && slices.Contains(tc.args, "--listen") {
			t.Errorf("bridge %s: a flag's value blamed on the config file:\n%s", strings.Join(tc.args, " "), res.Err)
		}
		tr.add(tc.args, res)
		if res.Code != ExitUsage {
			t.Errorf("bridge %s: exit %d, want 2\n%s", strings.Join(tc.args, " "), res.Code, res.Err)
		}
		if res.Out != "" {
			t.Errorf("bridge %s: printed to stdout: %q", strings.Join(tc.args, " "), res.Out)
		}
		for _, s := range tc.want {
			if !strings.Contains(res.Err, s) {
				t.Errorf("bridge %s: stderr does not mention %q:\n%s", strings.Join(tc.args, " "), s, res.Err)
			}
		}
		if n := strings.Count(res.Err, "Error:"); n != 1 {
			t.Errorf("bridge %s: %d Error: lines, want 1:\n%s", strings.Join(tc.args, " "), n, res.Err)
		}
	}
	checkGolden(t, "misuse", strings.ReplaceAll(tr.String(), dir, "<tmp>"))
}

// TestHelpHasExamples: every command's --help shows examples.
func TestHelpHasExamples(t *testing.T) {
	isolate(t)
	root := NewRoot(IO{}, viper.New())
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		for _, sc := range c.Commands() {
			// cobra's own commands (help, completion) are not bridge's.
			if sc.Name() == "help" || sc.Name() == "completion" {
				continue
			}
			path := strings.Fields(sc.CommandPath())[1:]
			res := runCLI(t, append(path, "--help")...)
			n++
			if res.Code != 0 || !strings.Contains(res.Out, "Example") {
				t.Errorf("bridge %s --help: exit %d, no examples:\n%s", strings.Join(path, " "), res.Code, res.Out)
			}
			walk(sc)
		}
	}
	walk(root)
	if n < 15 {
		t.Errorf("walked only %d commands", n)
	}
}
