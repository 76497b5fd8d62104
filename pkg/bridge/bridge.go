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
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/dify"
	"github.com/bridge-dev/bridge/pkg/fetch"
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

	wake    chan struct{}
	running sync.Map // conversation key → *runningTask
	merged  sync.Map // event id → []int64 of the events merged into it
	bg      sync.WaitGroup
	ready   chanBool

	paramsMu    sync.Mutex
	params      map[string]cachedParams   // by Dify URL and route
	difyFetch   map[string]*fetch.Fetcher // by Dify URL
	fetchOnce   sync.Once
	cwFetch     *fetch.Fetcher
	cwFetchErr  error
	transcripts transcriptWaiters
}

type chanBool struct {
	mu sync.Mutex
	v  bool
}

func (c *chanBool) set(v bool) { c.mu.Lock(); c.v = v; c.mu.Unlock() }
func (c *chanBool) get() bool  { c.mu.Lock(); defer c.mu.Unlock(); return c.v }

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
		o.Concurrency = 8
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
		params: map[string]cachedParams{}, difyFetch: map[string]*fetch.Fetcher{}}
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

// Handler serves the webhook, health, readiness and metrics endpoints.
func (b *Bridge) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(WebhookPath, b.serveWebhook)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n")) // a failed write means the client left
	})
	mux.HandleFunc("GET /readyz", b.serveReady)
	mux.Handle("GET /metrics", b.o.Metrics.Handler())
	return mux
}

func (b *Bridge) serveReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !b.ready.get() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("workers not running\n")) // a failed write means the client left
		return
	}
	if err := b.o.Store.Ping(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("database not writable: " + oneLine(err.Error()) + "\n")) // as above
		return
	}
	_, _ = w.Write([]byte("ready\n")) // as above
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}
