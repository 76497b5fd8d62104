package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/lifecycle"
	"github.com/bridge-dev/bridge/pkg/store"
)

func newRoutesCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "routes",
		Short: "Map Chatwoot inboxes to Dify apps",
		Long: `Routes map a Chatwoot inbox to a Dify app. One route per inbox.

Keys are shown masked (app-…x7Qz). A key given with --dify-key is stored in the
database file (mode 0600); with --dify-key-env it is read from that environment
variable when bridge runs and never stored.`,
		Example: `  bridge routes add --inbox 3 --dify-key-env DIFY_SUPPORT_KEY --name support
  bridge routes list
  bridge routes disable 1`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	c.AddCommand(newRoutesAddCmd(a), newRoutesListCmd(a), newRoutesShowCmd(a), newRoutesUpdateCmd(a),
		newRoutesSetEnabledCmd(a, true), newRoutesSetEnabledCmd(a, false), newRoutesRemoveCmd(a))
	return c
}

func maskedKey(r *store.Route) string { return config.KeyRef(r.DifyKeyEnv, r.DifyKey) }

// routeView is a route as CLI output shows it: never the key itself.
type routeView struct {
	ID            int64             `json:"id"`
	Name          string            `json:"name"`
	InboxID       int64             `json:"inbox_id"`
	DifyURL       string            `json:"dify_url,omitempty"`
	Key           string            `json:"dify_key"`
	KeyEnv        string            `json:"dify_key_env,omitempty"`
	Inputs        map[string]string `json:"inputs"`
	Mode          string            `json:"mode"`
	Keywords      []string          `json:"keywords,omitempty"`
	HandoffTeam   *int64            `json:"handoff_team,omitempty"`
	HandoffLabels []string          `json:"handoff_labels,omitempty"`
	Enabled       bool              `json:"enabled"`
	MaxInFlight   int               `json:"max_in_flight"` // 0: no cap
	AppName       string            `json:"app_name,omitempty"`
	AppMode       string            `json:"app_mode,omitempty"`
	Transfer      string            `json:"transfer,omitempty"`
	Format        string            `json:"format,omitempty"`
	VoiceFallback string            `json:"voice_fallback,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
	// Lifecycle is set by routes show and routes update.
	Lifecycle *lifecycle.Settings `json:"lifecycle,omitempty"`
}

func routeJSON(r *store.Route) routeView {
	v := routeView{ID: r.ID, Name: r.Name, InboxID: r.InboxID, DifyURL: r.DifyURL, Key: maskedKey(r), KeyEnv: r.DifyKeyEnv,
		Inputs: r.Inputs, Mode: r.Mode, Keywords: r.Keywords, HandoffTeam: r.HandoffTeam, HandoffLabels: r.HandoffLabels,
		Enabled: r.Enabled, MaxInFlight: r.MaxInFlight, AppName: r.AppName, AppMode: r.AppMode, CreatedAt: r.CreatedAt,
		Transfer: r.Options.Transfer, Format: r.Options.Format, VoiceFallback: r.Options.VoiceFallback}
	if v.Inputs == nil {
		v.Inputs = map[string]string{}
	}
	return v
}

func newRoutesListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List routes",
		Example: "  bridge routes list\n  bridge routes list --json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			db, err := a.openStore(c.Context(), readStore)
			if err != nil {
				return err
			}
			defer db.Close()
			rs, err := db.Routes(c.Context())
			if err != nil {
				return err
			}
			if a.json {
				out := make([]routeView, 0, len(rs))
				for i := range rs {
					out = append(out, routeJSON(&rs[i]))
				}
				return a.printJSON(out)
			}
			if len(rs) == 0 {
				fmt.Fprintln(a.io.Out, "No routes. Add one: bridge routes add --inbox ID --dify-key-env VAR")
				return nil
			}
			rows := make([][]string, 0, len(rs))
			for i := range rs {
				r := &rs[i]
				state := "enabled"
				if !r.Enabled {
					state = "disabled"
				}
				rows = append(rows, []string{strconv.FormatInt(r.ID, 10), orDash(r.Name), strconv.FormatInt(r.InboxID, 10),
					orDash(r.AppName), r.Mode, state, inFlightCap(r), maskedKey(r)})
			}
			a.table([]string{"id", "name", "inbox", "app", "mode", "state", "in flight", "key"}, rows, 3)
			return nil
		},
	}
}

func parseID(s, what string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, usagef("a numeric "+what+" id, e.g. 1", "bad %s id %q", what, s)
	}
	return id, nil
}

func newRoutesShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Short:   "Show one route",
		Example: "  bridge routes show 1",
		Args:    exactArgs(1, "bridge routes show 1"),
		RunE: func(c *cobra.Command, args []string) error {
			var r store.Route
			var s lifecycle.Settings
			_, err := a.byID(c.Context(), readStore, args[0], "route", "bridge routes list", func(db *store.DB, ctx context.Context, id int64) (err error) {
				if r, err = db.Route(ctx, id); err != nil {
					return err
				}
				s, err = bridge.SettingsOf(ctx, db, id)
				return err
			})
			if err != nil {
				return err
			}
			if a.json {
				v := routeJSON(&r)
				v.Lifecycle = &s
				return a.printJSON(v)
			}
			v := routeJSON(&r)
			w := a.io.Out
			fmt.Fprintf(w, "Route %d %s\n", r.ID, orDash(r.Name))
			fmt.Fprintf(w, "  inbox:      %d\n", r.InboxID)
			fmt.Fprintf(w, "  app:        %s\n", describeApp(&r))
			fmt.Fprintf(w, "  dify url:   %s\n", text.Or(r.DifyURL, "(dify.base_url)"))
			fmt.Fprintf(w, "  key:        %s\n", v.Key)
			fmt.Fprintf(w, "  mode:       %s\n", r.Mode)
			fmt.Fprintf(w, "  enabled:    %t\n", r.Enabled)
			fmt.Fprintf(w, "  in flight:  %s\n", inFlightCap(&r))
			in, _ := json.Marshal(v.Inputs) // a map of strings always marshals
			fmt.Fprintf(w, "  inputs:     %s\n", in)
			if r.Keywords != nil {
				fmt.Fprintf(w, "  keywords:   %s\n", strings.Join(r.Keywords, ", "))
			}
			if r.HandoffTeam != nil {
				fmt.Fprintf(w, "  team:       %d\n", *r.HandoffTeam)
			}
			if r.HandoffLabels != nil {
				fmt.Fprintf(w, "  labels:     %s\n", strings.Join(r.HandoffLabels, ", "))
			}
			if r.Options.Transfer != "" {
				fmt.Fprintf(w, "  transfer:   %s\n", r.Options.Transfer)
			}
			if r.Options.Format != "" {
				fmt.Fprintf(w, "  format:     %s\n", r.Options.Format)
			}
			if r.Options.VoiceFallback != "" {
				fmt.Fprintf(w, "  voice:      %s\n", r.Options.VoiceFallback)
			}
			printLifecycle(w, &s)
			return nil
		},
	}
}

func newRoutesSetEnabledCmd(a *app, enable bool) *cobra.Command {
	name, past := "disable", "Disabled"
	if enable {
		name, past = "enable", "Enabled"
	}
	return &cobra.Command{
		Use:     name + " ID",
		Short:   strings.ToUpper(name[:1]) + name[1:] + " a route",
		Example: "  bridge routes " + name + " 1",
		Args:    exactArgs(1, "bridge routes "+name+" 1"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := a.byID(c.Context(), writeStore, args[0], "route", "bridge routes list", func(db *store.DB, ctx context.Context, id int64) error {
				return db.SetRouteEnabled(ctx, id, enable)
			})
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"id": id, "enabled": enable})
			}
			fmt.Fprintf(a.io.Out, "%s route %d\n", past, id)
			return nil
		},
	}
}

func newRoutesRemoveCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "remove ID",
		Aliases: []string{"rm"},
		Short:   "Remove a route",
		Example: "  bridge routes remove 1",
		Args:    exactArgs(1, "bridge routes remove 1"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := a.byID(c.Context(), writeStore, args[0], "route", "bridge routes list", (*store.DB).RemoveRoute)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"id": id, "removed": true})
			}
			fmt.Fprintf(a.io.Out, "Removed route %d\n", id)
			return nil
		},
	}
}

// exactArgs is cobra.ExactArgs with a usage hint.
func exactArgs(n int, example string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef(example, "%s takes %d argument(s), got %d", c.CommandPath(), n, len(args))
		}
		return nil
	}
}

// inFlightCap shows a route's max_in_flight.
func inFlightCap(r *store.Route) string {
	if r.MaxInFlight <= 0 {
		return "no cap"
	}
	return "at most " + strconv.Itoa(r.MaxInFlight)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// byID is the shape of every "VERB ID" command: parse the id, open the
// store for use, apply fn, and turn a missing row into a clear failure.
func (a *app) byID(ctx context.Context, use storeUse, arg, what, list string, fn func(*store.DB, context.Context, int64) error) (int64, error) {
	id, err := parseID(arg, what)
	if err != nil {
		return 0, err
	}
	db, err := a.openStore(ctx, use)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if err := fn(db, ctx, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return id, &failedError{msg: fmt.Sprintf("no %s %d (%s)", what, id, list)}
		}
		return id, err
	}
	return id, nil
}
