package cmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"
)

// benchFigures are the JSON paths `bridge bench --json` must always print.
var benchFigures = []string{
	"command", "machine.cpus", "config.serve", "durability.journal_mode", "durability.synchronous",
	"startup.ready_ms", "startup.journal_bytes",
	"webhooks.sent", "webhooks.accepted", "webhooks.errors", "webhooks.acks_per_sec",
	"webhooks.ack_latency_ms.p50", "webhooks.ack_latency_ms.p90", "webhooks.ack_latency_ms.p99", "webhooks.ack_latency_ms.max",
	"end_to_end.answered", "end_to_end.answered_per_sec",
	"end_to_end.latency_ms.p50", "end_to_end.latency_ms.p90", "end_to_end.latency_ms.p99", "end_to_end.latency_ms.max",
	"end_to_end.bridge_share_ms.p50", "end_to_end.bridge_share_ms.p99", "end_to_end.dify_ms.p50",
	"journal.commits", "journal.fsyncs", "journal.writes", "journal.fsyncs_per_webhook", "journal.commits_per_webhook",
	"journal.writes_per_commit", "journal.wal_bytes_max",
	"cpu.serve_secs", "cpu.serve_ms_per_message",
	"memory.idle_rss_mib", "memory.idle_heap_mib", "memory.load_rss_mib", "memory.load_heap_mib", "memory.peak_rss_mib",
	"correctness.messages", "correctness.answered_once", "correctness.lost", "correctness.duplicated", "correctness.ok",
}

func lookupPath(m map[string]any, path string) (any, bool) {
	var v any = m
	for part := range strings.SplitSeq(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = obj[part]; !ok {
			return nil, false
		}
	}
	return v, true
}

func decodeBench(t *testing.T, out string) (map[string]any, benchReport) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("bench --json output is not JSON: %v\n%s", err, out)
	}
	var rep benchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	for _, p := range benchFigures {
		if _, ok := lookupPath(m, p); !ok {
			t.Errorf("bench --json has no %s", p)
		}
	}
	return m, rep
}

// TestBenchJSON runs a short bench in-process, as `bridge bench` would be
// run, and checks that it reports every figure and that every message was
// answered exactly once. It asserts no speed.
func TestBenchJSON(t *testing.T) {
	r := runCLI(t, "bench", "--duration", "1s", "--concurrency", "4", "--rate", "50", "--conversations", "7",
		"--in-process", "--json")
	if r.Code != ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Out, r.Err)
	}
	_, rep := decodeBench(t, r.Out)
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

// TestBenchBacklogChild runs serve as a child process (the real binary) and
// queues a small backlog while Dify is paused: the backlog figures are
// reported and the drain answers everything once.
func TestBenchBacklogChild(t *testing.T) {
	bin := buildBridge(t)
	var out, errOut bytes.Buffer
	a := &app{io: IO{Out: &out, Err: &errOut}, v: viper.New(), now: time.Now, json: true}
	o := &benchOptions{backlog: 60, concurrency: 8, workers: 4, conversations: 5, drainTimeout: 30 * time.Second, bin: bin}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if err := runBench(t.Context(), a, o); err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	m, rep := decodeBench(t, out.String())
	for _, p := range []string{"backlog.events", "backlog.rss_mib", "backlog.heap_mib", "backlog.drain_secs", "backlog.drain_per_sec"} {
		if _, ok := lookupPath(m, p); !ok {
			t.Errorf("bench --backlog --json has no %s", p)
		}
	}
	if rep.Config.Serve != "child process" || rep.Backlog == nil || rep.Backlog.Events != 60 || !rep.Correctness.OK ||
		rep.Correctness.AnsweredOnce != 60 {
		t.Errorf("report = %+v, backlog %+v", rep.Correctness, rep.Backlog)
	}
	if rep.Memory.IdleRSSMiB <= 0 || rep.Backlog.RSSMiB <= 0 {
		t.Errorf("memory of the child not measured: %+v, %+v", rep.Memory, rep.Backlog)
	}
}

// TestBenchFailsWhenAnAnswerIsLost: the simulated Chatwoot refuses one
// answer (422, which bridge does not retry), so that message is handed to a
// human instead of answered. bench must say so and exit 1.
func TestBenchFailsWhenAnAnswerIsLost(t *testing.T) {
	var out, errOut bytes.Buffer
	a := &app{io: IO{Out: &out, Err: &errOut}, v: viper.New(), now: time.Now, json: true}
	o := &benchOptions{duration: 500 * time.Millisecond, concurrency: 2, rate: 20, workers: 2, conversations: 3,
		drainTimeout: 5 * time.Second, inProcess: true, fault: faultRefusePost}
	if err := o.validate(); err != nil {
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
	_, rep := decodeBench(t, out.String())
	if rep.Correctness.OK || rep.Correctness.Lost != 1 || rep.Correctness.Duplicated != 0 {
		t.Errorf("correctness = %+v, want exactly one lost", rep.Correctness)
	}
}

func TestBenchVerdict(t *testing.T) {
	all := func(int) bool { return true }
	for _, tc := range []struct {
		name      string
		accepted  func(int) bool
		counts    []int32
		misplaced int64
		want      benchCorrectness
	}{
		{"OK", all, []int32{1, 1, 1}, 0, benchCorrectness{Messages: 3, AnsweredOnce: 3, OK: true}},
		{"Lost", all, []int32{1, 0, 1}, 0, benchCorrectness{Messages: 3, AnsweredOnce: 2, Lost: 1}},
		{"Duplicated", all, []int32{1, 2, 1}, 0, benchCorrectness{Messages: 3, AnsweredOnce: 2, Duplicated: 1}},
		{"AnswerToRefused", func(i int) bool { return i != 1 }, []int32{1, 1, 1}, 0,
			benchCorrectness{Messages: 2, AnsweredOnce: 2, Duplicated: 1}},
		{"Misplaced", all, []int32{1, 1}, 1, benchCorrectness{Messages: 2, AnsweredOnce: 2, Misplaced: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := benchVerdict(len(tc.counts), tc.accepted, tc.counts, tc.misplaced); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--concurrency", "0"},
		{"bench", "--rate", "-1"},
		{"bench", "--prefill", "lots"},
		{"bench", "--duration", "0s"},
	} {
		if r := runCLI(t, args...); r.Code != ExitUsage || !strings.Contains(r.Err, "Try:") {
			t.Errorf("%v: exit %d, stderr %q; want usage error", args, r.Code, r.Err)
		}
	}
	if n, err := parseSize("1GiB"); err != nil || n != 1<<30 {
		t.Errorf("parseSize(1GiB) = %d, %v", n, err)
	}
}
