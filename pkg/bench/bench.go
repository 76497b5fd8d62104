// Package bench is the load harness of `bridge bench`: simulated Chatwoot and
// Dify on loopback, a real serve against them, signed webhooks over HTTP, and
// a report of throughput, latency, memory, journal cost and correctness.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// Bench faults: environment failures a test injects to show that the
// correctness check catches an answer that never came.
const (
	// FaultRefusePost: the simulated Chatwoot refuses the first answer
	// (422, not retried); that message is handed off instead of answered.
	FaultRefusePost = "refuse-post"
)

// benchAnswerPrefix is how the simulated Dify answers a query.
const benchAnswerPrefix = "Answer to: "

// benchText is the customer text of message seq; the number lets answers be
// matched to questions.
const benchText = "bench message "

// messagesPerConversation bounds how many messages one simulated
// conversation takes before the bench moves to fresh conversations.
const messagesPerConversation = 1000

// Options are bench's flags; Defaults gives those of `bridge bench`.
type Options struct {
	Duration      time.Duration // how long to offer load
	Concurrency   int           // webhooks in flight at most
	Rate          float64       // offered webhooks per second (0: as fast as acks come back)
	DifyLatency   time.Duration // time the simulated Dify takes per answer
	Backlog       int           // queue this many messages while Dify is paused, then drain them
	Customers     int           // this many customers write at once, each in a conversation of their own
	Flood         int           // first a flood of this many messages on route 1; the customers then write on route 2
	Workers       int           // serve's worker.concurrency
	Conversations int           // conversations the messages are spread over
	InProcess     bool          // run serve inside this process instead of as a child
	CPUProfile    string        // write a CPU profile of the load to this file (implies InProcess)
	Profile       string        // write heap and goroutine profiles at the peak into this directory (implies InProcess)
	Prefill       string        // fill the journal with finished events up to this size first
	MemoryLimit   string        // serve's memory_limit ("": none)
	DrainTimeout  time.Duration // give up waiting for answers after this long without progress
	Keep          bool          // keep the bench database
	// Database is a PostgreSQL URL: the bench runs in a schema of its own
	// there (dropped at the end unless Keep). "" uses a temporary SQLite
	// file.
	Database string
	// Replicas is how many serve processes share the database (PostgreSQL
	// only); webhooks go round-robin over them.
	Replicas int

	// Set by tests only.
	Bin   string // bridge binary for serve (default: this executable)
	Fault string
}

// OptionError is a bad option: Flag names it and Example shows a good
// value.
type OptionError struct {
	Flag, Example, Msg string
}

func (e *OptionError) Error() string { return e.Msg }

func optionErr(example, format string, args ...any) error {
	flag := strings.Fields(strings.TrimPrefix(example, "bridge bench "))[0]
	return &OptionError{Flag: flag, Example: example, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks the options and settles what one implies (a CPU profile
// runs serve in process).
func (o *Options) Validate() error {
	switch {
	case o.Duration <= 0 && o.Backlog == 0 && o.Customers == 0:
		return optionErr("bridge bench --duration 5s", "--duration must be positive")
	case o.Customers < 0:
		return optionErr("bridge bench --customers 100 --dify-latency 6s", "--customers must not be negative")
	case o.Flood < 0 || o.Flood > 0 && o.Customers == 0:
		return optionErr("bridge bench --flood 3000 --customers 10", "--flood needs --customers: the customers who write after the flood, on another route")
	case o.Customers > 0 && o.Backlog > 0:
		return optionErr("bridge bench --customers 100 --dify-latency 6s", "--customers and --backlog are separate runs")
	case o.Concurrency < 1:
		return optionErr("bridge bench --concurrency 16", "--concurrency must be at least 1")
	case o.Rate < 0 || math.IsInf(o.Rate, 0) || math.IsNaN(o.Rate):
		return optionErr("bridge bench --rate 1000", "--rate must be 0 or positive")
	case o.DifyLatency < 0:
		return optionErr("bridge bench --dify-latency 500ms", "--dify-latency must not be negative")
	case o.Backlog < 0:
		return optionErr("bridge bench --backlog 100000", "--backlog must not be negative")
	case o.Workers < 1:
		return optionErr("bridge bench --workers 8", "--workers must be at least 1")
	case o.Conversations < 1:
		return optionErr("bridge bench --conversations 1000", "--conversations must be at least 1")
	case o.DrainTimeout <= 0:
		return optionErr("bridge bench --drain-timeout 60s", "--drain-timeout must be positive")
	case o.Database != "" && !store.IsPostgres(o.Database):
		return optionErr(`bridge bench --database "postgres://user@host:5432/db"`,
			"--database takes a postgres:// URL (without it the bench uses a temporary SQLite file)")
	case o.Replicas < 0 || o.Replicas > 16:
		return optionErr("bridge bench --replicas 2", "--replicas must be between 1 and 16")
	case o.Replicas > 1 && o.Database == "":
		return optionErr(`bridge bench --replicas 2 --database "postgres://user@host:5432/db"`,
			"--replicas needs --database: replicas share a PostgreSQL database")
	case o.Prefill != "" && o.Database != "":
		return optionErr("bridge bench --prefill 1GiB", "--prefill fills the SQLite journal; it does not go with --database")
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.MemoryLimit != "" {
		c := config.Defaults()
		c.MemoryLimit = o.MemoryLimit
		if err := c.Validate(); err != nil {
			return optionErr("bridge bench --memory-limit 96MiB --customers 1000 --dify-latency 6s", "--memory-limit: %v", err)
		}
		if o.InProcess || o.CPUProfile != "" || o.Profile != "" {
			// The limit is the whole process's: with the simulators in it,
			// it would not be serve's.
			return optionErr("bridge bench --memory-limit 96MiB --customers 1000 --dify-latency 6s", "--memory-limit applies to serve as a child process; it cannot be used with --in-process, --cpuprofile or --profile")
		}
	}
	if o.Prefill != "" {
		if _, err := ParseSize(o.Prefill); err != nil {
			return optionErr("bridge bench --prefill 1GiB", "--prefill: %v", err)
		}
	}
	if o.CPUProfile != "" || o.Profile != "" {
		o.InProcess = true
	}
	if o.InProcess && o.Replicas > 1 {
		return optionErr("bridge bench --replicas 2", "--replicas runs serve as child processes; it does not go with --in-process or --cpuprofile")
	}
	return nil
}

// ParseSize reads sizes such as 512MiB, 1GiB, 1GB or 4096 (bytes); K, M and
// G are powers of 1024 with or without the "iB".
func ParseSize(s string) (int64, error) { return config.ParseSize(s) }

// ---- report ----

// Report is what `bridge bench --json` prints.
type Report struct {
	Command     string      `json:"command"`
	Machine     Machine     `json:"machine"`
	Config      RunConfig   `json:"config"`
	Durability  Durability  `json:"durability"`
	Startup     Startup     `json:"startup"`
	Webhooks    Webhooks    `json:"webhooks"`
	EndToEnd    EndToEnd    `json:"end_to_end"`
	Journal     Journal     `json:"journal"`
	CPU         CPU         `json:"cpu"`
	Memory      Memory      `json:"memory"`
	Backlog     *Backlog    `json:"backlog,omitempty"`
	Customers   *Customers  `json:"customers,omitempty"`
	Correctness Correctness `json:"correctness"`
}

type Machine struct {
	CPUs   int    `json:"cpus"`
	GOOS   string `json:"goos"`
	GOARCH string `json:"goarch"`
	Go     string `json:"go"`
}

type RunConfig struct {
	Database      string  `json:"database"` // "sqlite", or the PostgreSQL URL with its password masked
	Replicas      int     `json:"replicas"`
	Duration      string  `json:"duration"`
	Concurrency   int     `json:"concurrency"`
	Rate          float64 `json:"rate"`
	DifyLatency   string  `json:"dify_latency"`
	Backlog       int     `json:"backlog"`
	Customers     int     `json:"customers,omitempty"`
	Flood         int     `json:"flood,omitempty"`
	Workers       int     `json:"workers"`
	Conversations int     `json:"conversations"`
	Serve         string  `json:"serve"` // "child process" | "in process"
	MemoryLimit   string  `json:"memory_limit,omitempty"`
	Fault         string  `json:"fault,omitempty"`
}

type Durability struct {
	JournalMode string `json:"journal_mode"`
	Synchronous string `json:"synchronous"`
}

type Startup struct {
	ReadyMS      float64 `json:"ready_ms"`
	JournalBytes int64   `json:"journal_bytes"`
	PrefillSecs  float64 `json:"prefill_secs,omitempty"`
}

type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type Webhooks struct {
	Sent          int64   `json:"sent"`
	Accepted      int64   `json:"accepted"`
	Errors        int64   `json:"errors"`
	Seconds       float64 `json:"seconds"`
	AcksPerSec    float64 `json:"acks_per_sec"`
	AckLatencyMS  Latency `json:"ack_latency_ms"`
	LateSends     int64   `json:"late_sends,omitempty"`
	OfferedPerSec float64 `json:"offered_per_sec,omitempty"`
}

type EndToEnd struct {
	Answered       int64   `json:"answered"`
	AnsweredPerSec float64 `json:"answered_per_sec"`
	LatencyMS      Latency `json:"latency_ms"`
	BridgeShareMS  Latency `json:"bridge_share_ms"`
	DifyMS         Latency `json:"dify_ms"`
}

type Journal struct {
	Commits           int64   `json:"commits"`                // transactions
	Fsyncs            int64   `json:"fsyncs"`                 // of those, fsync'd; on PostgreSQL the server's WAL flushes (pg_stat_wal)
	SyncCommits       int64   `json:"sync_commits,omitempty"` // PostgreSQL: commits that waited for a flush
	Writes            int64   `json:"writes"`                 // Write calls they carried
	FsyncsPerWebhook  float64 `json:"fsyncs_per_webhook"`     // per webhook sent, the worker's writes for its answer included
	CommitsPerWebhook float64 `json:"commits_per_webhook"`
	WritesPerCommit   float64 `json:"writes_per_commit"`
	WALBytes          int64   `json:"wal_bytes_max"` // largest write-ahead log seen
	DBBytes           int64   `json:"db_bytes"`      // database file at the end
}

type CPU struct {
	ServeSecs         float64 `json:"serve_secs"`           // CPU time serve used from the first webhook to the last answer
	ServeMSPerMessage float64 `json:"serve_ms_per_message"` // that, per accepted message (its webhook, the echo of its answer, the worker)
	BenchSecs         float64 `json:"bench_secs,omitempty"` // CPU time of the bench process (simulators and senders)
	BenchMSPerMessage float64 `json:"bench_ms_per_message,omitempty"`
}

type Memory struct {
	IdleRSSMiB  float64 `json:"idle_rss_mib"`
	IdleHeapMiB float64 `json:"idle_heap_mib"`
	LoadRSSMiB  float64 `json:"load_rss_mib"`  // highest sample during the load
	LoadHeapMiB float64 `json:"load_heap_mib"` // highest sample during the load
	PeakRSSMiB  float64 `json:"peak_rss_mib"`  // the kernel's high-water mark
	// Waiting is serve's memory when the most Dify calls were in flight:
	// what each call waiting on Dify costs (with --backlog or
	// --dify-latency, when calls wait).
	Waiting *Waiting `json:"waiting,omitempty"`
	// Simulators says whether the figures include the simulators (serve
	// in process): then they are not serve's own.
	Simulators bool `json:"includes_simulators,omitempty"`
}

// Waiting is a sample of serve's memory taken when the most Dify calls were
// in flight at once.
type Waiting struct {
	DifyCalls  int64   `json:"dify_calls"` // chat-messages calls in the simulated Dify
	RSSMiB     float64 `json:"rss_mib"`
	HeapMiB    float64 `json:"heap_inuse_mib"`  // Go heap spans in use
	StackMiB   float64 `json:"stack_inuse_mib"` // goroutine stacks
	Goroutines int64   `json:"goroutines"`
	// PerCallKiB is RSS above idle divided by the calls in flight.
	PerCallKiB float64 `json:"per_call_kib"`
}

type Backlog struct {
	Events       int64   `json:"events"`
	FillSecs     float64 `json:"fill_secs"`
	RSSMiB       float64 `json:"rss_mib"`
	HeapMiB      float64 `json:"heap_mib"`
	JournalBytes int64   `json:"journal_bytes"`
	DrainSecs    float64 `json:"drain_secs"`
	DrainPerSec  float64 `json:"drain_per_sec"`

	released int64 // unix ns Dify was released
	late     int64 // sends started late while filling
}

// Customers is what --customers measures: the time from a customer's
// webhook to the answer reaching the simulated Chatwoot, for customers who
// all write at once, alone (Route 1) or just after a flood on another route
// (Route 2).
type Customers struct {
	Count          int     `json:"count"`
	Route          int     `json:"route"`
	Answered       int64   `json:"answered"`
	TimeToAnswerMS Latency `json:"time_to_answer_ms"`
	FloodMessages  int64   `json:"flood_messages,omitempty"`   // accepted on route 1 before the customers wrote
	FloodSendSecs  float64 `json:"flood_send_secs,omitempty"`  // the time to send them
	FloodDrainSecs float64 `json:"flood_drain_secs,omitempty"` // from the flood's first webhook to its last answer
	FloodQueued    float64 `json:"flood_queued,omitempty"`     // serve's queue depth when the customers wrote
}

type Correctness struct {
	Messages     int64 `json:"messages"`      // accepted webhooks: each must be answered once
	AnsweredOnce int64 `json:"answered_once"` // found exactly once in the simulated Chatwoot
	Lost         int64 `json:"lost"`
	Duplicated   int64 `json:"duplicated"`
	Misplaced    int64 `json:"misplaced"` // answers posted to the wrong conversation
	OK           bool  `json:"ok"`
}

// ---- per-message records ----

// benchMsg is what the bench knows of one message, filled in from the
// sender, the simulated Dify and the simulated Chatwoot.
type benchMsg struct {
	in       atomic.Int64 // unix ns the webhook was written to bridge
	accepted atomic.Bool
	dify     atomic.Int64 // ns spent inside the simulated Dify
	answerAt atomic.Int64 // unix ns the first answer was stored by the simulated Chatwoot
	answers  atomic.Int32
}

const recChunk = 4096

// benchRecs holds benchMsg records by sequence number, growing in chunks so
// pointers stay valid.
type benchRecs struct {
	mu     sync.Mutex
	chunks []*[recChunk]benchMsg
}

func (r *benchRecs) get(seq int) *benchMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	for seq/recChunk >= len(r.chunks) {
		r.chunks = append(r.chunks, new([recChunk]benchMsg))
	}
	return &r.chunks[seq/recChunk][seq%recChunk]
}

// lookup returns the record of seq if it exists.
func (r *benchRecs) lookup(seq int) *benchMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq < 0 || seq/recChunk >= len(r.chunks) {
		return nil
	}
	return &r.chunks[seq/recChunk][seq%recChunk]
}

// seqOf returns the sequence number in a bench text or answer, or -1.
func seqOf(s string) int {
	s = strings.TrimPrefix(s, benchAnswerPrefix)
	if !strings.HasPrefix(s, benchText) {
		return -1
	}
	n, err := strconv.Atoi(s[len(benchText):])
	if err != nil {
		return -1
	}
	return n
}

// ---- histogram ----

// hist is a log-linear histogram of durations: constant memory, about 1.5 %
// resolution, exact maximum.
type hist struct {
	mu     sync.Mutex
	counts [128 + 58*64]uint64
	n      uint64
	max    time.Duration
}

func histIndex(v uint64) int {
	if v < 128 {
		return int(v)
	}
	e := bits.Len64(v) - 7
	return 128 + (e-1)*64 + int(v>>e) - 64
}

// histValue is the middle of bucket i.
func histValue(i int) float64 {
	if i < 128 {
		return float64(i)
	}
	e := (i-128)/64 + 1
	m := uint64((i-128)%64 + 64)
	lo := m << e
	return float64(lo) + float64(uint64(1)<<e)/2
}

func (h *hist) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.mu.Lock()
	h.counts[histIndex(uint64(d))]++
	h.n++
	if d > h.max {
		h.max = d
	}
	h.mu.Unlock()
}

func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			v := time.Duration(histValue(i))
			return min(v, h.max)
		}
	}
	return h.max
}

func (h *hist) latency() Latency {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := func(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }
	return Latency{P50: ms(h.quantile(.50)), P90: ms(h.quantile(.90)), P99: ms(h.quantile(.99)), Max: ms(h.max)}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func MiB(b float64) float64 { return round3(b / (1 << 20)) }

// ---- the run ----

// bench is one run: simulators, serve, records.
type bench struct {
	o    *Options
	env  Env
	dir  string
	cw   *simulate.Chatwoot
	dify *simulate.Dify
	recs benchRecs
	srv  benchServer   // the first serve: memory and readiness are its
	srvs []benchServer // every serve, srv first
	hc   *http.Client

	database string // the setting serve gets: the SQLite file, or the URL of the bench's schema
	schema   string // PostgreSQL: the bench's schema
	ack      hist
	e2e      hist
	share    hist
	difyH    hist

	convMu    sync.Mutex
	convs     []int64
	custConvs map[int]int64 // the conversation of each customer, by sequence number

	seq        atomic.Int64
	custFirst  int // sequence number of the first customer
	sent       atomic.Int64
	accepted   atomic.Int64
	errs       atomic.Int64
	answered   atomic.Int64 // messages answered at least once
	lastAnswer atomic.Int64 // unix ns

	memMu    sync.Mutex
	loadRSS  float64
	loadHeap float64
	walMax   int64
	idleRSS  float64
	waiting  *Waiting
	// waitingEnded is how many Dify calls had ended when waiting was
	// sampled with its number of calls first.
	waitingEnded int64
	profileErr   error
	firstSendNS  atomic.Int64

	difyCalls atomic.Int64 // chat-messages calls in the simulated Dify now
	difyEnded atomic.Int64 // chat-messages calls the simulated Dify has answered
}

// Env is what a run needs from its caller.
type Env struct {
	// Log receives what the bench says along the way (the kept database,
	// a drain that gave up).
	Log io.Writer
	// StartInProcess starts serve inside this process with cfg; needed
	// for Options.InProcess.
	StartInProcess func(ctx context.Context, cfg *config.Config) (Server, error)
}

// Server is a serve started in process.
type Server interface {
	Addr() string
	// Wait blocks until ctx ends, then shuts the server down.
	Wait(ctx context.Context) error
}

// Run runs one bench and returns its report. A report whose Correctness
// is not OK is not an error: the caller decides what that means.
func Run(ctx context.Context, o *Options, env Env) (*Report, error) {
	if o.CPUProfile != "" || o.Profile != "" {
		o.InProcess = true
	}
	if env.Log == nil {
		env.Log = io.Discard
	}
	if o.InProcess && env.StartInProcess == nil {
		return nil, errors.New("bench: no way to start serve in process")
	}
	if o.Profile != "" {
		// Sampling every 512 KiB (the default) sees too little of the
		// few-KiB buffers each waiting call holds.
		defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
		runtime.MemProfileRate = 4 << 10
	}
	dir, err := os.MkdirTemp("", "bridge-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{o: o, env: env, dir: dir, hc: &http.Client{Timeout: 10 * time.Second}, database: filepath.Join(dir, "bridge.db")}
	if o.Database != "" {
		schema, err := benchSchema(ctx, o.Database)
		if err != nil {
			_ = os.RemoveAll(dir) // nothing was written there yet
			return nil, err
		}
		b.database, b.schema = schema.url, schema.name
		if !o.Keep {
			defer schema.drop()
		}
	}
	if o.Keep {
		fmt.Fprintln(env.Log, "bench database:", store.Display(b.database))
	} else {
		defer os.RemoveAll(dir)
	}
	return b.run(ctx)
}

func (b *bench) run(ctx context.Context) (*Report, error) {
	o := b.o
	rep := &Report{
		Command: benchCommand(o),
		Machine: Machine{CPUs: runtime.NumCPU(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, Go: runtime.Version()},
		Config: RunConfig{Database: "sqlite", Replicas: o.Replicas, Duration: o.Duration.String(), Concurrency: o.Concurrency, Rate: o.Rate,
			DifyLatency: o.DifyLatency.String(), Backlog: o.Backlog, Customers: o.Customers, Flood: o.Flood,
			Workers: o.Workers, Conversations: o.Conversations,
			Serve: "child process", Fault: o.Fault, MemoryLimit: o.MemoryLimit},
	}
	if o.InProcess {
		rep.Config.Serve = "in process"
	}
	if o.Database != "" {
		rep.Config.Database = store.Display(o.Database)
	}
	if o.Backlog > 0 || o.Customers > 0 {
		rep.Config.Duration = ""
	}

	const difyKey = "app-bench0000000000000000000001"
	botToken := "bench-bot-" + rand.Text()
	secret := rand.Text()
	b.dify = simulate.NewDify(simulate.DifyApp{Key: difyKey, Name: "Bench", Mode: simulate.ModeChat})
	b.dify.SetLatency(o.DifyLatency)
	b.dify.SetCompact(true)
	difySrv := httptest.NewServer(b.difyHandler())
	defer difySrv.Close()
	defer b.dify.Close()
	b.cw = simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: botToken})
	cwSrv := httptest.NewServer(b.chatwootHandler())
	defer cwSrv.Close()
	defer b.cw.Close()
	b.cw.AddInbox(1, "Website", "")
	b.cw.AddInbox(2, "Sales", "")
	b.dify.AddApp(simulate.DifyApp{Key: benchSalesKey, Name: "Bench sales", Mode: simulate.ModeChat})

	dbPath := b.database
	prefillStart := time.Now()
	if err := b.prepareDB(ctx, dbPath, difyKey); err != nil {
		return nil, err
	}
	if o.Prefill != "" {
		rep.Startup.PrefillSecs = round3(time.Since(prefillStart).Seconds())
	}
	rep.Startup.JournalBytes = b.journalBytes(ctx)

	env := benchEnv{db: dbPath, chatwoot: cwSrv.URL, botToken: botToken, secret: secret,
		dify: difySrv.URL + "/v1", workers: o.Workers, memoryLimit: o.MemoryLimit}
	srvCtx, stopSrv := context.WithCancel(ctx)
	defer stopSrv()
	var err error
	start := time.Now()
	if o.InProcess {
		b.srv, err = startInProcess(srvCtx, b.env.StartInProcess, env)
	} else {
		b.srv, err = startChild(srvCtx, o.Bin, b.dir, env)
	}
	if err != nil {
		return nil, err
	}
	defer b.srv.stop()
	b.srvs = []benchServer{b.srv}
	ready, err := b.waitReady(ctx, start)
	if err != nil {
		return nil, err
	}
	rep.Startup.ReadyMS = round3(float64(ready) / float64(time.Millisecond))
	for range o.Replicas - 1 {
		s, err := startChild(srvCtx, o.Bin, b.dir, env)
		if err != nil {
			return nil, err
		}
		defer s.stop()
		b.srvs = append(b.srvs, s)
	}
	hook := "http://" + b.srv.addr() + "/webhooks/chatwoot"
	if len(b.srvs) > 1 {
		front := httptest.NewServer(b.roundRobin())
		defer front.Close()
		hook = front.URL + "/webhooks/chatwoot"
	}
	b.cw.SetWebhook(hook, secret)

	// Idle memory: after start, before any load.
	time.Sleep(250 * time.Millisecond) // let start-up garbage be collected before sampling idle memory
	walSyncs0 := b.walSyncs(ctx)
	idle, err := b.scrape(ctx)
	if err != nil {
		return nil, err
	}
	b.idleRSS = b.rss()
	rep.Memory.IdleRSSMiB, rep.Memory.IdleHeapMiB = MiB(b.idleRSS), MiB(idle["go_memstats_heap_inuse_bytes"])
	rep.Memory.Simulators = o.InProcess

	if o.Fault == FaultRefusePost {
		b.cw.Fail("messages", simulate.ChatwootFault{Status: http.StatusUnprocessableEntity})
	}

	cpu0, benchCPU0 := b.serveCPU(), procCPU(os.Getpid())
	sampleCtx, cancelSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() { defer close(sampled); b.sampleMemory(sampleCtx) }()
	stopSampling := sync.OnceFunc(func() { cancelSampling(); <-sampled })
	defer stopSampling()

	var prof *os.File
	if o.CPUProfile != "" {
		prof, err = os.Create(o.CPUProfile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(prof); err != nil {
			_ = prof.Close() // the profiling error is the one worth reporting
			return nil, err
		}
	}

	var loadSecs float64
	if o.Backlog > 0 {
		bl, err := b.runBacklog(ctx)
		if err != nil {
			return nil, err
		}
		rep.Backlog = bl
		loadSecs, rep.Webhooks.LateSends = bl.FillSecs, bl.late
	} else if o.Customers > 0 {
		if rep.Customers, loadSecs, err = b.runCustomers(ctx); err != nil {
			return nil, err
		}
	} else {
		loadSecs, rep.Webhooks.LateSends = b.load(ctx, 0)
	}
	drainErr := b.drain(ctx)
	if prof != nil {
		pprof.StopCPUProfile()
		if err := prof.Close(); err != nil {
			return nil, err
		}
	}
	stopSampling()
	cpu1, benchCPU1 := b.serveCPU(), procCPU(os.Getpid())
	final, err := b.scrape(ctx)
	if err != nil {
		return nil, err
	}
	if drainErr != nil {
		fmt.Fprintln(b.env.Log, "bench:", drainErr)
	}
	if o.Backlog > 0 && rep.Backlog != nil {
		if last := b.lastAnswer.Load(); last > 0 {
			rep.Backlog.DrainSecs = round3(time.Duration(last - rep.Backlog.released).Seconds())
			if rep.Backlog.DrainSecs > 0 {
				rep.Backlog.DrainPerSec = round3(float64(b.answered.Load()) / rep.Backlog.DrainSecs)
			}
		}
	}

	// Figures.
	rep.Webhooks.Sent, rep.Webhooks.Accepted, rep.Webhooks.Errors = b.sent.Load(), b.accepted.Load(), b.errs.Load()
	rep.Webhooks.Seconds = round3(loadSecs)
	if loadSecs > 0 {
		rep.Webhooks.AcksPerSec = round3(float64(rep.Webhooks.Accepted) / loadSecs)
	}
	if o.Rate > 0 {
		rep.Webhooks.OfferedPerSec = o.Rate
	}
	rep.Webhooks.AckLatencyMS = b.ack.latency()
	b.collectEndToEnd()
	rep.EndToEnd.Answered = b.answered.Load()
	if first, last := b.firstSendNS.Load(), b.lastAnswer.Load(); first > 0 && last > first {
		rep.EndToEnd.AnsweredPerSec = round3(float64(rep.EndToEnd.Answered) / time.Duration(last-first).Seconds())
	}
	rep.EndToEnd.LatencyMS, rep.EndToEnd.BridgeShareMS, rep.EndToEnd.DifyMS = b.e2e.latency(), b.share.latency(), b.difyH.latency()
	commits := final["bridge_journal_commits_total"] - idle["bridge_journal_commits_total"]
	writes := final["bridge_journal_writes_total"] - idle["bridge_journal_writes_total"]
	syncs := final["bridge_journal_syncs_total"] - idle["bridge_journal_syncs_total"]
	rep.Journal = Journal{Commits: int64(commits), Fsyncs: int64(syncs), Writes: int64(writes),
		DBBytes: b.journalBytes(ctx)}
	if b.schema != "" {
		// PostgreSQL flushes the WAL once for the commits waiting together:
		// the server's count of flushes is the one to compare with SQLite's
		// fsyncs (the whole server's, so the bench should be alone on it).
		rep.Journal.SyncCommits = int64(syncs)
		if w1 := b.walSyncs(ctx); walSyncs0 >= 0 && w1 >= walSyncs0 {
			syncs = float64(w1 - walSyncs0)
			rep.Journal.Fsyncs = int64(syncs)
		}
	}
	if rep.Webhooks.Sent > 0 {
		rep.Journal.CommitsPerWebhook = round3(commits / float64(rep.Webhooks.Sent))
		rep.Journal.FsyncsPerWebhook = round3(syncs / float64(rep.Webhooks.Sent))
	}
	if commits > 0 {
		rep.Journal.WritesPerCommit = round3(writes / commits)
	}
	rep.CPU.ServeSecs = round3((cpu1 - cpu0).Seconds())
	if !o.InProcess {
		rep.CPU.BenchSecs = round3((benchCPU1 - benchCPU0).Seconds())
	}
	if n := rep.Webhooks.Accepted; n > 0 {
		rep.CPU.ServeMSPerMessage = round3(float64(cpu1-cpu0) / float64(time.Millisecond) / float64(n))
		rep.CPU.BenchMSPerMessage = round3(rep.CPU.BenchSecs * 1000 / float64(n))
	}
	b.memMu.Lock()
	rep.Memory.LoadRSSMiB, rep.Memory.LoadHeapMiB = MiB(b.loadRSS), MiB(b.loadHeap)
	if o.Backlog > 0 || o.DifyLatency > 0 {
		// Only then do calls wait on Dify long enough for the sample to
		// be what they cost.
		rep.Memory.Waiting = b.waiting
	}
	rep.Journal.WALBytes = max(b.walMax, fileSize(dbPath+"-wal"))
	profileErr := b.profileErr
	b.memMu.Unlock()
	if profileErr != nil {
		return nil, profileErr
	}
	rep.Memory.PeakRSSMiB = MiB(b.peakRSS())
	if c := rep.Customers; c != nil {
		b.customerFigures(c)
	}
	rep.Correctness = b.verify()

	for _, s := range b.srvs {
		if err := s.stop(); err != nil {
			return nil, fmt.Errorf("stop serve: %w", err)
		}
	}
	mode, sync, err := journalSettings(ctx, dbPath)
	if err != nil {
		return nil, err
	}
	rep.Durability = Durability{JournalMode: mode, Synchronous: sync}
	return rep, nil
}

func benchCommand(o *Options) string {
	args := []string{"bridge", "bench"}
	switch {
	case o.Customers > 0:
		if o.Flood > 0 {
			args = append(args, "--flood", strconv.Itoa(o.Flood))
		}
		args = append(args, "--customers", strconv.Itoa(o.Customers))
	case o.Backlog > 0:
		args = append(args, "--backlog", strconv.Itoa(o.Backlog))
	default:
		args = append(args, "--duration", o.Duration.String())
	}
	args = append(args, "--concurrency", strconv.Itoa(o.Concurrency))
	if o.Rate > 0 {
		args = append(args, "--rate", strconv.FormatFloat(o.Rate, 'f', -1, 64))
	}
	if o.DifyLatency > 0 {
		args = append(args, "--dify-latency", o.DifyLatency.String())
	}
	if o.Workers != config.Defaults().Worker.Concurrency {
		args = append(args, "--workers", strconv.Itoa(o.Workers))
	}
	if o.Conversations != 1000 {
		args = append(args, "--conversations", strconv.Itoa(o.Conversations))
	}
	if o.Prefill != "" {
		args = append(args, "--prefill", o.Prefill)
	}
	if o.MemoryLimit != "" {
		args = append(args, "--memory-limit", o.MemoryLimit)
	}
	if o.InProcess {
		args = append(args, "--in-process")
	}
	if o.Database != "" {
		args = append(args, "--database", store.Display(o.Database))
	}
	if o.Replicas > 1 {
		args = append(args, "--replicas", strconv.Itoa(o.Replicas))
	}
	return strings.Join(args, " ")
}

// prepareDB creates the database with the bench route, and prefills the
// journal when asked.
func (b *bench) prepareDB(ctx context.Context, path, difyKey string) error {
	db, err := store.Open(ctx, path)
	if err != nil {
		return err
	}
	for _, r := range []*store.Route{
		{InboxID: 1, Name: "bench", DifyKey: difyKey, Mode: store.ModeAuto, Enabled: true, AppName: "Bench", AppMode: simulate.ModeChat},
		{InboxID: 2, Name: "sales", DifyKey: benchSalesKey, Mode: store.ModeAuto, Enabled: true, AppName: "Bench sales", AppMode: simulate.ModeChat},
	} {
		if err := db.AddRoute(ctx, r); err != nil {
			_ = db.Close() // the route error is the one worth reporting
			return err
		}
	}
	if b.o.Prefill != "" {
		size, _ := ParseSize(b.o.Prefill) // validated
		if err := prefillJournal(ctx, db, path, size); err != nil {
			_ = db.Close() // the prefill error is the one worth reporting
			return fmt.Errorf("prefill journal: %w", err)
		}
	}
	return db.Close()
}

// prefillJournal appends finished events with real-sized payloads and
// traces until the database file reaches size.
func prefillJournal(ctx context.Context, db *store.DB, path string, size int64) error {
	cw := simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, NoEcho: true})
	defer cw.Close()
	cw.AddInbox(1, "Website", "")
	conv := cw.NewConversation(1, simulate.Contact{Name: "Old Customer"}, "pending")
	d, _ := cw.CustomerSays(ctx, conv, "an old question about an order") // no webhook URL: only the body is wanted
	payload := d.Body
	const perWrite = 2000
	for i := int64(0); ; i++ {
		if fileSize(path)+fileSize(path+"-wal") >= size {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		err := db.Write(ctx, func(tx *store.Tx) error {
			for j := range perWrite {
				msgID := 1_000_000_000 + i*perWrite + int64(j)
				e := &store.Event{Event: "message_created", Kind: store.KindMessage, AccountID: 1, InboxID: 1,
					ConversationID: 1_000_000 + msgID%5000, MessageID: msgID, ContactID: msgID % 5000, RouteID: 1,
					Status: store.StatusAnswered, Payload: payload, Text: "an old question about an order",
					ReceivedAt: tx.Now().Add(-time.Hour)}
				if err := tx.InsertEvent(e); err != nil {
					return err
				}
				for _, h := range []store.Hop{{Stage: "decision", Outcome: "accepted", Detail: "accepted: message (route 1 bench, auto)"},
					{Stage: "dify", Outcome: "answer", Detail: "120 chars, 12 events", Duration: 900 * time.Millisecond},
					{Stage: "chatwoot", Outcome: "ok", Detail: "answer: message 1"},
					{Stage: "done", Outcome: "answered"}} {
					h.EventID = e.ID
					if err := tx.AddHop(h); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// journalSettings reads the durability settings through the store's own
// writer connection, as serve opens it.
func journalSettings(ctx context.Context, path string) (mode, sync string, err error) {
	db, err := store.Open(ctx, path)
	if err != nil {
		return "", "", err
	}
	defer db.Close()
	mode, level, err := db.Durability(ctx)
	if err != nil {
		return "", "", err
	}
	return mode, level, nil
}

// ---- serve ----

type benchEnv struct {
	db, chatwoot, botToken, secret, dify string
	workers                              int
	memoryLimit                          string
}

// benchServer is a running serve, child or in process.
type benchServer interface {
	addr() string
	pid() int
	stop() error
}

type childServer struct {
	cmd      *exec.Cmd
	address  string
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
	tail     *tailBuf
}

// tailBuf keeps the last lines of the child's log for error messages.
type tailBuf struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuf) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) >= 20 {
		t.lines = t.lines[1:]
	}
	t.lines = append(t.lines, s)
}

func (t *tailBuf) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

func startChild(ctx context.Context, bin, dir string, e benchEnv) (*childServer, error) {
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the bridge binary: %w", err)
		}
		bin = exe
	}
	cmd := exec.Command(bin, "serve")
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BRIDGE_") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env,
		"XDG_CONFIG_HOME="+dir,
		"BRIDGE_LISTEN=127.0.0.1:0",
		"BRIDGE_DATABASE="+e.db,
		"BRIDGE_LOG_FORMAT=json",
		"BRIDGE_LOG_LEVEL=info",
		"BRIDGE_CHATWOOT_BASE_URL="+e.chatwoot,
		"BRIDGE_CHATWOOT_API_TOKEN="+e.botToken,
		"BRIDGE_CHATWOOT_WEBHOOK_SECRET="+e.secret,
		"BRIDGE_DIFY_BASE_URL="+e.dify,
		"BRIDGE_DIFY_TIMEOUT=10m",
		"BRIDGE_DIFY_IDLE_TIMEOUT=10m",
		"BRIDGE_WORKER_CONCURRENCY="+strconv.Itoa(e.workers),
		"BRIDGE_MEMORY_LIMIT="+e.memoryLimit,
	)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start serve: %w", err)
	}
	s := &childServer{cmd: cmd, done: make(chan struct{}), tail: &tailBuf{}}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Bytes()
			if !found && bytes.Contains(line, []byte(`"bridge serving"`)) {
				var l struct {
					Listen string `json:"listen"`
				}
				if json.Unmarshal(line, &l) == nil && l.Listen != "" {
					found = true
					addr <- l.Listen
				}
			}
			if bytes.Contains(line, []byte(`"level":"ERROR"`)) || bytes.Contains(line, []byte(`"level":"WARN"`)) || !found {
				s.tail.add(string(line))
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // keep draining so the child never blocks on its log
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	select {
	case a := <-addr:
		s.address = a
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("serve exited at start: %v\n%s", s.waitErr, s.tail)
	case <-ctx.Done():
		_ = s.stop() // the context's end is the error worth reporting
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		_ = s.stop() // the timeout is the error worth reporting
		return nil, fmt.Errorf("serve did not start within 30s:\n%s", s.tail)
	}
}

func (s *childServer) addr() string { return s.address }
func (s *childServer) pid() int     { return s.cmd.Process.Pid }

// stop sends SIGTERM and waits for a clean exit (SIGKILL after 15 s).
func (s *childServer) stop() error {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM) // an exited child is reported by Wait below
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill() // it ignored SIGTERM; the error below says so
			<-s.done
			s.stopErr = fmt.Errorf("serve did not stop within 15s of SIGTERM:\n%s", s.tail)
			return
		}
		if s.waitErr != nil {
			s.stopErr = fmt.Errorf("serve: %v\n%s", s.waitErr, s.tail)
		}
	})
	return s.stopErr
}

type inProcessServer struct {
	s        Server
	ctx      context.Context // the server's context; done once cancel ran
	cancel   context.CancelFunc
	stopOnce sync.Once
	stopErr  error
}

func startInProcess(ctx context.Context, start func(context.Context, *config.Config) (Server, error), e benchEnv) (*inProcessServer, error) {
	cfg := config.Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Database = e.db
	cfg.Chatwoot.BaseURL = e.chatwoot
	cfg.Chatwoot.APIToken = config.Secret(e.botToken)
	cfg.Chatwoot.WebhookSecret = config.Secret(e.secret)
	cfg.Dify.BaseURL = e.dify
	cfg.Dify.Timeout = 10 * time.Minute
	cfg.Dify.IdleTimeout = 10 * time.Minute
	cfg.Worker.Concurrency = e.workers
	ctx, cancel := context.WithCancel(ctx)
	s, err := start(ctx, &cfg)
	if err != nil {
		cancel()
		return nil, err
	}
	return &inProcessServer{s: s, ctx: ctx, cancel: cancel}, nil
}

func (p *inProcessServer) addr() string { return p.s.Addr() }
func (p *inProcessServer) pid() int     { return os.Getpid() }
func (p *inProcessServer) stop() error {
	p.stopOnce.Do(func() {
		p.cancel()
		p.stopErr = p.s.Wait(p.ctx) // wait returns once ctx is done
	})
	return p.stopErr
}

// waitReady polls /readyz until it answers 200 and returns how long after
// start that was.
func (b *bench) waitReady(ctx context.Context, start time.Time) (time.Duration, error) {
	url := "http://" + b.srv.addr() + "/readyz"
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		resp, err := b.hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("serve not ready within 30s (last: %v)", err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// scrape reads the /metrics of every serve into name → value (series with
// labels, and replicas, are summed).
func (b *bench) scrape(ctx context.Context) (map[string]float64, error) {
	srvs := b.srvs
	if len(srvs) == 0 {
		srvs = []benchServer{b.srv}
	}
	out := map[string]float64{}
	for _, s := range srvs {
		m, err := b.scrapeOne(ctx, s)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			out[k] += v
		}
	}
	return out, nil
}

func (b *bench) scrapeOne(ctx context.Context, s benchServer) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr()+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read serve metrics: %w", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[:sp]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err == nil {
			out[name] += v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read serve metrics: %w", err)
	}
	if _, ok := out["bridge_journal_commits_total"]; !ok {
		return nil, errors.New("serve's /metrics has no bridge_journal_commits_total")
	}
	return out, nil
}

// procStatus reads a kB field of /proc/PID/status in bytes (0 where there is
// no /proc).
func procStatus(pid int, field string) float64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseFloat(f[0], 64) // a malformed value reads as 0
				return v * 1024
			}
		}
	}
	return 0
}

// procCPU reads the user plus system CPU time of a process from
// /proc/PID/stat (0 where there is no /proc).
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces; fields count from after its ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64) // malformed fields read as 0
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

func (b *bench) rss() float64     { return procStatus(b.srv.pid(), "VmRSS") }
func (b *bench) peakRSS() float64 { return procStatus(b.srv.pid(), "VmHWM") }

// sampleMemory records the highest RSS and heap while the load runs, and
// serve's memory when the most Dify calls were in flight (with profiles
// then, for --profile).
func (b *bench) sampleMemory(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		calls, ended := b.difyCalls.Load(), b.difyEnded.Load()
		rss := b.rss()
		b.memMu.Lock()
		w, wEnded := b.waiting, b.waitingEnded
		b.memMu.Unlock()
		// The most calls in flight, and of the samples with that many the
		// highest RSS while they are the same calls (none has ended since):
		// calls just started have not all allocated yet.
		candidate := calls > 0 && (w == nil || calls > w.DifyCalls ||
			calls == w.DifyCalls && ended == wEnded && MiB(rss) > w.RSSMiB)
		var staged string
		if candidate && b.o.Profile != "" {
			var err error
			if staged, err = writeProfiles(b.o.Profile); err != nil {
				b.memMu.Lock()
				b.profileErr = err
				b.memMu.Unlock()
				return
			}
		}
		m, err := b.scrape(ctx)
		if err != nil {
			m = map[string]float64{}
		}
		heap := m["go_memstats_heap_inuse_bytes"]
		wal := fileSize(filepath.Join(b.dir, "bridge.db-wal"))
		// Taken while the same calls were all still waiting?
		still := b.difyEnded.Load() == ended && b.difyCalls.Load() == calls
		b.memMu.Lock()
		b.loadRSS, b.loadHeap = max(b.loadRSS, rss), max(b.loadHeap, heap)
		b.walMax = max(b.walMax, wal)
		if candidate && still && err == nil {
			b.waitingEnded = ended
			b.waiting = &Waiting{DifyCalls: calls, RSSMiB: MiB(rss), HeapMiB: MiB(heap),
				StackMiB: MiB(m["go_memstats_stack_inuse_bytes"]), Goroutines: int64(m["go_goroutines"]),
				PerCallKiB: round3((rss - b.idleRSS) / 1024 / float64(calls))}
			if staged != "" {
				b.profileErr = commitProfiles(staged, b.o.Profile)
			}
		} else if staged != "" {
			_ = os.RemoveAll(staged) // taken after some calls ended: not kept
		}
		failed := b.profileErr != nil
		b.memMu.Unlock()
		if failed {
			return
		}
	}
}

// profileFiles are what --profile writes.
var profileFiles = []string{"heap.pprof", "goroutine.pprof", "goroutine.txt", "memstats.json"}

// writeProfiles writes this process's heap and goroutine profiles, and its
// runtime.MemStats, into a new directory inside dir (serve runs in process
// for --profile) and returns it; commitProfiles moves them into dir.
func writeProfiles(dir string) (_ string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("profile: %w", err)
	}
	staged, err := os.MkdirTemp(dir, ".sample-")
	if err != nil {
		return "", fmt.Errorf("profile: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(staged) // the write error is the one worth reporting
		}
	}()
	for _, p := range []struct {
		file, profile string
		debug         int
	}{{"heap.pprof", "heap", 0}, {"goroutine.pprof", "goroutine", 0}, {"goroutine.txt", "goroutine", 1}} {
		f, err := os.Create(filepath.Join(staged, p.file))
		if err != nil {
			return "", fmt.Errorf("profile: %w", err)
		}
		err = pprof.Lookup(p.profile).WriteTo(f, p.debug)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", fmt.Errorf("profile %s: %w", p.profile, err)
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	data, err := json.MarshalIndent(struct {
		HeapInuse, HeapIdle, HeapReleased, StackInuse, Sys, NumGC uint64
		Goroutines                                                int
	}{ms.HeapInuse, ms.HeapIdle, ms.HeapReleased, ms.StackInuse, ms.Sys, uint64(ms.NumGC), runtime.NumGoroutine()}, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(staged, "memstats.json"), append(data, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("profile: %w", err)
	}
	return staged, nil
}

// commitProfiles moves the profiles written into staged into dir.
func commitProfiles(staged, dir string) error {
	defer os.RemoveAll(staged)
	for _, f := range profileFiles {
		if err := os.Rename(filepath.Join(staged, f), filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("profile: %w", err)
		}
	}
	return nil
}

// ---- simulators, instrumented ----

// tapBody reads r's body and puts it back for the simulator; false when it
// could not be read (then the answer is sent).
func tapBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return nil, false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, true
}

// difyHandler wraps the simulated Dify to time each chat-messages call.
func (b *bench) difyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/chat-messages" {
			b.dify.ServeHTTP(w, r)
			return
		}
		body, ok := tapBody(w, r)
		if !ok {
			return
		}
		var q struct {
			Query string `json:"query"`
		}
		_ = json.Unmarshal(body, &q) // a malformed body is the simulator's to refuse
		start := time.Now()
		b.difyCalls.Add(1)
		b.dify.ServeHTTP(w, r)
		b.difyCalls.Add(-1)
		b.difyEnded.Add(1)
		if m := b.recs.lookup(seqOf(q.Query)); m != nil {
			m.dify.Add(int64(time.Since(start)))
		}
	})
}

// capture holds a response back until the bench has looked at it.
type capture struct {
	http.ResponseWriter
	status int
	buf    bytes.Buffer
}

func (c *capture) WriteHeader(s int) {
	if c.status == 0 {
		c.status = s
	}
}

func (c *capture) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.buf.Write(p)
}

// Unwrap lets the simulator drop the connection itself.
func (c *capture) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// chatwootHandler wraps the simulated Chatwoot to see each answer arrive.
// The answer is counted before bridge gets its response, so once bridge's
// queue is empty every answer it posted is counted.
func (b *bench) chatwootHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/messages") {
			b.cw.ServeHTTP(w, r)
			return
		}
		body, ok := tapBody(w, r)
		if !ok {
			return
		}
		c := &capture{ResponseWriter: w}
		b.cw.ServeHTTP(c, r)
		if c.status == 0 {
			return // the simulator dropped the connection
		}
		var m struct {
			Content string `json:"content"`
			Private bool   `json:"private"`
		}
		if c.status == http.StatusOK && json.Unmarshal(body, &m) == nil && !m.Private && strings.HasPrefix(m.Content, benchAnswerPrefix) {
			if rec := b.recs.lookup(seqOf(m.Content)); rec != nil {
				now := time.Now().UnixNano()
				if rec.answers.Add(1) == 1 {
					rec.answerAt.Store(now)
					b.answered.Add(1)
				}
				b.lastAnswer.Store(now)
			}
		}
		w.WriteHeader(c.status)
		_, _ = w.Write(c.buf.Bytes()) // bridge went away: it retries, as it would against Chatwoot
	})
}

// conversation returns the simulated conversation of message seq: the
// messages go round-robin over --conversations conversations, and a fresh
// set is opened every messagesPerConversation rounds.
func (b *bench) conversation(seq int) int64 {
	n := b.o.Conversations
	idx := seq%n + n*(seq/(n*messagesPerConversation))
	b.convMu.Lock()
	defer b.convMu.Unlock()
	if c, ok := b.custConvs[seq]; ok {
		return c
	}
	for len(b.convs) <= idx {
		b.convs = append(b.convs, b.cw.NewConversation(1, simulate.Contact{}, "pending"))
	}
	return b.convs[idx]
}

// send delivers message seq as the customer's and records the ack.
func (b *bench) send(ctx context.Context, seq int) {
	conv := b.conversation(seq)
	rec := b.recs.get(seq)
	var wrote, first atomic.Int64
	trace := &httptrace.ClientTrace{
		WroteRequest:         func(httptrace.WroteRequestInfo) { wrote.Store(time.Now().UnixNano()) },
		GotFirstResponseByte: func() { first.Store(time.Now().UnixNano()) },
	}
	b.sent.Add(1)
	d, err := b.cw.CustomerSays(httptrace.WithClientTrace(ctx, trace), conv, benchText+strconv.Itoa(seq))
	in := wrote.Load()
	rec.in.Store(in)
	b.firstSendNS.CompareAndSwap(0, in)
	if err != nil || d.Status != http.StatusOK || !bytes.Contains(d.Response, []byte(`"status":"accepted"`)) {
		b.errs.Add(1)
		return
	}
	rec.accepted.Store(true)
	b.accepted.Add(1)
	b.ack.add(time.Duration(first.Load() - in))
}

// load offers webhooks for --duration, or until count were sent when count
// > 0: closed loop, or open loop at --rate. It returns the seconds it took
// and how many sends started late.
func (b *bench) load(ctx context.Context, count int) (float64, int64) {
	o := b.o
	limit := o.Duration + 30*time.Second
	if count > 0 {
		limit = 24 * time.Hour
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	start := time.Now()
	end := start.Add(o.Duration)
	more := func(seq int) bool {
		if count > 0 {
			return seq < count
		}
		return time.Now().Before(end)
	}
	var wg sync.WaitGroup
	var late int64
	if o.Rate <= 0 {
		for range o.Concurrency {
			wg.Go(func() {
				for ctx.Err() == nil {
					seq := int(b.seq.Add(1) - 1)
					if !more(seq) {
						b.seq.Add(-1)
						return
					}
					b.send(ctx, seq)
				}
			})
		}
	} else {
		sem := make(chan struct{}, o.Concurrency)
		interval := time.Duration(float64(time.Second) / o.Rate)
		for i := 0; ctx.Err() == nil; i++ {
			due := start.Add(time.Duration(i) * interval)
			if count > 0 && i >= count || count == 0 && !due.Before(end) {
				break
			}
			if d := time.Until(due); d > 0 {
				time.Sleep(d) // pacing the open loop
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			if time.Since(due) > time.Millisecond {
				late++
			}
			seq := int(b.seq.Add(1) - 1)
			wg.Go(func() {
				defer func() { <-sem }()
				b.send(ctx, seq)
			})
		}
	}
	wg.Wait()
	return time.Since(start).Seconds(), late
}

// benchSalesKey is the Dify key of the second route (inbox 2), where
// --customers write after a --flood.
const benchSalesKey = "app-bench0000000000000000000002"

// runCustomers sends the --flood on route 1 (closed loop, as fast as acks
// come back), then has --customers customers write at once, each in a new
// conversation: on route 2 after a flood, else on route 1. It returns the
// seconds the sends took.
func (b *bench) runCustomers(ctx context.Context) (*Customers, float64, error) {
	o := b.o
	c := &Customers{Count: o.Customers, Route: 1}
	inbox := int64(1)
	start := time.Now()
	if o.Flood > 0 {
		c.Route, inbox = 2, 2
		secs, _ := b.load(ctx, o.Flood)
		c.FloodMessages, c.FloodSendSecs = b.accepted.Load(), round3(secs)
		if m, err := b.scrape(ctx); err == nil {
			c.FloodQueued = m["bridge_queue_depth"]
		}
	}
	first := int(b.seq.Add(int64(o.Customers))) - o.Customers
	b.convMu.Lock()
	b.custConvs = make(map[int]int64, o.Customers)
	for seq := first; seq < first+o.Customers; seq++ {
		b.custConvs[seq] = b.cw.NewConversation(inbox, simulate.Contact{}, "pending")
	}
	b.convMu.Unlock()
	b.custFirst = first
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for seq := first; seq < first+o.Customers; seq++ {
		wg.Go(func() {
			<-gate
			b.send(ctx, seq)
		})
	}
	close(gate) // every customer at once
	wg.Wait()
	return c, time.Since(start).Seconds(), nil
}

// customerFigures fills in the customers' time to answer, and how long the
// flood took to drain, from the records.
func (b *bench) customerFigures(c *Customers) {
	var h hist
	for seq := b.custFirst; seq < b.custFirst+c.Count; seq++ {
		m := b.recs.lookup(seq)
		if m == nil || !m.accepted.Load() || m.answerAt.Load() == 0 {
			continue
		}
		c.Answered++
		h.add(time.Duration(m.answerAt.Load() - m.in.Load()))
	}
	c.TimeToAnswerMS = h.latency()
	if c.FloodMessages > 0 {
		var last int64
		for seq := range b.custFirst {
			if m := b.recs.lookup(seq); m != nil {
				last = max(last, m.answerAt.Load())
			}
		}
		if first := b.firstSendNS.Load(); first > 0 && last > first {
			c.FloodDrainSecs = round3(time.Duration(last - first).Seconds())
		}
	}
}

// runBacklog pauses Dify, queues --backlog messages, samples memory with
// the backlog on disk, then releases Dify.
func (b *bench) runBacklog(ctx context.Context) (*Backlog, error) {
	o := b.o
	b.dify.Hold()
	secs, late := b.load(ctx, o.Backlog)
	bl := &Backlog{Events: b.accepted.Load(), FillSecs: round3(secs), late: late}
	time.Sleep(500 * time.Millisecond) // let the last commits settle before sampling memory
	m, err := b.scrape(ctx)
	if err != nil {
		b.dify.Release()
		return nil, err
	}
	bl.RSSMiB, bl.HeapMiB = MiB(b.rss()), MiB(m["go_memstats_heap_inuse_bytes"])
	bl.JournalBytes = b.journalBytes(ctx)
	bl.released = time.Now().UnixNano()
	b.dify.Release()
	return bl, nil
}

// drain waits until serve's queue is empty (every accepted message reached
// a final state) and no answer is missing, giving up after --drain-timeout
// without progress.
func (b *bench) drain(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	last, lastAt, lastScrape := int64(-1), time.Now(), time.Time{}
	for {
		got := b.answered.Load()
		if got != last {
			last, lastAt = got, time.Now()
		}
		// The queue is read at once when every answer is in, and now and
		// then otherwise: an event that ended without an answer (handed
		// off, failed) empties the queue too.
		if got >= b.accepted.Load() || time.Since(lastScrape) > 250*time.Millisecond {
			lastScrape = time.Now()
			m, err := b.scrape(ctx)
			if err == nil && m["bridge_queue_depth"] == 0 {
				return nil
			}
		}
		if time.Since(lastAt) > b.o.DrainTimeout {
			return fmt.Errorf("no answer for %s; %d of %d messages answered", b.o.DrainTimeout, got, b.accepted.Load())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// collectEndToEnd fills the end-to-end histograms from the records.
func (b *bench) collectEndToEnd() {
	n := int(b.seq.Load())
	for seq := range n {
		m := b.recs.lookup(seq)
		if m == nil || !m.accepted.Load() || m.answerAt.Load() == 0 {
			continue
		}
		e2e := time.Duration(m.answerAt.Load() - m.in.Load())
		d := time.Duration(m.dify.Load())
		b.e2e.add(e2e)
		b.difyH.add(d)
		b.share.add(e2e - d)
	}
}

// verify counts, from what the simulated Chatwoot stored, how often each
// accepted message was answered and where.
func (b *bench) verify() Correctness {
	n := int(b.seq.Load())
	counts := make([]int32, n)
	var misplaced int64
	b.convMu.Lock()
	convs := append([]int64(nil), b.convs...)
	for _, c := range b.custConvs {
		convs = append(convs, c)
	}
	b.convMu.Unlock()
	byConv := make(map[int64]bool, len(convs))
	for _, c := range convs {
		byConv[c] = true
	}
	for _, conv := range convs {
		for _, m := range b.cw.Messages(conv) {
			if m.MessageType != "outgoing" || m.Private || m.SenderType != "agent_bot" || !strings.HasPrefix(m.Content, benchAnswerPrefix) {
				continue
			}
			seq := seqOf(m.Content)
			if seq < 0 || seq >= n {
				misplaced++
				continue
			}
			counts[seq]++
			if b.conversation(seq) != conv {
				misplaced++
			}
		}
	}
	return Verdict(n, func(seq int) bool { m := b.recs.lookup(seq); return m != nil && m.accepted.Load() }, counts, misplaced)
}

// Verdict judges answer counts: every accepted message exactly once.
func Verdict(n int, accepted func(int) bool, counts []int32, misplaced int64) Correctness {
	var c Correctness
	c.Misplaced = misplaced
	for seq := range n {
		switch {
		case !accepted(seq):
			if counts[seq] > 0 {
				c.Duplicated++ // an answer to a message bridge never accepted
			}
			continue
		case counts[seq] == 0:
			c.Lost++
		case counts[seq] == 1:
			c.AnsweredOnce++
		default:
			c.Duplicated++
		}
		c.Messages++
	}
	c.OK = c.Lost == 0 && c.Duplicated == 0 && c.Misplaced == 0
	return c
}

// ---- PostgreSQL and replicas ----

// pgSchema is the bench's schema in a PostgreSQL database.
type pgSchema struct {
	name, url string
	drop      func()
}

// benchSchema creates a schema of the bench's own in the database base
// names, so that a run neither sees nor leaves anything beside it.
func benchSchema(ctx context.Context, base string) (*pgSchema, error) {
	db, err := sql.Open("pgx", base)
	if err != nil {
		return nil, fmt.Errorf("--database: %w", err)
	}
	name := "bridge_bench_" + strings.ToLower(rand.Text()[:10])
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+name); err != nil {
		_ = db.Close() // the create error is the one worth reporting
		return nil, fmt.Errorf("--database %s: create the bench's schema: %w", store.Display(base), err)
	}
	u, err := url.Parse(base)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("--database: %w", err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return &pgSchema{name: name, url: u.String(), drop: func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = db.ExecContext(ctx, "DROP SCHEMA "+name+" CASCADE") // best effort: the name says what it is
		_ = db.Close()
	}}, nil
}

// journalBytes is the size of the journal: the SQLite file and its WAL,
// or the bench schema's tables with their indexes and TOAST.
func (b *bench) journalBytes(ctx context.Context) int64 {
	if b.schema == "" {
		return fileSize(b.database) + fileSize(b.database+"-wal")
	}
	db, err := sql.Open("pgx", b.database)
	if err != nil {
		return 0
	}
	defer db.Close()
	var n sql.NullInt64
	_ = db.QueryRowContext(ctx, `SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'`, b.schema).Scan(&n) // 0 when it cannot be read
	return n.Int64
}

// walSyncs is how many times the PostgreSQL server flushed its WAL since
// its statistics were reset (pg_stat_wal, PostgreSQL 14 and later); -1 on
// SQLite or when it cannot be read.
func (b *bench) walSyncs(ctx context.Context) int64 {
	if b.schema == "" {
		return -1
	}
	db, err := sql.Open("pgx", b.database)
	if err != nil {
		return -1
	}
	defer db.Close()
	var n int64
	if err := db.QueryRowContext(ctx, "SELECT wal_sync FROM pg_stat_wal").Scan(&n); err != nil {
		return -1
	}
	return n
}

// serveCPU is the CPU time of every serve process.
func (b *bench) serveCPU() time.Duration {
	var t time.Duration
	seen := map[int]bool{}
	for _, s := range append([]benchServer{b.srv}, b.srvs...) {
		if !seen[s.pid()] {
			seen[s.pid()] = true
			t += procCPU(s.pid())
		}
	}
	return t
}

// roundRobin is the load balancer in front of the replicas.
func (b *bench) roundRobin() http.Handler {
	var next atomic.Int64
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 1024, 512
	return &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(r *httputil.ProxyRequest) {
			s := b.srvs[int(next.Add(1))%len(b.srvs)]
			r.SetURL(&url.URL{Scheme: "http", Host: s.addr()})
		},
	}
}
