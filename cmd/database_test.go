package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOnlyServeAndRoutesAddCreateTheDatabase: every other command, pointed
// at a database that does not exist, says which path it tried and where the
// path came from, exits 2, and creates nothing.
func TestOnlyServeAndRoutesAddCreateTheDatabase(t *testing.T) {
	dir := isolate(t)
	t.Chdir(dir)
	missing := filepath.Join(dir, "nonexistent", "dir", "x.db")
	var tr transcript
	tr.dir = dir
	run := func(want int, args ...string) cliResult {
		t.Helper()
		res := runCLI(t, args...)
		tr.add(args, res)
		if res.Code != want {
			t.Errorf("bridge %s: exit %d, want %d\n%s%s", strings.Join(args, " "), res.Code, want, res.Out, res.Err)
		}
		return res
	}
	for _, args := range [][]string{
		{"routes", "list"}, {"routes", "show", "1"}, {"routes", "disable", "1"}, {"routes", "remove", "1"},
		{"events", "list"}, {"events", "show", "1"},
		{"conversations", "list"}, {"conversations", "reset", "1"},
		{"replay", "1"}, {"replay", "1", "--dry-run"},
	} {
		res := run(2, append(args, "--db", missing)...)
		if !strings.Contains(res.Err, missing+" does not exist (the path from --db)") {
			t.Errorf("%v: %q", args, res.Err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nonexistent")); !os.IsNotExist(err) {
		t.Fatalf("a command created %s", filepath.Join(dir, "nonexistent"))
	}

	// The default path, in an empty folder.
	res := run(2, "routes", "list")
	if !strings.Contains(res.Err, "(the path is the default, relative to "+dir+")") {
		t.Errorf("default path: %q", res.Err)
	}
	// The environment, and the config file.
	t.Setenv("BRIDGE_DATABASE", filepath.Join(dir, "env.db"))
	if res = run(2, "events", "list"); !strings.Contains(res.Err, "(the path from BRIDGE_DATABASE)") {
		t.Errorf("env path: %q", res.Err)
	}
	t.Setenv("BRIDGE_DATABASE", "")
	cfgFile := filepath.Join(dir, "bridge.toml")
	if err := os.WriteFile(cfgFile, []byte("database = \"file.db\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if res = run(2, "conversations", "list"); !strings.Contains(res.Err, "(the path from the database key in bridge.toml)") {
		t.Errorf("file path: %q", res.Err)
	}
	for _, name := range []string{"bridge.db", "env.db", "file.db"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("a command created %s", name)
		}
	}

	// routes add creates it; then reading works.
	run(0, "routes", "add", "--inbox", "3", "--dify-key", testDifyKey, "--no-verify")
	if _, err := os.Stat(filepath.Join(dir, "file.db")); err != nil {
		t.Errorf("routes add did not create the database: %v", err)
	}
	run(0, "routes", "list")
	checkGolden(t, "missing_db", tr.String())
}
