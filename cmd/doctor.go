package cmd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/store"
)

type doctorOptions struct {
	timeout time.Duration
}

func newDoctorCmd(a *app) *cobra.Command {
	o := &doctorOptions{}
	c := &cobra.Command{
		Use:   "doctor",
		Short: "Check everything bridge needs and say what to fix",
		Long: `Probe everything bridge needs and print a checklist: ✓ fine, ! warning,
✗ failed, each with one line of detail and, for ! and ✗, the fix.

Checked: the configuration (and whether a file holding secrets is readable by
others); the database (opens, writable, schema current); the routes; Chatwoot
(reachable, version, the token and whether it is an agent bot's or a user's,
the account, labels on handoff); webhook authentication and the clock; how
Chatwoot reaches bridge (public_url set, and not a private, loopback,
link-local, CGNAT or container-internal address, which Chatwoot 4.14 and later
refuse to deliver to); each routed inbox and the URL its agent bot sends to
(needs chatwoot.user_token); each route's Dify key, app mode and required
inputs; and what the journal says: silence, rejected webhooks, inboxes that
send webhooks but have no route, failed events by reason, and events no
worker has picked up.

Probes run in parallel, each bounded by --timeout, so doctor answers in
seconds even when a host never answers. --dify-key-env routes read the
variable from doctor's own environment.

Exit status: 0 when nothing failed (warnings alone exit 0), 1 when a check
failed, 2 for a bad flag.`,
		Example: `  bridge doctor
  bridge doctor --timeout 10s --config /etc/bridge/bridge.toml
  bridge doctor --json | jq '.checks[] | select(.status != "ok")'`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.timeout <= 0 {
				return usagef("bridge doctor --timeout 5s", "--timeout must be positive")
			}
			return runDoctor(c.Context(), a, o)
		},
	}
	c.Flags().DurationVar(&o.timeout, "timeout", 5*time.Second, "longest wait for each probe")
	return c
}

func runDoctor(ctx context.Context, a *app, o *doctorOptions) error {
	cfg, err := a.config()
	if err != nil {
		// A configuration that does not load is the first failed check,
		// not a usage error: doctor's job is to say what is wrong.
		fix := "correct the value in the file (or the BRIDGE_* environment variable) and run bridge doctor again"
		if errors.Is(err, config.ErrNotFound) {
			fix = "create the file (see bridge.example.toml) or leave out --config"
		}
		return a.printChecks([]bridge.CheckResult{{Name: "config", Status: bridge.CheckFail,
			Detail: strings.ReplaceAll(err.Error(), "\n", " "), Fix: fix}})
	}
	opts := bridge.DoctorOptions{
		AccountID:     cfg.Chatwoot.AccountID,
		PublicURL:     cfg.PublicURL,
		DifyBaseURL:   cfg.Dify.BaseURL,
		BotStatuses:   cfg.Chatwoot.BotStatuses,
		HandoffLabels: cfg.Handoff.Labels,
		WebhookSecret: cfg.Chatwoot.WebhookSecret != "",
		WebhookToken:  cfg.Chatwoot.WebhookToken != "",
		APITokenEmpty: cfg.Chatwoot.APIToken == "",
		Timeout:       o.timeout,
		ConfigChecks:  configChecks(cfg),
		Chatwoot: chatwoot.NewClient(chatwoot.Options{BaseURL: cfg.Chatwoot.BaseURL,
			Token: cfg.Chatwoot.APIToken.Reveal(), Timeout: o.timeout}),
	}
	if a.now != nil {
		opts.Now = a.now
	}
	if cfg.Chatwoot.UserToken != "" {
		opts.ChatwootUser = chatwoot.NewClient(chatwoot.Options{BaseURL: cfg.Chatwoot.BaseURL,
			Token: cfg.Chatwoot.UserToken.Reveal(), Timeout: o.timeout})
	}
	// Doctor does not create a database where there is none: a missing file
	// usually means the wrong directory or database key.
	if _, err := os.Stat(cfg.Database); errors.Is(err, fs.ErrNotExist) {
		opts.StoreErr = fmt.Errorf("%s does not exist: %w", cfg.Database, fs.ErrNotExist)
	} else {
		db, err := store.Open(ctx, cfg.Database)
		if err != nil {
			opts.StoreErr = err
		} else {
			defer db.Close()
			opts.Store = db
		}
	}
	return a.printChecks(bridge.Doctor(ctx, opts))
}

// configChecks reports the configuration that loaded, and warns when its
// file holds secrets others can read.
func configChecks(cfg *config.Config) []bridge.CheckResult {
	detail := "no config file: defaults and BRIDGE_* environment variables"
	if cfg.File != "" {
		detail = "loaded " + cfg.File
	}
	out := []bridge.CheckResult{{Name: "config", Status: bridge.CheckOK, Detail: detail}}
	if w := cfg.FilePermissionsWarning(); w != "" {
		detail, fix := w, "chmod 600 "+cfg.File
		if i := strings.Index(w, "; run: "); i >= 0 {
			detail, fix = w[:i], w[i+len("; run: "):]
		}
		out = append(out, bridge.CheckResult{Name: "config file", Status: bridge.CheckWarn, Detail: detail, Fix: fix})
	}
	return out
}

// doctorReport is doctor's --json output.
type doctorReport struct {
	Checks []bridge.CheckResult `json:"checks"`
	OK     bool                 `json:"ok"`
}

// printChecks renders the checklist (or JSON) and turns a failed check into
// exit status 1.
func (a *app) printChecks(checks []bridge.CheckResult) error {
	var nOK, nWarn, nFail int
	for _, c := range checks {
		switch c.Status {
		case bridge.CheckOK:
			nOK++
		case bridge.CheckWarn:
			nWarn++
		default:
			nFail++
		}
	}
	if a.json {
		if checks == nil {
			checks = []bridge.CheckResult{}
		}
		if err := a.printJSON(doctorReport{Checks: checks, OK: nFail == 0}); err != nil {
			return err
		}
	} else {
		st := a.styles()
		width := 0
		for _, c := range checks {
			width = max(width, len(c.Name))
		}
		w := a.io.Out
		for _, c := range checks {
			mark := st.ok.Render("✓")
			switch c.Status {
			case bridge.CheckWarn:
				mark = st.warn.Render("!")
			case bridge.CheckFail:
				mark = st.bad.Render("✗")
			}
			fmt.Fprintf(w, "%s %-*s  %s\n", mark, width, c.Name, c.Detail)
			if c.Fix != "" && c.Status != bridge.CheckOK {
				fmt.Fprintf(w, "  %*s  %s %s\n", width, "", st.dim.Render("fix:"), c.Fix)
			}
		}
		fmt.Fprintf(w, "\n%d ok, %d %s, %d failed\n", nOK, nWarn, pluralWord(nWarn, "warning", "warnings"), nFail)
	}
	if nFail > 0 {
		return &failedError{}
	}
	return nil
}

func pluralWord(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
