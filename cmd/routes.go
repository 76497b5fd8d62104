package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/dify"
	"github.com/bridge-dev/bridge/pkg/doctor"
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
	c.AddCommand(newRoutesAddCmd(a), newRoutesListCmd(a), newRoutesShowCmd(a),
		newRoutesSetEnabledCmd(a, true), newRoutesSetEnabledCmd(a, false), newRoutesRemoveCmd(a))
	return c
}

type routesAddOptions struct {
	inbox         int64
	key, keyEnv   string
	url, name     string
	inputs        string
	mode          string
	keywords      string
	handoffTeam   int64
	handoffLabels string
	noVerify      bool
}

func newRoutesAddCmd(a *app) *cobra.Command {
	o := &routesAddOptions{}
	c := &cobra.Command{
		Use:   "add --inbox ID (--dify-key KEY | --dify-key-env VAR)",
		Short: "Route a Chatwoot inbox to a Dify app",
		Long: `Route a Chatwoot inbox to a Dify app.

Unless --no-verify, the key is checked against Dify (GET /info and
GET /parameters): the app must have a chat endpoint (chat, advanced-chat or
agent-chat) and every required input must be supplied with --inputs.

--inputs values may use {contact.name}, {contact.email}, {inbox.name},
{conversation.id} and {account.id}; they are filled in on every turn.

--mode draft makes the route a copilot: answers go in as private notes for
agents, in pending and open conversations alike; it never speaks to the
customer, never changes the status and never hands off.

--keywords, --handoff-team and --handoff-labels override the [handoff]
defaults for this route (--keywords "" turns keyword handoff off).`,
		Example: `  bridge routes add --inbox 3 --dify-key app-xxxxxxxxxxxxxxxxxxxxxxxx
  bridge routes add --inbox 4 --dify-key-env DIFY_SALES_KEY --name sales \
      --inputs '{"customer":"{contact.name}"}' --keywords "human,manager" --handoff-team 2
  bridge routes add --inbox 5 --dify-key-env DIFY_KEY --mode draft --no-verify`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return runRoutesAdd(c.Context(), a, c, o)
		},
	}
	f := c.Flags()
	f.Int64Var(&o.inbox, "inbox", 0, "Chatwoot inbox id (required)")
	f.StringVar(&o.key, "dify-key", "", "Dify app API key (stored in the database)")
	f.StringVar(&o.keyEnv, "dify-key-env", "", "environment variable holding the Dify app key (never stored)")
	f.StringVar(&o.url, "dify-url", "", "Dify API base URL (default: dify.base_url)")
	f.StringVar(&o.name, "name", "", "a name for the route")
	f.StringVar(&o.inputs, "inputs", "", `app inputs as a JSON object of strings, e.g. '{"lang":"en"}'`)
	f.StringVar(&o.mode, "mode", "auto", "auto (answers customers) or draft (private notes for agents)")
	f.StringVar(&o.keywords, "keywords", "", "comma-separated handoff keywords for this route")
	f.Int64Var(&o.handoffTeam, "handoff-team", 0, "team id to assign on handoff")
	f.StringVar(&o.handoffLabels, "handoff-labels", "", "comma-separated labels to set on handoff (needs chatwoot.user_token)")
	f.BoolVar(&o.noVerify, "no-verify", false, "do not check the key against Dify")
	_ = c.MarkFlagRequired("inbox") // the flag exists; the error is impossible
	c.MarkFlagsMutuallyExclusive("dify-key", "dify-key-env")
	return c
}

func splitList(s string) []string {
	out := []string{}
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runRoutesAdd(ctx context.Context, a *app, c *cobra.Command, o *routesAddOptions) error {
	if o.inbox <= 0 {
		return usagef("bridge routes add --inbox 3 --dify-key-env DIFY_KEY", "--inbox must be a positive inbox id")
	}
	if o.key == "" && o.keyEnv == "" {
		return usagef("bridge routes add --inbox 3 --dify-key-env DIFY_KEY", "a Dify key is required: --dify-key KEY or --dify-key-env VAR")
	}
	if o.mode != store.ModeAuto && o.mode != store.ModeDraft {
		return usagef("--mode auto or --mode draft", "bad --mode %q", o.mode)
	}
	r := &store.Route{InboxID: o.inbox, Name: o.name, DifyKey: o.key, DifyKeyEnv: o.keyEnv, DifyURL: o.url,
		Mode: o.mode, Enabled: true}
	if o.inputs != "" {
		if err := json.Unmarshal([]byte(o.inputs), &r.Inputs); err != nil {
			return usagef(`--inputs '{"name":"{contact.name}"}'`, "bad --inputs: want a JSON object of strings: %v", err)
		}
	}
	if c.Flags().Changed("keywords") {
		r.Keywords = splitList(o.keywords)
	}
	if c.Flags().Changed("handoff-team") {
		if o.handoffTeam < 0 {
			return usagef("--handoff-team 2", "--handoff-team must be a team id")
		}
		t := o.handoffTeam
		r.HandoffTeam = &t
	}
	if c.Flags().Changed("handoff-labels") {
		r.HandoffLabels = splitList(o.handoffLabels)
	}
	if o.url != "" && !strings.HasPrefix(o.url, "http://") && !strings.HasPrefix(o.url, "https://") {
		return usagef("--dify-url https://api.dify.ai/v1", "bad --dify-url %q: want an http(s) URL", o.url)
	}
	cfg, err := a.config()
	if err != nil {
		return err
	}
	key := o.key
	if o.keyEnv != "" {
		// Even unverified, a route whose variable is unset could never
		// answer: serve would fail every message of the inbox.
		if key = os.Getenv(o.keyEnv); key == "" {
			return usagef("export "+o.keyEnv+"=app-... and run this again", "environment variable %s is not set: the route would have no Dify key", o.keyEnv)
		}
	}
	if !o.noVerify {
		base := o.url
		if base == "" {
			base = cfg.Dify.BaseURL
		}
		info, err := verifyApp(ctx, base, key, r.Inputs)
		if err != nil {
			return &failedError{msg: err.Error() + "\n(use --no-verify to add the route anyway)"}
		}
		r.AppName, r.AppMode = info.Name, info.Mode
	}
	db, err := a.openStore(ctx, createStore)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.AddRoute(ctx, r); err != nil {
		if errors.Is(err, store.ErrDuplicateInbox) {
			return &failedError{msg: fmt.Sprintf("inbox %d already has a route (bridge routes list; remove it first)", o.inbox)}
		}
		return err
	}
	if a.json {
		return a.printJSON(routeJSON(r))
	}
	fmt.Fprintf(a.io.Out, "Added route %d: inbox %d → %s (%s, key %s)\n", r.ID, r.InboxID, describeApp(r), r.Mode, maskedKey(r))
	return nil
}

// verifyApp checks a Dify key and app (SPEC section 3, routes add).
func verifyApp(ctx context.Context, base, key string, inputs map[string]string) (*dify.AppInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return doctor.VerifyApp(ctx, dify.NewClient(dify.Options{BaseURL: base, Key: key}), base, inputs)
}

func describeApp(r *store.Route) string {
	if r.AppName != "" {
		return fmt.Sprintf("%q (%s)", r.AppName, r.AppMode)
	}
	return "Dify app (not verified)"
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
	AppName       string            `json:"app_name,omitempty"`
	AppMode       string            `json:"app_mode,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
}

func routeJSON(r *store.Route) routeView {
	v := routeView{ID: r.ID, Name: r.Name, InboxID: r.InboxID, DifyURL: r.DifyURL, Key: maskedKey(r), KeyEnv: r.DifyKeyEnv,
		Inputs: r.Inputs, Mode: r.Mode, Keywords: r.Keywords, HandoffTeam: r.HandoffTeam, HandoffLabels: r.HandoffLabels,
		Enabled: r.Enabled, AppName: r.AppName, AppMode: r.AppMode, CreatedAt: r.CreatedAt}
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
					orDash(r.AppName), r.Mode, state, maskedKey(r)})
			}
			a.table([]string{"id", "name", "inbox", "app", "mode", "state", "key"}, rows, 3)
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
			id, err := parseID(args[0], "route")
			if err != nil {
				return err
			}
			db, err := a.openStore(c.Context(), readStore)
			if err != nil {
				return err
			}
			defer db.Close()
			r, err := db.Route(c.Context(), id)
			if errors.Is(err, store.ErrNotFound) {
				return &failedError{msg: fmt.Sprintf("no route %d (bridge routes list)", id)}
			}
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(routeJSON(&r))
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
			id, err := a.mutateByID(c.Context(), args[0], "route", "bridge routes list", func(db *store.DB, ctx context.Context, id int64) error {
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
			id, err := a.mutateByID(c.Context(), args[0], "route", "bridge routes list", (*store.DB).RemoveRoute)
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

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// mutateByID is the shape of every "VERB ID" command: parse the id, open the
// store, apply fn, and turn a missing row into a clear failure.
func (a *app) mutateByID(ctx context.Context, arg, what, list string, fn func(*store.DB, context.Context, int64) error) (int64, error) {
	id, err := parseID(arg, what)
	if err != nil {
		return 0, err
	}
	db, err := a.openStore(ctx, writeStore)
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
