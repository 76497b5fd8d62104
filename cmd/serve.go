package cmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/config"
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
		Long: `Run the HTTP server (POST /webhooks/chatwoot, /healthz, /readyz, /metrics)
and the workers until SIGINT or SIGTERM.

Every webhook is journaled before it is acknowledged. On a signal bridge stops
accepting, lets running events finish for a few seconds, and leaves the rest in
the journal; the next start resumes them. A second signal exits at once.`,
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
	db     *store.DB
	core   *bridge.Bridge
	http   *http.Server
	ln     net.Listener
	log    *slog.Logger
	served chan error
	ran    chan error
}

// bridgeOptions turns the configuration into the core's options.
func bridgeOptions(cfg *config.Config, db *store.DB, log *slog.Logger) bridge.Options {
	o := bridge.Options{
		Store:            db,
		Logger:           log,
		Chatwoot:         chatwoot.NewClient(chatwoot.Options{BaseURL: cfg.Chatwoot.BaseURL, Token: cfg.Chatwoot.APIToken.Reveal()}),
		WebhookToken:     cfg.Chatwoot.WebhookToken.Reveal(),
		WebhookSecret:    cfg.Chatwoot.WebhookSecret.Reveal(),
		BotStatuses:      cfg.Chatwoot.BotStatuses,
		EchoWait:         cfg.Chatwoot.EchoWait,
		DifyBaseURL:      cfg.Dify.BaseURL,
		DifyTimeout:      cfg.Dify.Timeout,
		DifyIdleTimeout:  cfg.Dify.IdleTimeout,
		DifyMaxRetries:   cfg.Dify.MaxRetries,
		Concurrency:      cfg.Worker.Concurrency,
		Debounce:         cfg.Worker.Debounce,
		RetentionIgnored: cfg.Retention.Ignored,
		Transfer:         cfg.Attachments.Transfer,
		MaxFileBytes:     int64(cfg.Attachments.MaxMB) << 20,
		DownloadTimeout:  cfg.Attachments.DownloadTimeout,
		VoiceWait:        cfg.Voice.TranscriptionWait,
		VoiceFallback:    cfg.Voice.Fallback,
		VoiceAskMessage:  cfg.Voice.AskMessage,
		Citations:        cfg.Answer.Citations,
		CSATFeedback:     cfg.Feedback.CSAT,
		Handoff: bridge.HandoffOptions{
			Keywords:         cfg.Handoff.Keywords,
			AIMarker:         cfg.Handoff.AIMarker,
			Message:          cfg.Handoff.Message,
			Labels:           cfg.Handoff.Labels,
			TeamID:           cfg.Handoff.TeamID,
			OpenOnAgentReply: cfg.Handoff.OpenOnAgentReply,
		},
	}
	if cfg.Chatwoot.UserToken != "" {
		o.ChatwootUser = chatwoot.NewClient(chatwoot.Options{BaseURL: cfg.Chatwoot.BaseURL, Token: cfg.Chatwoot.UserToken.Reveal()})
	}
	return o
}

// startServer opens the store, binds the listener (so a bad address fails
// here, not in a goroutine) and starts HTTP and workers.
func startServer(ctx context.Context, cfg *config.Config, log *slog.Logger, tune func(*bridge.Options)) (*server, error) {
	db, err := store.Open(ctx, cfg.Database)
	if err != nil {
		return nil, err
	}
	opts := bridgeOptions(cfg, db, log)
	if tune != nil {
		tune(&opts)
	}
	core := bridge.New(opts)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		_ = db.Close() // the listen error is the one worth reporting
		return nil, fmt.Errorf("listen on %s (key listen): %w", cfg.Listen, err)
	}
	s := &server{db: db, core: core, ln: ln, log: log, served: make(chan error, 1), ran: make(chan error, 1)}
	s.http = &http.Server{
		Handler:           core.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Called once Shutdown has closed the listener: from here on new
	// connections are refused and only requests in flight are served.
	s.http.RegisterOnShutdown(func() { log.Info("stopped accepting webhooks; finishing requests in flight") })
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
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
func (s *server) wait(ctx context.Context) error {
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-s.served:
	}
	s.log.Info("shutting down")
	shCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	herr := s.http.Shutdown(shCtx)
	if errors.Is(herr, context.DeadlineExceeded) {
		// A connection opened but never used keeps Shutdown waiting; every
		// handler that could commit has had its chance, so cut the rest.
		s.log.Warn("closing connections still open after 5s")
		herr = s.http.Close()
	}
	runErr := <-s.ran
	cerr := s.db.Close()
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return errors.Join(serveErr, herr, runErr, cerr)
}

func runServe(ctx context.Context, a *app, _ *serveOptions) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	log := a.log()
	s, err := startServer(ctx, cfg, log, nil)
	if err != nil {
		return err
	}
	log.Info("bridge serving", "listen", s.Addr(), "database", absPath(cfg.Database),
		"webhook", "http://"+s.Addr()+"/webhooks/chatwoot", "chatwoot", cfg.Chatwoot.BaseURL)
	if w := cfg.FilePermissionsWarning(); w != "" {
		log.Warn("config file holding secrets is readable by group or others", "detail", w)
	}
	if cfg.Chatwoot.WebhookSecret == "" && cfg.Chatwoot.WebhookToken == "" {
		log.Warn("webhooks are not authenticated: set chatwoot.webhook_secret or chatwoot.webhook_token")
	}
	err = s.wait(ctx)
	if err == nil {
		log.Info("stopped")
	}
	return err
}
