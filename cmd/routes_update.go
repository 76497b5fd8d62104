package cmd

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/lifecycle"
	"github.com/bridge-dev/bridge/pkg/store"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// lifecycleFlags are the route lifecycle's flags, shared by routes add and
// routes update.
type lifecycleFlags struct {
	ret, idleAfter           string
	memResolve, memHandoff   string
	table                    string
	hours, week, tz, closed  string
	askEmail, summary        bool
	summaryPrompt, summaryTO string
}

func (l *lifecycleFlags) register(f *pflag.FlagSet) {
	f.StringVar(&l.ret, "return", "", "when the bot takes a conversation back: pending, idle, giveback or never")
	f.StringVar(&l.idleAfter, "idle-after", "", "with --return idle: after this long without a human message (e.g. 30m)")
	f.StringVar(&l.memResolve, "memory-after-resolve", "", "Dify memory after a resolve: fresh, same or summary")
	f.StringVar(&l.memHandoff, "memory-after-handoff", "", "Dify memory after a handoff: fresh, same or summary")
	f.StringVar(&l.table, "handoff-table", "", "TOML or JSON file mapping handoff reasons and targets to team, agent, labels, priority (none clears it)")
	f.StringVar(&l.hours, "hours", "", "opening hours for handoffs: chatwoot (the inbox's, needs chatwoot.user_token), route (--week), or off")
	f.StringVar(&l.week, "week", "", `with --hours route: e.g. "mon-fri 09:00-17:00, sat 10:00-13:00"`)
	f.StringVar(&l.tz, "timezone", "", "with --hours route: an IANA timezone, e.g. Europe/Paris")
	f.StringVar(&l.closed, "closed-message", "", "what a handoff out of hours tells the customer; {next_open} is the next opening")
	f.BoolVar(&l.askEmail, "ask-email", false, "out of hours, also ask the customer for an email address")
	f.BoolVar(&l.summary, "note-summary", false, "add a summary written by the route's Dify app to the handoff note")
	f.StringVar(&l.summaryPrompt, "summary-prompt", "", "the prompt of the note summary")
	f.StringVar(&l.summaryTO, "summary-timeout", "", "bound of the note summary call (default 8s; past it, no summary)")
}

// apply changes s by the flags that were given.
func (l *lifecycleFlags) apply(c *cobra.Command, s *lifecycle.Settings) error {
	ch := c.Flags().Changed
	if ch("return") {
		s.Return = l.ret
		if l.ret != lifecycle.ReturnIdle && !ch("idle-after") {
			s.IdleAfter = 0
		}
	}
	if ch("idle-after") {
		d, err := lifecycle.ParseDuration(l.idleAfter)
		if err != nil {
			return usagef("--return idle --idle-after 30m", "--idle-after: %v", err)
		}
		s.IdleAfter = lifecycle.Duration(d)
	}
	if ch("memory-after-resolve") {
		s.Memory.AfterResolve = l.memResolve
	}
	if ch("memory-after-handoff") {
		s.Memory.AfterHandoff = l.memHandoff
	}
	if ch("handoff-table") {
		if l.table == "none" || l.table == "" {
			s.Handoff = lifecycle.Table{}
		} else {
			data, err := os.ReadFile(l.table)
			if err != nil {
				return usagef("--handoff-table handoff.toml", "--handoff-table: %v", err)
			}
			t, err := lifecycle.ParseTable(data)
			if err != nil {
				return usagef("--handoff-table handoff.toml", "%v", err)
			}
			s.Handoff = t
		}
	}
	if ch("hours") {
		if l.hours == "off" {
			s.Hours = lifecycle.Hours{}
		} else {
			s.Hours.Source = l.hours
			if l.hours == "chatwoot" {
				s.Hours.Week, s.Hours.Timezone = "", ""
			}
		}
	}
	if ch("week") {
		s.Hours.Week = l.week
	}
	if ch("timezone") {
		s.Hours.Timezone = l.tz
	}
	if ch("closed-message") {
		s.Hours.Closed = l.closed
	}
	if ch("ask-email") {
		s.Hours.AskEmail = l.askEmail
	}
	if ch("note-summary") {
		s.Summary.Enabled = l.summary
	}
	if ch("summary-prompt") {
		s.Summary.Prompt = l.summaryPrompt
	}
	if ch("summary-timeout") {
		d, err := lifecycle.ParseDuration(l.summaryTO)
		if err != nil {
			return usagef("--summary-timeout 8s", "--summary-timeout: %v", err)
		}
		s.Summary.Timeout = lifecycle.Duration(d)
	}
	if err := s.Validate(); err != nil {
		return usagef("bridge routes update --help", "%v", err)
	}
	return nil
}

func (l *lifecycleFlags) anyChanged(c *cobra.Command) bool {
	for _, n := range []string{"return", "idle-after", "memory-after-resolve", "memory-after-handoff", "handoff-table", "hours",
		"week", "timezone", "closed-message", "ask-email", "note-summary", "summary-prompt", "summary-timeout"} {
		if c.Flags().Changed(n) {
			return true
		}
	}
	return false
}

func newRoutesUpdateCmd(a *app) *cobra.Command {
	l := &lifecycleFlags{}
	var maxInFlight int
	var opts store.RouteOptions
	c := &cobra.Command{
		Use:   "update ID [flags]",
		Short: "Change a route's settings in place (lifecycle, in-flight cap, message options)",
		Long: `Change a route's settings in place, keeping its id, queue and history: how
its conversations change hands (see "Conversation lifecycle" in the README),
--max-in-flight, --transfer, --format and --voice-fallback (as for routes
add; "" gives an option back to the global setting). Flags not given keep
their value. bridge routes show ID shows the result.

--return: when the bot takes a handed-off conversation back
  pending   when Chatwoot puts it back in a bot status (an agent sets it
            pending, or a resolved one reopens); the default
  idle      the same, and after --idle-after without a human message
  giveback  only on an agent's give-back (Dashboard App) or
            bridge conversations give-back
  never     never; a give-back is refused

--memory-after-resolve / --memory-after-handoff: the Dify conversation the
bot continues: fresh (default after a resolve), same (default after a
handoff; a handoff the AI asked for itself always starts fresh), or summary
(fresh, with a summary of the previous episode in the input previous_episode).

--handoff-table: a TOML (or JSON) file:
  [reasons.customer_asked]          # customer_asked, ai_requested, ai_failed,
  team = 2                          # not_understood, provider_refused
  agent = 12
  priority = "high"                 # urgent, high, medium, low
  [targets.billing]                 # [[handoff:billing]] in the AI's answer
  team = 5
  labels = ["billing"]

--hours: chatwoot reads the inbox's business hours (needs chatwoot.user_token;
without it the hours are unknown and handoffs say nothing about them);
route uses --week and --timezone. Out of hours a handoff tells the customer
when people are back (--closed-message, {next_open}) instead of promising
one now.`,
		Example: `  bridge routes update 1 --max-in-flight 20 --format whatsapp
  bridge routes update 1 --return idle --idle-after 30m
  bridge routes update 1 --handoff-table handoff.toml --memory-after-handoff summary
  bridge routes update 1 --hours route --week "mon-fri 09:00-17:00" --timezone Europe/Paris --ask-email
  bridge routes update 1 --hours chatwoot --note-summary`,
		Args: exactArgs(1, "bridge routes update 1 --return giveback"),
		RunE: func(c *cobra.Command, args []string) error {
			settings := c.Flags().Changed("max-in-flight") || c.Flags().Changed("transfer") ||
				c.Flags().Changed("format") || c.Flags().Changed("voice-fallback")
			if !l.anyChanged(c) && !settings {
				return usagef("bridge routes update 1 --return giveback", "nothing to change: give at least one flag")
			}
			if maxInFlight < 0 {
				return usagef("--max-in-flight 20", "--max-in-flight must be 0 (no cap) or more")
			}
			var r store.Route
			var s lifecycle.Settings
			_, err := a.byID(c.Context(), writeStore, args[0], "route", "bridge routes list", func(db *store.DB, ctx context.Context, id int64) error {
				var err error
				if r, err = db.Route(ctx, id); err != nil {
					return err
				}
				if s, err = bridge.SettingsOf(ctx, db, id); err != nil {
					return err
				}
				if settings {
					f := c.Flags()
					if f.Changed("max-in-flight") {
						r.MaxInFlight = maxInFlight
					}
					if f.Changed("transfer") {
						r.Options.Transfer = opts.Transfer
					}
					if f.Changed("format") {
						r.Options.Format = opts.Format
					}
					if f.Changed("voice-fallback") {
						r.Options.VoiceFallback = opts.VoiceFallback
					}
					if err := checkRouteOptions(r.Options); err != nil {
						return err
					}
					if err := db.SetRouteSettings(ctx, id, r.MaxInFlight, r.Options); err != nil {
						return err
					}
				}
				if !l.anyChanged(c) {
					return nil
				}
				if err := l.apply(c, &s); err != nil {
					return err
				}
				return db.SetRouteLifecycle(ctx, id, s.Marshal())
			})
			if err != nil {
				return err
			}
			if a.json {
				v := routeJSON(&r)
				v.Lifecycle = &s
				return a.printJSON(v)
			}
			fmt.Fprintf(a.io.Out, "Updated route %d\n", r.ID)
			printLifecycle(a.io.Out, &s)
			return nil
		},
	}
	l.register(c.Flags())
	c.Flags().IntVar(&maxInFlight, "max-in-flight", 0, "most messages of this route in progress at once (0: no cap but worker.concurrency)")
	c.Flags().StringVar(&opts.Transfer, "transfer", "", "how attachments reach Dify: auto, remote_url or upload (\"\": attachments.transfer)")
	c.Flags().StringVar(&opts.Format, "format", "", "answer format: markdown, whatsapp or plain (\"\": markdown)")
	c.Flags().StringVar(&opts.VoiceFallback, "voice-fallback", "", "a voice note nobody could transcribe: ask or handoff (\"\": voice.fallback)")
	return c
}

// printLifecycle writes the lifecycle block of routes show.
func printLifecycle(w io.Writer, s *lifecycle.Settings) {
	fmt.Fprintln(w, "  lifecycle:")
	if len(s.Handoff.Reasons) == 0 && len(s.Handoff.Targets) == 0 {
		fmt.Fprintln(w, "    handoff:  open; team and labels above or [handoff]'s")
	} else {
		first := true
		line := func(k, v string) {
			label := "    handoff:  "
			if !first {
				label = "              "
			}
			first = false
			fmt.Fprintf(w, "%s%s → %s\n", label, k, v)
		}
		for _, k := range lifecycle.SortedKeys(s.Handoff.Reasons) {
			line(k, s.Handoff.Reasons[k].String())
		}
		for _, k := range lifecycle.SortedKeys(s.Handoff.Targets) {
			line("target "+k, s.Handoff.Targets[k].String())
		}
	}
	ret := map[string]string{
		lifecycle.ReturnPending:  "when Chatwoot puts it back in a bot status, or on a give-back",
		lifecycle.ReturnIdle:     "after " + time.Duration(s.IdleAfter).String() + " without a human message, when Chatwoot puts it back in a bot status, or on a give-back",
		lifecycle.ReturnGiveBack: "only on a give-back (Dashboard App, bridge conversations give-back)",
		lifecycle.ReturnNever:    "never",
	}[s.ReturnRule()]
	fmt.Fprintf(w, "    returns:  %s (%s)\n", ret, s.ReturnRule())
	fmt.Fprintf(w, "    memory:   after a resolve %s, after a handoff %s\n", s.MemoryAfterResolve(), s.MemoryAfterHandoff())
	switch s.Hours.Source {
	case "":
		fmt.Fprintln(w, "    hours:    none (a handoff always promises people)")
	case "chatwoot":
		fmt.Fprintln(w, "    hours:    the inbox's business hours in Chatwoot (needs chatwoot.user_token)")
	case "route":
		week, err := lifecycle.ParseWeek(s.Hours.Week)
		desc := s.Hours.Week
		if err == nil {
			desc = week.String()
		}
		fmt.Fprintf(w, "    hours:    %s (%s)\n", desc, s.Hours.Timezone)
	}
	if s.Hours.Source != "" {
		fmt.Fprintf(w, "    closed:   %q\n", lifecycle.ClosedMessage(s.Hours.Closed, "{next_open}", s.Hours.AskEmail))
	}
	if s.Summary.Enabled {
		fmt.Fprintf(w, "    summary:  on, at most %s\n", s.SummaryTimeout())
	} else {
		fmt.Fprintln(w, "    summary:  off")
	}
}
