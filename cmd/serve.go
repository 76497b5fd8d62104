package cmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/internal/drain"
	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/redact"
	"github.com/bridge-dev/bridge/pkg/store"
)

type serveOptions struct {
	listen string
}

func newServeCmd(a *app) *cobra.Command {
	o := &serveOptions{}
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the webhook server and the workers",
		Long: `Run the HTTP server (POST /webhooks/chatwoot, /healthz, /readyz, /metrics,
and the Dashboard App at /app/ when dashboard.key is set) and the workers
until SIGINT or SIGTERM.

Every webhook is journaled before it is acknowledged. On a signal bridge stops
accepting, lets running events finish for a few seconds, and leaves the rest in
the journal; the next start resumes them. A second signal exits at once.

The port is checked before the database is opened. If the workers cannot start
(the journal stays locked or unwritable for a minute) or the HTTP server fails,
serve logs why and exits 1, so a supervisor restarts it.

Without chatwoot.webhook_secret or chatwoot.webhook_token, serve listens only on
a loopback address, unless chatwoot.allow_unauthenticated = true.

Given a listening socket by systemd (bridge.socket: LISTEN_FDS=1, LISTEN_PID),
serve takes it instead of binding the listen key: connections made while serve
restarts wait in the socket's queue. Running events then get 3 s on a stop.

With database = "postgres://…" any number of serve processes can share one
database; an event a process that died was driving is resumed by another after
worker.lease.`,
		Example: `  bridge serve
  bridge serve --listen 0.0.0.0:8080 --config /etc/bridge/bridge.toml`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if c.Flags().Changed("listen") {
				if err := a.v.BindPFlag("listen", c.Flags().Lookup("listen")); err != nil {
					return err
				}
			}
			return runServe(c.Context(), a, o)
		},
	}
	c.Flags().StringVar(&o.listen, "listen", "", "address to listen on (overrides the listen key)")
	return c
}

// server is a running serve: HTTP plus workers, over one store.
type server struct {
	db        *store.DB
	core      *bridge.Bridge
	http      *http.Server
	ln        net.Listener
	log       *slog.Logger
	served    chan error
	ran       chan error
	cancelRun context.CancelFunc

	drain *drain.Listener
}

// freshDrainWait bounds how long a stop waits for accepted connections to
// send their first request (a client that connects and sends nothing).
const freshDrainWait = 2 * time.Second

// serveTuning adjusts what startServer builds: the demo's retry pace, and in
// tests the journal's and the workers' timings.
type serveTuning struct {
	bridge func(*bridge.Options)
	store  []store.Option
	// red masks secrets in what is stored and shown; nil builds one from
	// the configuration.
	red *redact.Redactor
	// ln, when set, is the listening socket to serve on (one passed by
	// systemd) instead of one bound to the listen key.
	ln net.Listener
}

// startServer binds the listener first (so a busy or bad address fails
// before the database is created or migrated), opens the store and starts
// HTTP and workers.
func startServer(ctx context.Context, cfg *config.Config, log *slog.Logger, tune serveTuning) (*server, error) {
	ln := tune.ln
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("listen on %s (key listen): %w", cfg.Listen, err)
		}
	}
	red := tune.red
	if red == nil {
		red = redact.New(cfg.Secrets()...)
	}
	db, err := store.Open(ctx, cfg.Database, append([]store.Option{store.WithRedactor(red.String), store.WithLease(cfg.Worker.Lease)},
		tune.store...)...)
	if err != nil {
		_ = ln.Close() // the open error is the one worth reporting
		return nil, err
	}
	opts := bridgeOptions(cfg, db, log)
	opts.Redactor = red
	if tune.bridge != nil {
		tune.bridge(&opts)
	}
	core := bridge.New(opts)
	dl := drain.Wrap(ln)
	ln = dl
	s := &server{db: db, core: core, ln: ln, drain: dl, log: log, served: make(chan error, 1), ran: make(chan error, 1)}
	s.http = core.Server()
	s.http.ConnState = dl.ConnState
	// Called once Shutdown has closed the listener: from here on new
	// connections are refused and only requests in flight are served.
	s.http.RegisterOnShutdown(func() { log.Info("stopped accepting webhooks; finishing requests in flight") })
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	s.cancelRun = cancelRun
	go func() { s.ran <- core.Run(runCtx) }()
	go func() { s.served <- s.http.Serve(ln) }()
	go func() {
		<-ctx.Done()
		cancelRun()
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *server) Addr() string { return s.ln.Addr().String() }

// wait blocks until ctx ends (or the server fails), then shuts down in
// order: stop accepting, let handlers commit, stop workers, close the store.
// The workers wind down while the HTTP server drains (Run's context ends
// with ctx), so running events get their grace period at the same time;
// what does not finish stays journaled for the next start.
//
// Every part of serve is up or serve ends: when the HTTP server fails, or
// the workers could not start (the journal stayed locked or unwritable),
// wait shuts the rest down and returns the error, so the process exits
// non-zero and a supervisor restarts it, instead of acknowledging webhooks
// that no worker would answer.
func (s *server) wait(ctx context.Context) error {
	var serveErr, runErr error
	ran := false
	select {
	case <-ctx.Done():
	case serveErr = <-s.served:
		s.log.Error("the HTTP server stopped; shutting down", "err", serveErr)
	case runErr = <-s.ran:
		ran = true
		if runErr == nil && ctx.Err() != nil {
			break // they stopped because a stop was asked for
		}
		if runErr == nil {
			runErr = errors.New("the workers stopped")
		}
		s.log.Error("the workers are not running; shutting down", "err", runErr)
	}
	s.cancelRun()
	s.log.Info("shutting down")
	s.drain.Stop(freshDrainWait)
	shCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	herr := s.http.Shutdown(shCtx)
	if errors.Is(herr, context.DeadlineExceeded) {
		// A connection opened but never used keeps Shutdown waiting; every
		// handler that could commit has had its chance, so cut the rest.
		s.log.Warn("closing connections still open after 5s")
		herr = s.http.Close()
	}
	if !ran {
		runErr = <-s.ran
	}
	cerr := s.db.Close()
	if errors.Is(serveErr, http.ErrServerClosed) || errors.Is(serveErr, net.ErrClosed) {
		serveErr = nil
	}
	return errors.Join(serveErr, herr, runErr, cerr)
}

func runServe(ctx context.Context, a *app, _ *serveOptions) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	ln, err := inheritedListener()
	if err != nil {
		return err
	}
	tune := serveTuning{red: a.red, ln: ln}
	if ln != nil {
		// The address is the socket unit's; the loopback rule below
		// applies to it.
		cfg.Listen = ln.Addr().String()
		// Webhooks that arrive while serve restarts wait in the socket's
		// queue, and Chatwoot gives up on a delivery after 5 s: the next
		// process must be accepting well before then. Events cut short
		// are resumed by it.
		tune.bridge = func(o *bridge.Options) { o.ShutdownGrace = inheritedGrace }
	}
	if err := cfg.CheckWebhookAuth(); err != nil {
		if ln != nil {
			_ = ln.Close() // the configuration error is the one worth reporting
		}
		return err
	}
	log := a.log()
	if n := cfg.MemoryLimitBytes(); n > 0 {
		// Process-wide, so here rather than in startServer, which tests
		// and the bench also run inside other processes.
		debug.SetMemoryLimit(n)
	}
	s, err := startServer(ctx, cfg, log, tune)
	if err != nil {
		return err
	}
	socket := "bound"
	if ln != nil {
		socket = "inherited"
	}
	log.Info("bridge serving", "listen", s.Addr(), "socket", socket, "database", dbDisplay(cfg.Database),
		"webhook", "http://"+s.Addr()+"/webhooks/chatwoot", "chatwoot", cfg.Chatwoot.BaseURL,
		"memory_limit", memoryLimitText(debug.SetMemoryLimit(-1)))
	if w := cfg.FilePermissionsWarning(); w != "" {
		log.Warn("config file holding secrets is readable by group or others", "detail", w)
	}
	if cfg.Chatwoot.WebhookSecret == "" && cfg.Chatwoot.WebhookToken == "" {
		log.Warn("webhooks are not authenticated: set chatwoot.webhook_secret or chatwoot.webhook_token",
			"allow_unauthenticated", cfg.Chatwoot.AllowUnauthenticated)
	}
	err = s.wait(ctx)
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// memoryLimitText is the soft memory limit in force, for the log.
func memoryLimitText(n int64) string {
	if n == math.MaxInt64 {
		return "none"
	}
	return fmt.Sprintf("%.0fMiB", float64(n)/(1<<20))
}
