package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletion: route ids complete from the database with their names,
// and --status, --state and --mode complete their values.
func TestCompletion(t *testing.T) {
	w := newWorld(t)
	seedJournal(w)
	w.mustRun(0, "routes", "add", "--inbox", "2", "--dify-key", testDifyKey2, "--no-verify")
	w.mustRun(0, "routes", "disable", "2")
	complete := func(args ...string) []string {
		t.Helper()
		res := runCLI(t, append([]string{"__complete", "--db", w.db}, args...)...)
		if res.Code != 0 {
			t.Fatalf("__complete %v: exit %d %s", args, res.Code, res.Err)
		}
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(res.Out), "\n") {
			if !strings.HasPrefix(l, ":") {
				out = append(out, l)
			}
		}
		return out
	}
	for _, verb := range []string{"show", "enable", "disable", "remove"} {
		if got := strings.Join(complete("routes", verb, ""), "|"); got != "1\tsupport, inbox 1|2\tinbox 2, disabled" {
			t.Errorf("routes %s: %q", verb, got)
		}
	}
	if got := strings.Join(complete("routes", "show", "2"), "|"); got != "2\tinbox 2, disabled" {
		t.Errorf("routes show 2…: %q", got)
	}
	if got := complete("routes", "show", "1", ""); len(got) != 0 {
		t.Errorf("a second id: %q", got)
	}
	if got := strings.Join(complete("events", "list", "--status", ""), ","); got != "rejected,ignored,accepted,working,answered,handed_off,superseded,failed" {
		t.Errorf("--status: %q", got)
	}
	if got := strings.Join(complete("conversations", "list", "--state", ""), ","); got != "bot,human" {
		t.Errorf("--state: %q", got)
	}
	if got := strings.Join(complete("routes", "add", "--mode", ""), ","); got != "auto,draft" {
		t.Errorf("--mode: %q", got)
	}
	// Completing never creates a database.
	missing := filepath.Join(w.dir, "none.db")
	runCLI(t, "__complete", "--db", missing, "routes", "show", "")
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("completion created %s", missing)
	}
}

// TestManPages: bridge man writes one page per command in section 1, which
// says which bridge it documents.
func TestManPages(t *testing.T) {
	isolate(t)
	dir := filepath.Join(t.TempDir(), "man")
	t.Setenv("SOURCE_DATE_EPOCH", "1767225600")
	if res := runCLI(t, "man", dir); res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Err)
	}
	for _, name := range []string{"bridge.1", "bridge-serve.1", "bridge-routes-add.1", "bridge-replay.1", "bridge-config.1"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !strings.Contains(string(data), `.TH "BRIDGE" "1" "Jan 2026"`) {
			t.Errorf("%s: no section 1 header of the commit's date:\n%.200s", name, data)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "bridge.1")); !strings.Contains(string(data), "Not iproute2's bridge(8)") {
		t.Error("bridge.1 does not tell itself apart from iproute2's bridge(8)")
	}
	if _, err := os.Stat(filepath.Join(dir, "bridge-man.1")); err == nil {
		t.Error("the hidden man command has a page")
	}
}
