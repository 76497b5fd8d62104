package cmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/pkg/doctor"
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
worker has picked up or that are working without progress for longer than
dify.timeout. Unauthenticated webhooks fail the check when public_url is a
public address.

Probes run in parallel, each bounded by --timeout, so doctor answers in
seconds even when a host never answers. --dify-key-env routes read the
variable from doctor's own environment.

Exit status: 0 when nothing failed (warnings alone exit 0), 1 when a check
failed, 2 for a bad flag or a configuration that does not load (the checklist
then shows the configuration error as its one failed check).`,
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
		// The checklist still prints, but a configuration that does not
		// load is a configuration error: exit 2, as for every command.
		if perr := a.printChecks(doctor.ConfigFailed(err)); perr != nil {
			var fe *failedError
			if !errors.As(perr, &fe) {
				return perr
			}
		}
		return &failedError{code: ExitUsage}
	}
	opts, closeDB := doctor.FromConfig(ctx, cfg, o.timeout)
	defer closeDB()
	if a.now != nil {
		opts.Now = a.now
	}
	return a.printChecks(doctor.Run(ctx, opts))
}

// printChecks renders the checklist (or JSON) and turns a failed check into
// exit status 1.
func (a *app) printChecks(checks []doctor.Result) error {
	for i := range checks {
		// Details quote upstream answers and the journal: mask any secret.
		checks[i].Detail, checks[i].Fix = a.red.String(checks[i].Detail), a.red.String(checks[i].Fix)
	}
	nOK, nWarn, nFail := doctor.Tally(checks)
	if a.json {
		if checks == nil {
			checks = []doctor.Result{}
		}
		if err := a.printJSON(doctor.Report{Checks: checks, OK: nFail == 0}); err != nil {
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
			case doctor.Warn:
				mark = st.warn.Render("!")
			case doctor.Fail:
				mark = st.bad.Render("✗")
			}
			fmt.Fprintf(w, "%s %-*s  %s\n", mark, width, c.Name, c.Detail)
			if c.Fix != "" && c.Status != doctor.OK {
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
