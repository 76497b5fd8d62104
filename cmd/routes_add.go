package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/dify"
	"github.com/bridge-dev/bridge/pkg/doctor"
	"github.com/bridge-dev/bridge/pkg/lifecycle"
	"github.com/bridge-dev/bridge/pkg/store"
)

type routesAddOptions struct {
	inbox         int64
	key, keyEnv   string
	url, name     string
	inputs        string
	mode          string
	keywords      string
	handoffTeam   int64
	handoffLabels string
	maxInFlight   int
	noVerify      bool
	life          lifecycleFlags
	transfer      string
	format        string
	voiceFallback string
}

func newRoutesAddCmd(a *app) *cobra.Command {
	o := &routesAddOptions{}
	c := &cobra.Command{
		Use:   "add --inbox ID (--dify-key KEY | --dify-key-env VAR)",
		Short: "Route a Chatwoot inbox to a Dify app",
		Long: `Route a Chatwoot inbox to a Dify app.

Unless --no-verify, the key is checked against Dify (GET /info and
GET /parameters): the app must have a chat endpoint (chat, advanced-chat,
agent-chat or agent) and every required input must be supplied with --inputs.
The app's mode is stored with the route: a New Agent app's (agent) narration
is never taken for its answer.

--inputs values may use {contact.name}, {contact.email}, {inbox.name},
{conversation.id} and {account.id}; they are filled in on every turn.

--mode draft makes the route a copilot: answers go in as private notes for
agents, in pending and open conversations alike; it never speaks to the
customer, never changes the status and never hands off.

--keywords, --handoff-team and --handoff-labels override the [handoff]
defaults for this route (--keywords "" turns keyword handoff off).

--max-in-flight caps how many of the route's messages are in progress at
once, for a Dify app whose own concurrency cap (APP_MAX_ACTIVE_REQUESTS)
is lower than worker.concurrency. Without it, bridge learns the cap when
Dify answers "too many requests": that message goes back in the queue and
the route alone slows down.


--transfer overrides attachments.transfer (auto, remote_url, upload);
--voice-fallback overrides voice.fallback (ask, handoff); --format converts
answers before posting: markdown (default: Chatwoot renders it for each
channel), whatsapp (an API inbox bridged to WhatsApp, where Chatwoot passes
text through unchanged) or plain. The verification also says which file
types the app accepts and whether it has speech to text.`,
		Example: `  bridge routes add --inbox 3 --dify-key app-xxxxxxxxxxxxxxxxxxxxxxxx
  bridge routes add --inbox 4 --dify-key-env DIFY_SALES_KEY --name sales \
      --inputs '{"customer":"{contact.name}"}' --keywords "human,manager" --handoff-team 2
  bridge routes add --inbox 5 --dify-key-env DIFY_KEY --mode draft --no-verify
  bridge routes add --inbox 6 --dify-key-env DIFY_FAQ_KEY --max-in-flight 20`,
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
	f.IntVar(&o.maxInFlight, "max-in-flight", 0, "most messages of this route in progress at once (0: no cap but worker.concurrency)")
	f.BoolVar(&o.noVerify, "no-verify", false, "do not check the key against Dify")
	o.life.register(f)
	f.StringVar(&o.transfer, "transfer", "", "how attachments reach Dify: auto, remote_url or upload (default: attachments.transfer)")
	f.StringVar(&o.format, "format", "", "answer format: markdown, whatsapp or plain (default: markdown)")
	f.StringVar(&o.voiceFallback, "voice-fallback", "", "a voice note nobody could transcribe: ask or handoff (default: voice.fallback)")
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
	if o.maxInFlight < 0 {
		return usagef("--max-in-flight 20", "--max-in-flight must be 0 (no cap) or more")
	}
	r := &store.Route{InboxID: o.inbox, Name: o.name, DifyKey: o.key, DifyKeyEnv: o.keyEnv, DifyURL: o.url,
		Mode: o.mode, Enabled: true, MaxInFlight: o.maxInFlight}
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
	r.Options = store.RouteOptions{Transfer: o.transfer, Format: o.format, VoiceFallback: o.voiceFallback}
	if err := checkRouteOptions(r.Options); err != nil {
		return err
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
	support := ""
	if !o.noVerify {
		base := o.url
		if base == "" {
			base = cfg.Dify.BaseURL
		}
		info, params, err := verifyApp(ctx, base, key, r.Inputs)
		if err != nil {
			return &failedError{msg: err.Error() + "\n(use --no-verify to add the route anyway)"}
		}
		r.AppName, r.AppMode = info.Name, info.Mode
		support = doctor.FileSupport(params)
	}
	db, err := a.openStore(ctx, createStore)
	if err != nil {
		return err
	}
	defer db.Close()
	var life lifecycle.Settings
	if o.life.anyChanged(c) {
		if err := o.life.apply(c, &life); err != nil {
			return err
		}
	}
	if err := db.AddRoute(ctx, r); err != nil {
		if errors.Is(err, store.ErrDuplicateInbox) {
			return &failedError{msg: fmt.Sprintf("inbox %d already has a route (bridge routes list; remove it first)", o.inbox)}
		}
		return err
	}
	if o.life.anyChanged(c) {
		if err := db.SetRouteLifecycle(ctx, r.ID, life.Marshal()); err != nil {
			return err
		}
	}
	if a.json {
		return a.printJSON(routeJSON(r))
	}
	fmt.Fprintf(a.io.Out, "Added route %d: inbox %d → %s (%s, key %s)\n", r.ID, r.InboxID, describeApp(r), r.Mode, maskedKey(r))
	if support != "" {
		fmt.Fprintf(a.io.Out, "  The app takes %s.\n", support)
	}
	return nil
}

// verifyApp checks a Dify key and app (SPEC section 3, routes add).
func verifyApp(ctx context.Context, base, key string, inputs map[string]string) (*dify.AppInfo, *dify.Parameters, error) {
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

// checkRouteOptions refuses message options a route cannot have.
func checkRouteOptions(o store.RouteOptions) error {
	if o.Transfer != "" && !slices.Contains(config.TransferModes, o.Transfer) {
		return usagef("--transfer upload", "bad --transfer %q: want auto, remote_url or upload", o.Transfer)
	}
	if o.Format != "" && !slices.Contains([]string{bridge.FormatMarkdown, bridge.FormatWhatsApp, bridge.FormatPlain}, o.Format) {
		return usagef("--format whatsapp", "bad --format %q: want markdown, whatsapp or plain", o.Format)
	}
	if o.VoiceFallback != "" && !slices.Contains(config.VoiceFallbacks, o.VoiceFallback) {
		return usagef("--voice-fallback handoff", "bad --voice-fallback %q: want ask or handoff", o.VoiceFallback)
	}
	return nil
}
