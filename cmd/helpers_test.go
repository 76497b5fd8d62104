package cmd

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/bridge-dev/bridge/pkg/config"
)

// update rewrites the golden files instead of comparing: go test ./cmd -update
var update = flag.Bool("update", false, "rewrite golden files")

// testEpoch is when seeded journal entries are received; testNow is the
// clock of the CLI under test, half an hour later. Both are UTC, so output
// does not depend on the machine's time zone.
var (
	testEpoch = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	testNow   = testEpoch.Add(30 * time.Minute)
)

// Credentials the tests hand to bridge. None of them may ever show up in
// the output of a command.
const (
	testDifyKey       = "app-SupportKeyNeverPrinted7Qz"
	testDifyKey2      = "app-EmailKeyNeverPrinted0042"
	testBotToken      = "bot-token-never-printed-8842"
	testWebhookToken  = "hook-token-never-printed-1177"
	testWebhookSecret = "hook-secret-never-printed-5531"
	completionKey     = "app-CompletionKeyNeverPrinted1"
	intakeKey         = "app-IntakeKeyNeverPrinted00002"
	revokedKey        = "app-RevokedKeyNeverPrinted0003"
)

var testSecrets = []string{testDifyKey, testDifyKey2, testBotToken, testWebhookToken, testWebhookSecret,
	completionKey, intakeKey, revokedKey}

// cliResult is what one run of the CLI printed and its exit code.
type cliResult struct {
	Out, Err string
	Code     int
}

// cliRun is what one run of the CLI reads besides its arguments.
type cliRun struct {
	Stdin string
	Now   func() time.Time // default: testNow
}

// runCLI runs bridge in-process, as main does through Execute.
func runCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	return cliRun{}.run(t, args...)
}

func (r cliRun) run(t *testing.T, args ...string) cliResult {
	t.Helper()
	var out, errOut bytes.Buffer
	now := r.Now
	if now == nil {
		now = func() time.Time { return testNow }
	}
	code := executeForTest(t.Context(), IO{In: strings.NewReader(r.Stdin), Out: &out, Err: &errOut}, now, args...)
	return cliResult{Out: out.String(), Err: errOut.String(), Code: code}
}

// executeForTest mirrors Execute (NewRoot, SetArgs, ExecuteContext, then
// report for the exit code) with the output's clock fixed.
func executeForTest(ctx context.Context, io IO, now func() time.Time, args ...string) int {
	root := newRoot(io, viper.New(), now)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		return report(io, root, err)
	}
	return ExitOK
}

// isolate keeps a test from reading the developer's configuration: every
// BRIDGE_* variable is emptied (viper ignores empty ones) and no config file
// is found. It returns a fresh directory.
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "BRIDGE_") {
			t.Setenv(k, "")
		}
	}
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("HOME", dir)
	t.Setenv("NO_COLOR", "1")
	return dir
}

// goldenDir is absolute, so a test may change directory (t.Chdir).
var goldenDir = func() string {
	d, err := filepath.Abs(filepath.Join("..", "testdata", "golden"))
	if err != nil {
		panic(err)
	}
	return d
}()

// checkGolden compares got with testdata/golden/name.golden byte for byte
// and reports the first differing line; -update rewrites the file.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join(goldenDir, name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./cmd -update writes it)", err)
	}
	if got == string(want) {
		return
	}
	gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
	for i := range max(len(gl), len(wl)) {
		g, w := "<end of output>", "<end of file>"
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Errorf("%s: line %d differs\n got: %s\nwant: %s\n(if the change is intended: go test ./cmd -update, then review the diff)", path, i+1, g, w)
			return
		}
	}
}

var (
	reUUID     = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	reDuration = regexp.MustCompile(`\((\d+ms|\d+\.\d+s|\d+m\d+s)\)`)
	reLoopback = regexp.MustCompile(`127\.0\.0\.1:\d+`)
	reLogLine  = regexp.MustCompile(`(?m)^\{"time":.*\n`)
)

// scrub replaces what changes from run to run (Dify's ids, timings,
// loopback ports) with fixed placeholders.
func scrub(s string) string {
	s = reUUID.ReplaceAllString(s, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx") // same width: tables stay aligned
	s = reDuration.ReplaceAllString(s, "(<dur>)")
	return reLoopback.ReplaceAllString(s, "127.0.0.1:<port>")
}

// transcript records commands and what they printed, for one golden file.
type transcript struct {
	b   strings.Builder
	dir string // shown as <tmp>
}

func (tr *transcript) add(args []string, r cliResult) {
	if tr.dir != "" {
		r.Out, r.Err = strings.ReplaceAll(r.Out, tr.dir, "<tmp>"), strings.ReplaceAll(r.Err, tr.dir, "<tmp>")
	}
	line := strings.Join(args, " ")
	if tr.dir != "" {
		line = strings.ReplaceAll(line, tr.dir, "<tmp>")
	}
	for _, s := range testSecrets {
		// Secrets given on the command line stay out of golden files.
		line = strings.ReplaceAll(line, s, config.Mask(s))
	}
	fmt.Fprintf(&tr.b, "$ bridge %s\n", line)
	tr.b.WriteString(r.Out)
	if e := reLogLine.ReplaceAllString(r.Err, ""); e != "" {
		tr.b.WriteString("[stderr]\n")
		tr.b.WriteString(e)
	}
	if r.Code != 0 {
		fmt.Fprintf(&tr.b, "[exit %d]\n", r.Code)
	}
	tr.b.WriteString("\n")
}

func (tr *transcript) String() string { return scrub(tr.b.String()) }
