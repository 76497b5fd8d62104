package cmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/bridge-dev/bridge/pkg/bench"
)

// TestBenchJSON runs a short bench in-process, as `bridge bench` would be
// run, and checks that its JSON is a report in which every message was
// answered exactly once. It asserts no speed.
func TestBenchJSON(t *testing.T) {
	r := runCLI(t, "bench", "--duration", "1s", "--concurrency", "4", "--rate", "50", "--conversations", "7",
		"--in-process", "--json")
	if r.Code != ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Out, r.Err)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.Out), &rep); err != nil {
		t.Fatalf("bench --json output is not a report: %v\n%s", err, r.Out)
	}
	c := rep.Correctness
	if !c.OK || c.Messages == 0 || c.AnsweredOnce != c.Messages || c.Lost != 0 || c.Duplicated != 0 {
		t.Errorf("correctness = %+v", c)
	}
	if rep.Webhooks.Accepted != c.Messages || rep.EndToEnd.Answered != c.Messages {
		t.Errorf("accepted %d, answered %d, messages %d", rep.Webhooks.Accepted, rep.EndToEnd.Answered, c.Messages)
	}
	if rep.Durability.JournalMode != "wal" || rep.Durability.Synchronous != "FULL" {
		t.Errorf("durability = %+v, want wal and FULL", rep.Durability)
	}
	if rep.Journal.Fsyncs == 0 || rep.Journal.Writes < rep.Webhooks.Accepted {
		t.Errorf("journal = %+v for %d webhooks", rep.Journal, rep.Webhooks.Accepted)
	}
}

// TestBenchFailsWhenAnAnswerIsLost: the simulated Chatwoot refuses one
// answer (422, which bridge does not retry), so that message is handed to a
// human instead of answered. bench must say so and exit 1.
func TestBenchFailsWhenAnAnswerIsLost(t *testing.T) {
	var out, errOut bytes.Buffer
	a := &app{io: IO{Out: &out, Err: &errOut}, v: viper.New(), now: time.Now, json: true}
	// A conversation per message: a later message in the conversation of
	// the refused answer would be lost too (superseded by the handoff) or
	// ignored, depending on how fast the handoff goes.
	o := &bench.Options{Duration: 500 * time.Millisecond, Concurrency: 2, Rate: 20, Workers: 2, Conversations: 50,
		DrainTimeout: 5 * time.Second, InProcess: true, Fault: bench.FaultRefusePost}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	err := runBench(t.Context(), a, o)
	var fe *failedError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, want a failure (exit 1)\n%s", err, errOut.String())
	}
	if code := report(a.io, nil, err); code != ExitFailed {
		t.Errorf("exit code %d, want %d", code, ExitFailed)
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("bench --json output is not a report: %v\n%s", err, out.String())
	}
	// The refused answer hands its conversation to a human, so that message
	// and any later one of the same conversation already queued go
	// unanswered by the bot; nothing may be doubled or misplaced.
	if rep.Correctness.OK || rep.Correctness.Lost < 1 || rep.Correctness.Duplicated != 0 || rep.Correctness.Misplaced != 0 {
		t.Errorf("correctness = %+v, want some lost, none doubled", rep.Correctness)
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--concurrency", "0"},
		{"bench", "--rate", "-1"},
		{"bench", "--prefill", "lots"},
		{"bench", "--duration", "0s"},
		{"bench", "--flood", "100"},
		{"bench", "--memory-limit", "lots"},
		{"bench", "--memory-limit", "96MiB", "--in-process"},
	} {
		if r := runCLI(t, args...); r.Code != ExitUsage || !strings.Contains(r.Err, "Try:") {
			t.Errorf("%v: exit %d, stderr %q; want usage error", args, r.Code, r.Err)
		}
	}
}

// TestBenchProfile: --profile writes heap and goroutine profiles and the
// runtime's memory figures, taken while the calls wait on Dify, and runs
// serve in process (the report says its memory includes the simulators).
func TestBenchProfile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "prof")
	r := runCLI(t, "bench", "--backlog", "30", "--concurrency", "4", "--workers", "4", "--conversations", "5",
		"--profile", dir, "--json")
	if r.Code != ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Out, r.Err)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.Out), &rep); err != nil {
		t.Fatalf("bench --json output is not a report: %v\n%s", err, r.Out)
	}
	if rep.Config.Serve != "in process" || !rep.Memory.Simulators || rep.Memory.Waiting == nil || rep.Memory.Waiting.DifyCalls != 4 {
		t.Errorf("serve %q, simulators included %v, waiting %+v", rep.Config.Serve, rep.Memory.Simulators, rep.Memory.Waiting)
	}
	for _, f := range []string{"heap.pprof", "goroutine.pprof"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	g, err := os.ReadFile(filepath.Join(dir, "goroutine.txt"))
	if err != nil || !strings.Contains(string(g), "dify.(*Client).Chat") {
		t.Errorf("goroutine profile taken while no call waited on Dify (%v):\n%.2000s", err, g)
	}
	var ms struct{ HeapInuse, StackInuse, Goroutines int64 }
	if data, err := os.ReadFile(filepath.Join(dir, "memstats.json")); err != nil || json.Unmarshal(data, &ms) != nil ||
		ms.HeapInuse <= 0 || ms.StackInuse <= 0 || ms.Goroutines <= 0 {
		t.Errorf("memstats.json: %+v, %v", ms, err)
	}
}
