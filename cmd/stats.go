package cmd

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bridge-dev/bridge/pkg/lifecycle"
	"github.com/bridge-dev/bridge/pkg/store"
	"github.com/spf13/cobra"
)

// statsView is one route's outcomes as stats --json prints them.
type statsView struct {
	store.RouteStats
	Name      string    `json:"name,omitempty"`
	HandedOff int       `json:"handed_off_total"`
	Returned  int       `json:"returned_total"`
	Since     time.Time `json:"since"`
	Until     time.Time `json:"until"`
}

func newStatsCmd(a *app) *cobra.Command {
	var since string
	var route int64
	c := &cobra.Command{
		Use:   "stats",
		Short: "Outcomes per route: handled, resolved without a human, handed off, returned, reopened, latency, tokens",
		Long: `Outcomes per route over a window, computed from the journal:

  conversations handled     with at least one customer message bridge acted on
  answers                   answers posted, also those a handoff followed
  resolved without a human  resolves while the bot held the conversation
  handed off                by bridge, by reason
  taken over                an agent replied while the bot held it
  kept                      kept for humans from the Dashboard App or the CLI
  returned to the bot       by cause: status (Chatwoot), idle, give-back
  reopened within 24 h      resolves the customer reopened within a day
  answer latency            webhook received to answer posted, p50 and p95
  tokens                    Dify's usage, from the trace

The same numbers over the last 24 h are the bridge_stats_* series on
/metrics.`,
		Example: "  bridge stats\n  bridge stats --since 30d --route 1\n  bridge stats --json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			d, err := lifecycle.ParseDuration(since)
			if err != nil || d <= 0 {
				return usagef("bridge stats --since 7d", "bad --since %q: want e.g. 24h or 7d", since)
			}
			db, err := a.openStore(c.Context(), readStore)
			if err != nil {
				return err
			}
			defer db.Close()
			until := a.now()
			from := until.Add(-d)
			st, err := db.Stats(c.Context(), from, until, route)
			if err != nil {
				return err
			}
			names := map[int64]string{}
			if rs, err := db.Routes(c.Context()); err == nil {
				for _, r := range rs {
					names[r.ID] = r.Name
				}
			}
			if a.json {
				out := make([]statsView, 0, len(st))
				for _, s := range st {
					out = append(out, statsView{RouteStats: s, Name: names[s.RouteID], HandedOff: s.HandedOff(), Returned: s.ReturnedTotal(),
						Since: from.UTC(), Until: until.UTC()})
				}
				return a.printJSON(out)
			}
			w := a.io.Out
			fmt.Fprintf(w, "Since %s (%s)\n", a.localTime(from).Format("2006-01-02 15:04"), since)
			if len(st) == 0 {
				fmt.Fprintln(w, "\nNothing journaled in that window.")
				return nil
			}
			for _, s := range st {
				fmt.Fprintf(w, "\nRoute %d %s\n", s.RouteID, orDash(names[s.RouteID]))
				row := func(k string, v any) { fmt.Fprintf(w, "  %-26s %v\n", k, v) }
				row("conversations handled", s.Handled)
				row("answers", s.Answered)
				row("resolved without a human", fmt.Sprintf("%d of %d resolved", s.ResolvedByBot, s.Resolved))
				row("handed off", withParts(s.HandedOff(), s.Handoffs))
				row("taken over by an agent", s.Takeovers)
				row("kept for humans", s.Kept)
				row("returned to the bot", withParts(s.ReturnedTotal(), s.Returned))
				row("reopened within 24 h", s.Reopened24h)
				row("answer latency", fmt.Sprintf("p50 %.1fs, p95 %.1fs", s.LatencyP50, s.LatencyP95))
				row("tokens", s.Tokens)
			}
			return nil
		},
	}
	c.Flags().StringVar(&since, "since", "7d", "the window, back from now (e.g. 24h, 7d, 30d)")
	c.Flags().Int64Var(&route, "route", 0, "only this route")
	return c
}

func withParts(total int, parts map[string]int) string {
	if total == 0 {
		return "0"
	}
	keys := make([]string, 0, len(parts))
	for k := range parts {
		keys = append(keys, k)
	}
	sortStrings(keys)
	var ps []string
	for _, k := range keys {
		ps = append(ps, fmt.Sprintf("%s %d", k, parts[k]))
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(ps, ", "))
}

func sortStrings(s []string) { slices.Sort(s) }
