package cmd

import (
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/store"
)

// completeRouteIDs completes the ID of routes show/enable/disable/remove
// from the database, each with its name and inbox. Nothing is created or
// written; without a database there is nothing to offer.
func completeRouteIDs(a *app) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		db, err := a.openStore(c.Context(), readStore)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer db.Close()
		rs, err := db.Routes(c.Context())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, r := range rs {
			id := strconv.FormatInt(r.ID, 10)
			if !strings.HasPrefix(id, prefix) {
				continue
			}
			desc := "inbox " + strconv.FormatInt(r.InboxID, 10)
			if r.Name != "" {
				desc = r.Name + ", " + desc
			}
			if !r.Enabled {
				desc += ", disabled"
			}
			out = append(out, cobra.CompletionWithDesc(id, desc))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeValues completes a flag from a fixed set of values.
func completeValues(c *cobra.Command, flag string, values ...string) {
	_ = c.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)) // the flag exists
}

// registerCompletions wires the completions that need more than cobra's
// defaults: route ids and the values of --status, --state, --mode,
// --transfer, --format and --voice-fallback.
func registerCompletions(a *app, root *cobra.Command) {
	for _, path := range [][]string{{"routes", "show"}, {"routes", "enable"}, {"routes", "disable"}, {"routes", "remove"}} {
		if c, _, err := root.Find(path); err == nil && c.Name() == path[1] {
			c.ValidArgsFunction = completeRouteIDs(a)
		}
	}
	if c, _, err := root.Find([]string{"events", "list"}); err == nil {
		completeValues(c, "status", store.Statuses...)
	}
	if c, _, err := root.Find([]string{"conversations", "list"}); err == nil {
		completeValues(c, "state", store.StateBot, store.StateHuman)
	}
	if c, _, err := root.Find([]string{"routes", "add"}); err == nil {
		completeValues(c, "mode", store.ModeAuto, store.ModeDraft)
		completeValues(c, "transfer", config.TransferModes...)
		completeValues(c, "format", bridge.FormatMarkdown, bridge.FormatWhatsApp, bridge.FormatPlain)
		completeValues(c, "voice-fallback", config.VoiceFallbacks...)
	}
}
