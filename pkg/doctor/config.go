package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/store"
)

// ConfigFailed is the checklist when the configuration does not load: that
// is the first failed check, not a usage error, since doctor's job is to
// say what is wrong.
func ConfigFailed(err error) []Result {
	fix := "correct the value in the file (or the BRIDGE_* environment variable) and run bridge doctor again"
	if errors.Is(err, config.ErrNotFound) {
		fix = "create the file (see bridge.example.toml) or leave out --config"
	}
	return []Result{{Name: "config", Status: Fail, Detail: strings.ReplaceAll(err.Error(), "\n", " "), Fix: fix}}
}

// FromConfig builds the options of a run from the configuration, each probe
// bounded by timeout, and opens the database when it exists. close releases
// the database.
func FromConfig(ctx context.Context, cfg *config.Config, timeout time.Duration) (o Options, close func()) {
	o = Options{
		AccountID:     cfg.Chatwoot.AccountID,
		PublicURL:     cfg.PublicURL,
		DifyBaseURL:   cfg.Dify.BaseURL,
		BotStatuses:   cfg.Chatwoot.BotStatuses,
		HandoffLabels: cfg.Handoff.Labels,
		WebhookSecret: cfg.Chatwoot.WebhookSecret != "",
		WebhookToken:  cfg.Chatwoot.WebhookToken != "",
		APITokenEmpty: cfg.Chatwoot.APIToken == "",
		Timeout:       timeout,
		DifyTimeout:   cfg.Dify.Timeout,
		ConfigChecks:  ConfigChecks(cfg),
		Chatwoot: chatwoot.NewClient(chatwoot.Options{BaseURL: cfg.Chatwoot.BaseURL,
			Token: cfg.Chatwoot.APIToken.Reveal(), Timeout: timeout}),
	}
	if cfg.Chatwoot.UserToken != "" {
		o.ChatwootUser = chatwoot.NewClient(chatwoot.Options{BaseURL: cfg.Chatwoot.BaseURL,
			Token: cfg.Chatwoot.UserToken.Reveal(), Timeout: timeout})
	}
	close = func() {}
	// Doctor does not create a database where there is none: a missing file
	// usually means the wrong directory or database key.
	if _, err := os.Stat(store.SQLitePath(cfg.Database)); !store.IsPostgres(cfg.Database) && errors.Is(err, fs.ErrNotExist) {
		o.StoreErr = fmt.Errorf("%s does not exist: %w", store.SQLitePath(cfg.Database), fs.ErrNotExist)
	} else {
		db, err := store.Open(ctx, cfg.Database)
		if err != nil {
			o.StoreErr = err
		} else {
			o.Store = db
			close = func() { _ = db.Close() } // read-mostly; nothing to report after the checks
		}
	}
	return o, close
}

// ConfigChecks reports the configuration that loaded, and warns when its
// file holds secrets others can read.
func ConfigChecks(cfg *config.Config) []Result {
	detail := "no config file: defaults and BRIDGE_* environment variables"
	if cfg.File != "" {
		detail = "loaded " + cfg.File
	}
	out := []Result{{Name: "config", Status: OK, Detail: detail}}
	if w := cfg.FilePermissionsWarning(); w != "" {
		detail, fix := w, "chmod 600 "+cfg.File
		if i := strings.Index(w, "; run: "); i >= 0 {
			detail, fix = w[:i], w[i+len("; run: "):]
		}
		out = append(out, Result{Name: "config file", Status: Warn, Detail: detail, Fix: fix})
	}
	return out
}

// Report is doctor's --json output.
type Report struct {
	Checks []Result `json:"checks"`
	OK     bool     `json:"ok"`
}

// Tally counts the results by status.
func Tally(checks []Result) (ok, warn, fail int) {
	for _, c := range checks {
		switch c.Status {
		case OK:
			ok++
		case Warn:
			warn++
		default:
			fail++
		}
	}
	return ok, warn, fail
}
