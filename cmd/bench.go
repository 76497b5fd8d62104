package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/pkg/bench"
	"github.com/bridge-dev/bridge/pkg/config"
)

func newBenchCmd(a *app) *cobra.Command {
	o := &bench.Options{}
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput, latency and memory against simulated Chatwoot and Dify",
		Long: `Start a simulated Chatwoot and a simulated Dify on loopback and a real
'bridge serve' against them (its own temporary database, synchronous=FULL),
drive signed webhooks over real HTTP, and report:

  acks/s and ack latency (request written to first response byte; every ack
  is a committed, fsync'd journal entry), end-to-end latency (webhook in to
  answer received by the simulated Chatwoot) and bridge's own share of it
  (the time inside the simulated Dify subtracted), answered messages/s,
  resident memory and Go heap, journal transactions (fsyncs) per webhook,
  and correctness: every accepted message answered exactly once.

Load: --concurrency senders as fast as acks come back, or with --rate an
open loop offering that many webhooks per second (at most --concurrency in
flight). --backlog N instead queues N messages while Dify is paused (closed
loop, or at --rate), reports memory with the backlog on disk, then releases
Dify and reports the drain.

Time to answer: --customers N has N customers write at once, each in a
conversation of their own, and reports the time from each webhook to its
answer (p50, p90, p99, max) and serve's peak memory; with --dify-latency 6s
it shows how bridge copes with a slow AI. --flood M first sends M messages
on one route (as fast as acks come back, over --conversations), then the N
customers write on a second route: their time to answer shows whether they
wait behind the flood.

Memory: RSS and Go heap idle and under load, and a sample taken when the
most Dify calls were in flight (heap, goroutine stacks, goroutines, and RSS
above idle per call waiting on Dify). --profile DIR writes heap and
goroutine profiles and runtime.MemStats at that moment.

serve runs as a child process (this binary), so memory figures are its own;
--in-process runs it inside this process instead (memory then includes the
simulators; --cpuprofile and --profile imply it). Exits 1 when a message was lost or answered twice.

--database postgres://… runs on PostgreSQL (synchronous_commit=on) in a schema
the bench creates and drops; --replicas N starts N serve processes on it
behind a round-robin balancer (CPU and journal figures are their sum, memory
the first one's).`,
		Example: `  bridge bench
  bridge bench --duration 10s --concurrency 64 --json
  bridge bench --rate 1000 --duration 10s
  bridge bench --dify-latency 2s --concurrency 32 --workers 64
  bridge bench --backlog 100000
  bridge bench --customers 100 --dify-latency 6s
  bridge bench --customers 1000 --dify-latency 6s --profile prof
  bridge bench --customers 1000 --dify-latency 6s --memory-limit 96MiB
  bridge bench --flood 3000 --customers 10
  bridge bench --prefill 1GiB --duration 2s
  bridge bench --database "postgres://bridge@127.0.0.1:5432/bench" --replicas 2 --workers 32`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				var oe *bench.OptionError
				if errors.As(err, &oe) {
					return usagef(oe.Example, "%s", oe.Msg)
				}
				return err
			}
			return runBench(c.Context(), a, o)
		},
	}
	f := c.Flags()
	f.DurationVar(&o.Duration, "duration", 5*time.Second, "how long to offer load")
	f.IntVar(&o.Concurrency, "concurrency", 16, "webhooks in flight at most")
	f.Float64Var(&o.Rate, "rate", 0, "offered webhooks per second (0: as fast as acks come back)")
	f.DurationVar(&o.DifyLatency, "dify-latency", 0, "time the simulated Dify takes per answer")
	f.IntVar(&o.Backlog, "backlog", 0, "queue this many messages while Dify is paused, then drain them")
	f.IntVar(&o.Customers, "customers", 0, "this many customers write at once; report their time to answer")
	f.IntVar(&o.Flood, "flood", 0, "before the --customers, this many messages on another route")
	f.IntVar(&o.Workers, "workers", config.Defaults().Worker.Concurrency, "serve's worker.concurrency")
	f.IntVar(&o.Conversations, "conversations", 1000, "conversations the messages are spread over")
	f.BoolVar(&o.InProcess, "in-process", false, "run serve inside this process instead of as a child")
	f.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the load to this file (implies --in-process)")
	f.StringVar(&o.Profile, "profile", "", "write heap and goroutine profiles, taken when the most Dify calls wait, into this directory (implies --in-process)")
	f.StringVar(&o.Prefill, "prefill", "", "fill the journal with finished events up to this size before start (e.g. 1GiB)")
	f.StringVar(&o.MemoryLimit, "memory-limit", "", "serve's memory_limit, e.g. 96MiB (default: none)")
	f.DurationVar(&o.DrainTimeout, "drain-timeout", 60*time.Second, "give up waiting for answers after this long without progress")
	f.BoolVar(&o.Keep, "keep", false, "keep the bench database and print its path")
	f.StringVar(&o.Database, "database", "", "run on this PostgreSQL database, in a schema of the bench's own (default: a temporary SQLite file)")
	f.IntVar(&o.Replicas, "replicas", 1, "serve processes sharing the --database, webhooks round-robin over them")
	return c
}

// runBench runs the harness and prints its report; a message lost or
// answered twice exits 1.
func runBench(ctx context.Context, a *app, o *bench.Options) error {
	rep, err := bench.Run(ctx, o, bench.Env{Log: a.io.Err, StartInProcess: startBenchServer})
	if err != nil {
		return err
	}
	if a.json {
		if err := a.printJSON(rep); err != nil {
			return err
		}
	} else {
		printBench(a, rep)
	}
	if c := rep.Correctness; !c.OK {
		return &failedError{msg: fmt.Sprintf("bench: %d of %d messages lost, %d answered more than once, %d misplaced",
			c.Lost, c.Messages, c.Duplicated, c.Misplaced)}
	}
	return nil
}

// startBenchServer is serve in this process, quiet, for --in-process.
func startBenchServer(ctx context.Context, cfg *config.Config) (bench.Server, error) {
	s, err := startServer(ctx, cfg, newLogger(io.Discard, "info", "json", false, nil), serveTuning{})
	if err != nil {
		return nil, err
	}
	return benchServer{s}, nil
}

type benchServer struct{ *server }

func (s benchServer) Wait(ctx context.Context) error { return s.wait(ctx) }

// printBench is the report for a person.
func printBench(a *app, r *bench.Report) {
	out := a.io.Out
	st := a.styles()
	lat := func(l bench.Latency) string {
		return fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms", l.P50, l.P90, l.P99, l.Max)
	}
	fmt.Fprintln(out, st.bold.Render("bridge bench"), st.dim.Render(r.Command))
	serve := r.Config.Serve
	if r.Config.Replicas > 1 {
		serve = fmt.Sprintf("%d child processes", r.Config.Replicas)
	}
	fmt.Fprintf(out, "  machine      %d CPUs, %s/%s, %s; serve %s; journal %s, synchronous=%s\n",
		r.Machine.CPUs, r.Machine.GOOS, r.Machine.GOARCH, r.Machine.Go, serve, r.Durability.JournalMode, r.Durability.Synchronous)
	fmt.Fprintf(out, "  startup      ready in %.1f ms with a %.1f MiB journal\n", r.Startup.ReadyMS, bench.MiB(float64(r.Startup.JournalBytes)))
	w := r.Webhooks
	fmt.Fprintf(out, "  webhooks     %d sent, %d accepted, %d errors in %.2f s: %.0f durable acks/s\n",
		w.Sent, w.Accepted, w.Errors, w.Seconds, w.AcksPerSec)
	if w.OfferedPerSec > 0 {
		fmt.Fprintf(out, "               offered %.0f/s, %d sends started over 1 ms late\n", w.OfferedPerSec, w.LateSends)
	}
	fmt.Fprintf(out, "  ack latency  %s\n", lat(w.AckLatencyMS))
	e := r.EndToEnd
	fmt.Fprintf(out, "  end to end   %d answered, %.0f answers/s; %s\n", e.Answered, e.AnsweredPerSec, lat(e.LatencyMS))
	fmt.Fprintf(out, "  bridge share %s\n", lat(e.BridgeShareMS))
	fmt.Fprintf(out, "  dify         %s\n", lat(e.DifyMS))
	j := r.Journal
	if j.SyncCommits > 0 {
		fmt.Fprintf(out, "  journal      %d WAL flushes for %d synchronous commits (%d transactions, %d writes): %.2f flushes per webhook\n",
			j.Fsyncs, j.SyncCommits, j.Commits, j.Writes, j.FsyncsPerWebhook)
	} else {
		fmt.Fprintf(out, "  journal      %d fsyncs (%d transactions) for %d writes: %.2f fsyncs per webhook, %.1f writes per transaction; WAL at most %.1f MiB\n",
			j.Fsyncs, j.Commits, j.Writes, j.FsyncsPerWebhook, j.WritesPerCommit, bench.MiB(float64(j.WALBytes)))
	}
	fmt.Fprintf(out, "  cpu          serve %.2f s (%.3f ms per message)", r.CPU.ServeSecs, r.CPU.ServeMSPerMessage)
	if r.CPU.BenchSecs > 0 {
		fmt.Fprintf(out, "; simulators and senders %.2f s (%.3f ms per message)", r.CPU.BenchSecs, r.CPU.BenchMSPerMessage)
	}
	fmt.Fprintln(out)
	m := r.Memory
	fmt.Fprintf(out, "  memory       idle %.1f MiB RSS (heap %.1f); under load %.1f MiB RSS (heap %.1f); peak %.1f MiB",
		m.IdleRSSMiB, m.IdleHeapMiB, m.LoadRSSMiB, m.LoadHeapMiB, m.PeakRSSMiB)
	if m.Simulators {
		fmt.Fprint(out, st.dim.Render(" (serve in process: the simulators included)"))
	}
	fmt.Fprintln(out)
	if w := m.Waiting; w != nil {
		fmt.Fprintf(out, "  waiting      %d Dify calls at once: %.1f MiB RSS (heap %.1f, stacks %.1f, %d goroutines); %.1f KiB per call above idle\n",
			w.DifyCalls, w.RSSMiB, w.HeapMiB, w.StackMiB, w.Goroutines, w.PerCallKiB)
	}
	if c := r.Customers; c != nil {
		if c.FloodMessages > 0 {
			fmt.Fprintf(out, "  flood        %d messages on route 1 sent in %.1f s (%.0f queued when the customers wrote); its last answer %.1f s after its first webhook\n",
				c.FloodMessages, c.FloodSendSecs, c.FloodQueued, c.FloodDrainSecs)
		}
		fmt.Fprintf(out, "  customers    %d at once on route %d, %d answered; time to answer %s\n",
			c.Count, c.Route, c.Answered, lat(c.TimeToAnswerMS))
	}
	if bl := r.Backlog; bl != nil {
		fmt.Fprintf(out, "  backlog      %d events queued in %.1f s; %.1f MiB RSS (heap %.1f), journal %.1f MiB\n",
			bl.Events, bl.FillSecs, bl.RSSMiB, bl.HeapMiB, bench.MiB(float64(bl.JournalBytes)))
		fmt.Fprintf(out, "               drained in %.1f s: %.0f answers/s\n", bl.DrainSecs, bl.DrainPerSec)
	}
	c := r.Correctness
	verdict := st.ok.Render("✓ every accepted message answered exactly once")
	if !c.OK {
		verdict = st.bad.Render(fmt.Sprintf("✗ %d lost, %d answered more than once, %d misplaced", c.Lost, c.Duplicated, c.Misplaced))
	}
	fmt.Fprintf(out, "  correctness  %d messages, %d answered once; %s\n", c.Messages, c.AnsweredOnce, verdict)
}
