// Package bridge is the core: it takes Chatwoot webhooks, journals them,
// decides, and in the background asks the routed Dify app and posts the
// answer, handing the conversation to a human when it should.
package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/dashboard"
	"github.com/bridge-dev/bridge/pkg/dify"
	"github.com/bridge-dev/bridge/pkg/fetch"
	"github.com/bridge-dev/bridge/pkg/redact"
	"github.com/bridge-dev/bridge/pkg/store"
)

// HandoffOptions are the [handoff] defaults; routes may override some.
type HandoffOptions struct {
	Keywords         []string
	AIMarker         string
	Message          string
	Labels           []string
	TeamID           int64
	OpenOnAgentReply bool
}

// Options wire a Bridge. cmd builds them from the configuration.
type Options struct {
	Store *store.DB
	// Chatwoot carries chatwoot.api_token (agent bot or user); ChatwootUser,
	// when set, carries chatwoot.user_token for what a bot may not do (labels).
	Chatwoot     *chatwoot.Client
	ChatwootUser *chatwoot.Client
	Logger       *slog.Logger
	Now          func() time.Time
	Metrics      *Metrics

	WebhookToken  string
	WebhookSecret string
	BotStatuses   []string
	// DashboardKey, when set, serves the Dashboard App at /app/ (see
	// pkg/dashboard); without it /app/ answers 404.
	DashboardKey string
	// PublicURL is how people reach bridge (public_url); with DashboardKey
	// a handoff note links to the conversation's Dashboard App page.
	PublicURL string
	// IdleSweep is how often conversations humans left idle are looked for
	// (routes whose return rule is idle; default 30s).
	IdleSweep time.Duration

	DifyBaseURL     string
	DifyTimeout     time.Duration
	DifyIdleTimeout time.Duration
	DifyMaxRetries  int
	DifyHTTPClient  *http.Client

	// EchoWait bounds how long a post in doubt waits for Chatwoot's webhook
	// of it before it is made again, when there is no user token to ask
	// Chatwoot directly (default 5s).
	EchoWait time.Duration

	Handoff     HandoffOptions
	Concurrency int
	Debounce    time.Duration
	// ShutdownGrace is how long running events may finish after Run's
	// context ends before they are interrupted and left in the journal.
	ShutdownGrace time.Duration
	// RetryBase is the first backoff delay of Dify and Chatwoot retries.
	RetryBase time.Duration
	// RetentionIgnored: ignored and rejected events older than this are
	// deleted in the background; 0 keeps them.
	RetentionIgnored time.Duration
	// Getenv reads route keys given as --dify-key-env (default os.Getenv).
	Getenv func(string) string

	// Redactor masks credentials in text bridge stores or shows; route
	// keys are added to it as routes are read. nil masks only what is
	// shaped like a credential.
	Redactor *redact.Redactor
	// StartupRetryFor bounds how long Run retries resuming the journal at
	// start (another process may hold the file locked) before it fails
	// (default 1 minute).
	StartupRetryFor time.Duration
	// OrphanGrace is added to DifyTimeout to tell a `working` event that no
	// worker holds any more (its process died) from one in progress
	// (default 30s): such an event is put back in the queue.
	OrphanGrace time.Duration
	// ReadyTimeout bounds /readyz's journal write (default 1s).
	ReadyTimeout time.Duration
	// BodyTimeout bounds the upload of a webhook body (default 10s); a
	// client slower than that gets 408.
	BodyTimeout time.Duration
	// JournalBudget bounds journaling a webhook once its body is in
	// (default 3s, inside Chatwoot's 5s).
	JournalBudget time.Duration
	// Transfer is how attachments reach Dify: auto (default), remote_url
	// or upload; a route may override it.
	Transfer string
	// MaxFileBytes caps a file bridge downloads, either way (default 25 MB).
	MaxFileBytes int64
	// DownloadTimeout bounds one file's download (default 60s).
	DownloadTimeout time.Duration
	// VoiceWait is how long a voice note waits for Chatwoot's own
	// transcription; 0 means Chatwoot does not transcribe.
	VoiceWait time.Duration
	// VoiceFallback is what a voice note nobody could transcribe gets: ask
	// (VoiceAskMessage, default) or handoff; a route may override it.
	VoiceFallback   string
	VoiceAskMessage string
	// Citations "append" adds an answer's knowledge sources to it.
	Citations string
	// CSATFeedback sends CSAT ratings to Dify as feedback.
	CSATFeedback bool
	// Resolve looks host names up for the download rules (nil: the
	// system resolver).
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// Dial connects downloads to an address the rules allowed (nil: a
	// plain dialer); tests map names with it.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DefaultConcurrency is worker.concurrency's default: how many events may
// be in progress at once. A worker spends nearly all its time waiting for
// Dify (seconds per answer), and a waiting worker costs a goroutine and a
// connection, some tens of KiB (see the README's Performance section), so
// there are enough for a burst of a thousand customers to be answered in
// one Dify latency. A Dify app with a lower cap is protected by its route's
// max_in_flight and by the back-off on its "too many requests".
const DefaultConcurrency = 1024

// Bridge is the running core. New starts nothing; Run starts the workers.
type Bridge struct {
	o   Options
	log *slog.Logger

	routesMu   sync.Mutex
	routes     map[int64]store.Route // by inbox
	routesByID map[int64]store.Route
	routesAt   time.Time

	difyMu sync.Mutex
	difys  map[string]*dify.Client

	lc lifecycleState

	wake    chan struct{}
	running sync.Map                   // conversation key → *runningTask
	merged  sync.Map                   // event id → []int64 of the events merged into it
	held    sync.Map                   // event id → struct{}: events a worker of this process holds
	sched   atomic.Pointer[dispatcher] // while Run runs
	// ackPressure: until this time (unix ns) webhooks wait too long for
	// the journal, and the dispatcher starts no more than minWorkers.
	ackPressure atomic.Int64
	inDify      atomic.Int64 // workers waiting for a Dify answer
	bg          sync.WaitGroup
	state       workerState
	// ownSwept is the last ownership entry retention looked at; only Run's
	// goroutine uses it.
	ownSwept int64

	paramsMu    sync.Mutex
	params      map[string]cachedParams   // by Dify URL and route
	difyFetch   map[string]*fetch.Fetcher // by Dify URL
	fetchOnce   sync.Once
	cwFetch     *fetch.Fetcher
	cwFetchErr  error
	transcripts transcriptWaiters

	pingMu sync.Mutex
	ping   *pingCall // the readiness write in flight, shared by concurrent probes

	rejects *rejectLimiter
}

// New returns a Bridge with defaults filled in.
func New(o Options) *Bridge {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if len(o.BotStatuses) == 0 {
		o.BotStatuses = []string{"pending"}
	}
	if o.DifyTimeout <= 0 {
		o.DifyTimeout = 120 * time.Second
	}
	if o.DifyIdleTimeout <= 0 {
		o.DifyIdleTimeout = 45 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 10 * time.Second
	}
	if o.RetryBase <= 0 {
		o.RetryBase = 500 * time.Millisecond
	}
	if o.EchoWait <= 0 {
		o.EchoWait = 5 * time.Second
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.StartupRetryFor <= 0 {
		o.StartupRetryFor = time.Minute
	}
	if o.OrphanGrace <= 0 {
		o.OrphanGrace = 30 * time.Second
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = time.Second
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = 10 * time.Second
	}
	if o.JournalBudget <= 0 {
		o.JournalBudget = 3 * time.Second
	}
	if o.IdleSweep <= 0 {
		o.IdleSweep = 30 * time.Second
	}

	if o.MaxFileBytes <= 0 {
		o.MaxFileBytes = fetch.DefaultMaxBytes
	}
	if o.DownloadTimeout <= 0 {
		o.DownloadTimeout = fetch.DefaultTimeout
	}
	if o.VoiceFallback == "" {
		o.VoiceFallback = VoiceAsk
	}
	if o.VoiceAskMessage == "" {
		o.VoiceAskMessage = "Sorry, I can't listen to voice messages here. Could you type your question?"
	}
	return &Bridge{o: o, log: o.Logger, difys: map[string]*dify.Client{}, wake: make(chan struct{}, 1),
		rejects: newRejectLimiter(o.Now), params: map[string]cachedParams{}, difyFetch: map[string]*fetch.Fetcher{}}
}

// WebhookPath is where bridge serves Chatwoot's webhooks; public_url plus
// this path is what an agent bot's outgoing_url must be.
const WebhookPath = "/webhooks/chatwoot"

// routesTTL bounds how stale the route cache may be: routes are changed by
// the CLI in another process, and the next webhook within this much time
// may still see the old set.
const routesTTL = time.Second

func (b *Bridge) loadRoutes(ctx context.Context) error {
	b.routesMu.Lock()
	defer b.routesMu.Unlock()
	if b.routes != nil && b.o.Now().Sub(b.routesAt) < routesTTL {
		return nil
	}
	rs, err := b.o.Store.Routes(ctx)
	if err != nil {
		return err
	}
	b.routes = make(map[int64]store.Route, len(rs))
	b.routesByID = make(map[int64]store.Route, len(rs))
	for _, r := range rs {
		b.routes[r.InboxID] = r
		b.routesByID[r.ID] = r
		// An upstream error may echo a route's key: mask it like a
		// configured secret.
		b.o.Redactor.Add(r.DifyKey)
		if r.DifyKeyEnv != "" {
			b.o.Redactor.Add(b.o.Getenv(r.DifyKeyEnv))
		}
	}
	b.routesAt = b.o.Now()
	return nil
}

// routeForInbox returns the inbox's route, or nil.
func (b *Bridge) routeForInbox(ctx context.Context, inbox int64) (*store.Route, error) {
	if err := b.loadRoutes(ctx); err != nil {
		return nil, err
	}
	b.routesMu.Lock()
	defer b.routesMu.Unlock()
	if r, ok := b.routes[inbox]; ok {
		return &r, nil
	}
	return nil, nil
}

// routeByID returns a route from the cache (at most routesTTL old).
func (b *Bridge) routeByID(ctx context.Context, id int64) (store.Route, error) {
	if err := b.loadRoutes(ctx); err != nil {
		return store.Route{}, err
	}
	b.routesMu.Lock()
	r, ok := b.routesByID[id]
	b.routesMu.Unlock()
	if !ok {
		return r, fmt.Errorf("route %d: %w", id, store.ErrNotFound)
	}
	return r, nil
}

// InvalidateRoutes makes the next lookup read routes from the database.
func (b *Bridge) InvalidateRoutes() {
	b.routesMu.Lock()
	b.routes = nil
	b.routesMu.Unlock()
}

// RouteKey resolves the Dify key of a route (stored, or from the
// environment variable it names).
func (b *Bridge) RouteKey(r *store.Route) (string, error) {
	if r.DifyKeyEnv != "" {
		k := b.o.Getenv(r.DifyKeyEnv)
		if k == "" {
			return "", fmt.Errorf("route %d: environment variable %s is empty", r.ID, r.DifyKeyEnv)
		}
		return k, nil
	}
	if r.DifyKey == "" {
		return "", fmt.Errorf("route %d has no dify key", r.ID)
	}
	return r.DifyKey, nil
}

// RouteURL is the Dify base URL of a route.
func (b *Bridge) RouteURL(r *store.Route) string {
	if r.DifyURL != "" {
		return r.DifyURL
	}
	return b.o.DifyBaseURL
}

func (b *Bridge) difyFor(r *store.Route) (*dify.Client, error) {
	key, err := b.RouteKey(r)
	if err != nil {
		return nil, err
	}
	url := b.RouteURL(r)
	id := url + "\x00" + key
	b.difyMu.Lock()
	defer b.difyMu.Unlock()
	if c, ok := b.difys[id]; ok {
		return c, nil
	}
	c := dify.NewClient(dify.Options{BaseURL: url, Key: key, HTTPClient: b.o.DifyHTTPClient,
		IdleTimeout: b.o.DifyIdleTimeout, UserAgent: "bridge"})
	b.difys[id] = c
	return c, nil
}

// Handler serves the webhook, health, readiness and metrics endpoints, and
// the Dashboard App when a dashboard key is set.
func (b *Bridge) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(WebhookPath, b.serveWebhook)
	mux.HandleFunc("GET /healthz", b.serveHealth)
	mux.HandleFunc("GET /readyz", b.serveReady)
	mux.Handle("GET /metrics", b.o.Metrics.Handler())
	if b.o.DashboardKey != "" {
		mux.Handle(dashboard.Path, dashboard.New(dashboard.Options{Store: b.o.Store, Key: b.o.DashboardKey,
			ChatwootURL: b.o.Chatwoot.BaseURL(), Actions: dashActions{b}, Logger: b.log, Now: b.o.Now}))
	}
	return mux
}

// serveHealth is the liveness probe: 200 while the process runs and its
// workers are alive (running, or still starting), 503 once the workers
// ended with an error; serve then exits, and a supervisor restarts it.
func (b *Bridge) serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if phase, reason := b.state.get(); phase == phaseFailed {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("workers stopped: " + oneLine(reason) + "\n")) // a failed write means the client left
		return
	}
	_, _ = w.Write([]byte("ok\n")) // as above
}

// serveReady is the readiness probe: 200 when the workers run and the
// journal takes a write. It answers within ReadyTimeout whatever the
// journal does (a lock held by another process, a slow disk).
func (b *Bridge) serveReady(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	notReady := func(why string) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(oneLine(why) + "\n")) // a failed write means the client left
	}
	switch phase, reason := b.state.get(); phase {
	case phaseRunning:
	case phaseStarting:
		notReady("workers starting: " + reason)
		return
	case phaseFailed:
		notReady("workers not running: stopped: " + reason)
		return
	default:
		notReady("workers not running")
		return
	}
	if err := b.journalWritable(r.Context()); err != nil {
		notReady("database not writable: " + err.Error())
		return
	}
	_, _ = w.Write([]byte("ready\n")) // as above
}

// pingCall is one readiness write; probes that arrive while it runs wait
// for it instead of queueing writes of their own behind a lock.
type pingCall struct {
	done chan struct{}
	err  error
}

// journalWritable runs (or joins) a test write and waits at most
// ReadyTimeout for it.
func (b *Bridge) journalWritable(ctx context.Context) error {
	b.pingMu.Lock()
	p := b.ping
	if p == nil {
		p = &pingCall{done: make(chan struct{})}
		b.ping = p
		b.bg.Go(func() {
			// Ping tries once; its wait is bounded by the busy timeout.
			p.err = b.o.Store.Ping(context.Background())
			b.pingMu.Lock()
			b.ping = nil
			b.pingMu.Unlock()
			close(p.done)
		})
	}
	b.pingMu.Unlock()
	t := time.NewTimer(b.o.ReadyTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return fmt.Errorf("no write completed within %s (the file is locked by another process, or the disk is slow or full)", b.o.ReadyTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Worker phases, as the probes report them.
const (
	phaseIdle     = iota // Run not called (or returned after a stop)
	phaseStarting        // resuming the journal
	phaseRunning
	phaseFailed // Run ended with an error
)

// workerState is what /healthz and /readyz know about Run.
type workerState struct {
	mu     sync.Mutex
	phase  int
	reason string
}

func (s *workerState) set(phase int, reason string) {
	s.mu.Lock()
	s.phase, s.reason = phase, reason
	s.mu.Unlock()
}

func (s *workerState) get() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phase, s.reason
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}
