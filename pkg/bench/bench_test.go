package bench

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/store/pgtest"
)

// figures are the JSON paths a report must always have.
var figures = []string{
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
	"backlog.events", "backlog.rss_mib", "backlog.heap_mib", "backlog.drain_secs", "backlog.drain_per_sec",
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

var (
	buildOnce sync.Once
	binDir    string
	builtBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir) // a test binary; nothing to report
	}
	os.Exit(code)
}

// buildBridge builds the real binary once per test run; TestMain removes it.
func buildBridge(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "bridge-bin-")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(binDir, "bridge")
		cmd := exec.Command("go", "build", "-o", builtBin, "github.com/bridge-dev/bridge")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// TestBacklogChild runs serve as a child process (the real binary) and
// queues a small backlog while Dify is paused: every figure is reported and
// the drain answers everything once.
func TestBacklogChild(t *testing.T) {
	o := &Options{Backlog: 60, Concurrency: 8, Workers: 4, Conversations: 5, DrainTimeout: 30 * time.Second, Bin: buildBridge(t)}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	rep, err := Run(t.Context(), o, Env{Log: &log})
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, log.String())
	}
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, p := range figures {
		if _, ok := lookupPath(m, p); !ok {
			t.Errorf("report has no %s", p)
		}
	}
	if rep.Config.Serve != "child process" || rep.Backlog == nil || rep.Backlog.Events != 60 || !rep.Correctness.OK ||
		rep.Correctness.AnsweredOnce != 60 {
		t.Errorf("report = %+v, backlog %+v", rep.Correctness, rep.Backlog)
	}
	if rep.Memory.IdleRSSMiB <= 0 || rep.Backlog.RSSMiB <= 0 {
		t.Errorf("memory of the child not measured: %+v, %+v", rep.Memory, rep.Backlog)
	}
	// While Dify is paused every worker waits on it; the sample then is the
	// child's own.
	if w := rep.Memory.Waiting; w == nil || w.DifyCalls != int64(o.Workers) || w.StackMiB <= 0 || w.HeapMiB <= 0 ||
		w.Goroutines < int64(o.Workers) || w.PerCallKiB <= 0 || rep.Memory.Simulators {
		t.Errorf("memory while calls wait on Dify = %+v (includes simulators: %v)", w, rep.Memory.Simulators)
	}
	if rep.Durability.JournalMode != "wal" || rep.Durability.Synchronous != "FULL" {
		t.Errorf("durability = %+v, want wal and FULL", rep.Durability)
	}
}

// TestReplicasOnPostgres: two serve processes on a PostgreSQL database, in
// a schema the bench creates and drops, behind its balancer: every message
// answered once, the durability PostgreSQL's, both replicas' work counted.
func TestReplicasOnPostgres(t *testing.T) {
	base := pgtest.URL(t) // the bench makes its own schema beside this test's
	o := &Options{Duration: time.Second, Rate: 100, Concurrency: 8, Workers: 4, Conversations: 10,
		DrainTimeout: 30 * time.Second, Bin: buildBridge(t), Database: base, Replicas: 2}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	schemas := func() int {
		var n int
		if err := db.QueryRow("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'bridge_bench_%'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := schemas()
	var log strings.Builder
	rep, err := Run(t.Context(), o, Env{Log: &log})
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, log.String())
	}
	if !rep.Correctness.OK || rep.Correctness.Messages == 0 {
		t.Errorf("correctness = %+v", rep.Correctness)
	}
	if rep.Durability.JournalMode != "postgres" || rep.Durability.Synchronous != "on" || rep.Config.Replicas != 2 {
		t.Errorf("durability %+v, config %+v", rep.Durability, rep.Config)
	}
	// Synchronous commits counted by bridge, WAL flushes by the server
	// (shared with whatever else runs on it, so only their presence is
	// checked).
	if rep.Journal.Writes < rep.Webhooks.Accepted || rep.Journal.DBBytes == 0 || rep.Journal.SyncCommits < rep.Webhooks.Accepted ||
		rep.Journal.Fsyncs <= 0 {
		t.Errorf("journal = %+v for %d webhooks", rep.Journal, rep.Webhooks.Accepted)
	}
	if !strings.Contains(rep.Command, "--replicas 2") {
		t.Errorf("command %q", rep.Command)
	}
	if after := schemas(); after != before {
		t.Errorf("%d bench schemas before the run, %d after: the bench's schema was left behind", before, after)
	}
}

// TestCustomersChild: customers who write at once, alone or after a flood
// on the other route, are each answered once and their time to answer is
// reported; with a slow Dify it includes Dify's time. It asserts no speed.
func TestCustomersChild(t *testing.T) {
	bin := buildBridge(t)
	for _, tc := range []struct {
		name  string
		o     Options
		route int
	}{
		{"slow AI", Options{Customers: 12, DifyLatency: 200 * time.Millisecond}, 1},
		{"after a flood", Options{Customers: 6, Flood: 40, Conversations: 5}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Concurrency, o.Workers, o.DrainTimeout, o.Bin = 8, 16, 30*time.Second, bin
			if o.Conversations == 0 {
				o.Conversations = 1
			}
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			var log strings.Builder
			rep, err := Run(t.Context(), &o, Env{Log: &log})
			if err != nil {
				t.Fatalf("bench: %v\n%s", err, log.String())
			}
			c := rep.Customers
			if c == nil || c.Count != o.Customers || c.Answered != int64(o.Customers) || c.Route != tc.route {
				t.Fatalf("customers = %+v", c)
			}
			if want := int64(o.Flood + o.Customers); !rep.Correctness.OK || rep.Correctness.AnsweredOnce != want {
				t.Errorf("correctness = %+v, want %d answered once", rep.Correctness, want)
			}
			if c.FloodMessages != int64(o.Flood) || (o.Flood > 0) != (c.FloodDrainSecs > 0) {
				t.Errorf("flood figures = %+v for a flood of %d", c, o.Flood)
			}
			if l := c.TimeToAnswerMS; l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.Max ||
				l.P50 < float64(o.DifyLatency/time.Millisecond) {
				t.Errorf("time to answer = %+v with a Dify taking %s", l, o.DifyLatency)
			}
			if rep.Memory.PeakRSSMiB <= 0 {
				t.Errorf("peak memory not measured: %+v", rep.Memory)
			}
		})
	}
}

// TestInProcessNeedsAStarter: without a way to start serve in process, an
// in-process run says so instead of panicking.
func TestInProcessNeedsAStarter(t *testing.T) {
	o := &Options{Duration: time.Second, Concurrency: 1, Workers: 1, Conversations: 1, DrainTimeout: time.Second, InProcess: true}
	if _, err := Run(t.Context(), o, Env{}); err == nil || !strings.Contains(err.Error(), "in process") {
		t.Errorf("err = %v", err)
	}
}

func TestVerdict(t *testing.T) {
	all := func(int) bool { return true }
	for _, tc := range []struct {
		name      string
		accepted  func(int) bool
		counts    []int32
		misplaced int64
		want      Correctness
	}{
		{"OK", all, []int32{1, 1, 1}, 0, Correctness{Messages: 3, AnsweredOnce: 3, OK: true}},
		{"Lost", all, []int32{1, 0, 1}, 0, Correctness{Messages: 3, AnsweredOnce: 2, Lost: 1}},
		{"Duplicated", all, []int32{1, 2, 1}, 0, Correctness{Messages: 3, AnsweredOnce: 2, Duplicated: 1}},
		{"AnswerToRefused", func(i int) bool { return i != 1 }, []int32{1, 1, 1}, 0,
			Correctness{Messages: 2, AnsweredOnce: 2, Duplicated: 1}},
		{"Misplaced", all, []int32{1, 1}, 1, Correctness{Messages: 2, AnsweredOnce: 2, Misplaced: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Verdict(len(tc.counts), tc.accepted, tc.counts, tc.misplaced); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := Options{Duration: time.Second, Concurrency: 1, Workers: 1, Conversations: 1, DrainTimeout: time.Second}
	for _, tc := range []struct {
		flag string
		set  func(*Options)
	}{
		{"--concurrency", func(o *Options) { o.Concurrency = 0 }},
		{"--rate", func(o *Options) { o.Rate = -1 }},
		{"--prefill", func(o *Options) { o.Prefill = "lots" }},
		{"--duration", func(o *Options) { o.Duration = 0 }},
		{"--database", func(o *Options) { o.Database = "bridge.db" }},
		{"--replicas", func(o *Options) { o.Replicas = 2 }},
		{"--replicas", func(o *Options) { o.Database, o.Replicas, o.InProcess = "postgres://db/x", 2, true }},
		{"--prefill", func(o *Options) { o.Database, o.Prefill = "postgres://db/x", "1MiB" }},
		{"--customers", func(o *Options) { o.Customers = -1 }},
		{"--flood", func(o *Options) { o.Flood = 10 }},
		{"--customers", func(o *Options) { o.Customers, o.Backlog = 10, 10 }},
		{"--memory-limit", func(o *Options) { o.MemoryLimit = "lots" }},
		{"--memory-limit", func(o *Options) { o.MemoryLimit = "8MiB" }},
		{"--memory-limit", func(o *Options) { o.MemoryLimit, o.Profile = "96MiB", "prof" }},
	} {
		o := ok
		tc.set(&o)
		oe, isOE := o.Validate().(*OptionError)
		if !isOE || oe.Flag != tc.flag || !strings.HasPrefix(oe.Example, "bridge bench "+tc.flag) {
			t.Errorf("%s: got %#v", tc.flag, oe)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid options: %v", err)
	}
	o := ok
	o.CPUProfile = "cpu.out"
	if err := o.Validate(); err != nil || !o.InProcess {
		t.Errorf("--cpuprofile does not imply in process: %v, %v", err, o.InProcess)
	}
	o = ok
	o.Profile = "prof"
	if err := o.Validate(); err != nil || !o.InProcess {
		t.Errorf("--profile does not imply in process: %v, %v", err, o.InProcess)
	}
	o = ok
	o.MemoryLimit = "96MiB"
	if err := o.Validate(); err != nil || o.InProcess {
		t.Errorf("--memory-limit with serve as a child: %v, in process %v", err, o.InProcess)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "512MiB": 512 << 20, "4096": 4096, "1.5k": 1536, "2 GB": 2 << 30} {
		if n, err := ParseSize(in); err != nil || n != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, n, err, want)
		}
	}
	for _, in := range []string{"lots", "-1M", ""} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}
