package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/store"
)

type replayOptions struct {
	file   string
	to     string
	dryRun bool
	force  bool

	ids    []int64
	target *url.URL
}

func newReplayCmd(a *app) *cobra.Command {
	o := &replayOptions{}
	c := &cobra.Command{
		Use:   "replay ID... | --file FILE",
		Short: "Feed stored or file webhook payloads through the pipeline again",
		Long: `Feed webhooks through the pipeline again: in this process by default (no
server needs to run), or POSTed to a running 'bridge serve' with --to.

A stored event is replayed according to what became of it:

  failed, superseded, handed_off, accepted, working
      The event is driven again: Dify is asked and the answer posted. Side
      effects already carried out (a posted handoff note, say) are not
      repeated.
  ignored, rejected
      The stored payload is decided again with today's routes and
      conversation states (after the missing route was added, say) and
      journaled as a new event, which is driven at once if accepted.
      Rejected events keep only the first 512 bytes of the body, so a longer
      rejected webhook cannot be replayed.
  answered
      Refused, so the customer never gets the same answer twice.
      --force drives an answered event again and posts a new answer.

--file FILE (- for standard input) takes a webhook body as Chatwoot sends it
and handles it like a new delivery (delivery id "replay-file").

--dry-run prints the decision and the route for each payload, and writes
nothing and calls neither Chatwoot nor Dify.

--to URL POSTs the payloads to a running server's webhook URL instead
(/webhooks/chatwoot is added when the URL has no path), with ?token= and the
X-Chatwoot-Signature headers when chatwoot.webhook_token and
chatwoot.webhook_secret are set, and prints the server's answer. The server
decides them as new deliveries: a message it already acted on is ignored as
a duplicate.

--json prints one object per payload: id, new_event_id, decision, reason,
status (the state after the replay; with --dry-run, the stored state) and
error. Exit status 1 when a payload could not be replayed, ended failed, or
the server refused it.`,
		Example: `  bridge replay 17
  bridge replay 17 18 --dry-run
  bridge replay 12 --force
  bridge replay --file webhook.json
  cat webhook.json | bridge replay --file -
  bridge replay 17 --to http://127.0.0.1:8080/webhooks/chatwoot`,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.parse(args); err != nil {
				return err
			}
			return runReplay(c.Context(), a, o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.file, "file", "", "a webhook JSON body to replay (- for standard input)")
	f.StringVar(&o.to, "to", "", "POST to this running server's webhook URL instead of replaying in-process")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the decision and route; write nothing, call no API")
	f.BoolVar(&o.force, "force", false, "drive an answered event again and post a new answer")
	return c
}

// parse checks how replay was called; every mistake is a usage error.
func (o *replayOptions) parse(args []string) error {
	const hint = "bridge replay 17 (or bridge replay --file webhook.json)"
	switch {
	case len(args) == 0 && o.file == "":
		return usagef(hint, "nothing to replay: give event ids or --file")
	case len(args) > 0 && o.file != "":
		return usagef(hint, "give event ids or --file, not both")
	case o.dryRun && o.to != "":
		return usagef("bridge replay 17 --dry-run (decides here, sends nothing)", "--dry-run and --to cannot be combined: --to hands the decision to the server")
	case o.force && o.file != "":
		return usagef("bridge replay 17 --force", "--force applies to stored answered events, not to --file")
	case o.force && o.to != "":
		return usagef("bridge replay 17 --force (in-process)", "--force works in-process only: a running server decides a posted webhook as a new delivery")
	}
	for _, s := range args {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 {
			return usagef("bridge replay 17 (ids from bridge events list)", "bad event id %q: want a number", s)
		}
		if !slices.Contains(o.ids, id) {
			o.ids = append(o.ids, id)
		}
	}
	if o.to != "" {
		u, err := url.Parse(o.to)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usagef("--to http://127.0.0.1:8080/webhooks/chatwoot", "bad --to %q: want the http(s) URL of a running server's webhook", redactURL(o.to))
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/webhooks/chatwoot"
		}
		o.target = u
	}
	return nil
}

func runReplay(ctx context.Context, a *app, o *replayOptions) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	var srcs []*bridge.ReplaySource
	if o.file != "" {
		body, err := readReplayFile(a, o.file)
		if err != nil {
			return err
		}
		srcs = append(srcs, &bridge.ReplaySource{File: o.file, Body: body})
	}
	var db *store.DB
	if len(o.ids) > 0 || o.target == nil {
		use := writeStore
		if o.dryRun {
			use = readStore
		}
		if db, err = a.openStore(ctx, use); err != nil {
			return err
		}
		defer db.Close()
		db.Now = a.now
	}
	for _, id := range o.ids {
		src := &bridge.ReplaySource{ID: id}
		e, err := db.Event(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			src.Event, src.Body = &e, e.Payload
		}
		srcs = append(srcs, src)
	}

	var items []bridge.ReplayItem
	if o.target != nil {
		items = bridge.ReplayTo(ctx, cfg.Chatwoot.WebhookToken.Reveal(), cfg.Chatwoot.WebhookSecret.Reveal(), o.target, srcs)
	} else {
		r := &bridge.Replayer{Force: o.force}
		opts := bridgeOptions(cfg, db, replayLogger(a, cfg))
		opts.Now = a.now
		r.Core = bridge.New(opts)
		for _, src := range srcs {
			if o.dryRun {
				items = append(items, r.DryRun(ctx, src))
			} else {
				items = append(items, r.Replay(ctx, src))
			}
		}
	}

	failed := false
	for i := range items {
		if items[i].Error != "" {
			failed = true
			fmt.Fprintln(a.io.Err, "Error:", items[i].Error)
		}
	}
	if a.json {
		if err := a.printJSON(items); err != nil {
			return err
		}
	} else {
		printReplay(a, srcs, items, o)
	}
	if failed {
		return &failedError{}
	}
	return nil
}

// replayLogger keeps the core's per-hop log lines out of the command's
// output (the result is printed instead) unless log_level is debug.
func replayLogger(a *app, cfg *config.Config) *slog.Logger {
	if cfg.LogLevel == "debug" {
		return a.log()
	}
	return newLogger(a.io.Err, "warn", cfg.LogFormat, isTerminal(a.io.Err))
}

func readReplayFile(a *app, name string) ([]byte, error) {
	var (
		body []byte
		err  error
	)
	if name == "-" {
		if a.io.In == nil {
			return nil, &failedError{msg: "--file -: no standard input"}
		}
		body, err = io.ReadAll(io.LimitReader(a.io.In, bridge.MaxBody+1))
	} else {
		var f *os.File
		if f, err = os.Open(name); err == nil {
			body, err = io.ReadAll(io.LimitReader(f, bridge.MaxBody+1))
			_ = f.Close() // read-only; the read error is the one that matters
		}
	}
	if err != nil {
		return nil, &failedError{msg: fmt.Sprintf("read --file %s: %v", name, pathErr(err))}
	}
	if len(body) > bridge.MaxBody {
		return nil, &failedError{msg: fmt.Sprintf("--file %s is over %d bytes: a server refuses such a webhook (413)", name, bridge.MaxBody)}
	}
	return body, nil
}

func pathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func printReplay(a *app, srcs []*bridge.ReplaySource, items []bridge.ReplayItem, o *replayOptions) {
	w := a.io.Out
	st := a.styles()
	if o.dryRun {
		fmt.Fprintln(w, "Dry run: nothing is written, Chatwoot and Dify are not called.")
	}
	for i := range items {
		it, src := &items[i], srcs[i]
		if it.Decision == bridge.DecisionError || it.Decision == bridge.DecisionRefused && !o.dryRun {
			continue // said on stderr
		}
		head := src.Label()
		if it.Was != "" {
			head += " (" + it.Was
			if it.WasWhy != "" && !bridge.ActedOn(it.Was) {
				head += ": " + text.OneLine(it.WasWhy, 60)
			}
			head += ")"
		}
		switch {
		case o.target != nil:
			fmt.Fprintf(w, "%s → HTTP %d %s\n", head, it.HTTPStatus, text.OneLine(it.Response, 300))
			if it.Reason == bridge.ReasonDuplicate && src.Event != nil {
				again := "bridge replay " + strconv.FormatInt(src.ID, 10)
				if src.Event.Status == store.StatusAnswered {
					again += " --force"
				}
				fmt.Fprintf(w, "  the server already acted on this message; to drive the stored event again: %s\n", again)
			}
		case o.dryRun:
			fmt.Fprintln(w, head)
			fmt.Fprintf(w, "  decision:  %s\n", dryDecision(it))
			if it.RouteOK {
				fmt.Fprintf(w, "  route:     %s\n", describeReplayRoute(it.Route, src))
			}
			if it.Note != "" {
				fmt.Fprintf(w, "  note:      %s\n", it.Note)
			}
		case it.Result == nil:
			// Nothing to show beyond the error on stderr.
		default:
			action := "driven again"
			switch it.Decision {
			case bridge.DecisionAccepted, bridge.DecisionIgnored:
				action = "journaled as event " + strconv.FormatInt(it.NewEventID, 10)
				if src.Event != nil {
					action = "decided again as event " + strconv.FormatInt(it.NewEventID, 10)
				}
			}
			fmt.Fprintf(w, "%s: %s → %s\n", head, action, stateStyle(st, it.Status).Render(it.Status))
			if it.Result != nil {
				fmt.Fprintf(w, "  %s\n", stopReason(it.Result))
				if bridge.ActedOn(it.Result.Status) {
					fmt.Fprintf(w, "  trace: bridge events show %d\n", it.Result.ID)
				}
			}
		}
	}
}

func dryDecision(it *bridge.ReplayItem) string {
	switch it.Decision {
	case bridge.DecisionRedrive:
		return "drive the event again (" + it.Reason + ")"
	case bridge.DecisionRefused:
		return "refused: already answered; --force drives it again and posts a new answer"
	case bridge.DecisionAccepted:
		return "accept (" + it.Kind + ")"
	case bridge.DecisionIgnored:
		return "ignore: " + it.Reason + " — " + ignoreHelp(it.Reason)
	}
	return it.Decision
}

func describeReplayRoute(r *bridge.ReplayRoute, src *bridge.ReplaySource) string {
	if r == nil {
		inbox := int64(0)
		if src.Event != nil {
			inbox = src.Event.InboxID
		} else if ev, err := chatwoot.ParseEvent(src.Body); err == nil {
			inbox = ev.InboxID
		}
		return fmt.Sprintf("none for inbox %d", inbox)
	}
	s := strconv.FormatInt(r.ID, 10)
	if r.Name != "" {
		s += " " + r.Name
	}
	state := "enabled"
	if !r.Enabled {
		state = "disabled"
	}
	return fmt.Sprintf("%s (inbox %d, key %s, %s, %s)", s, r.InboxID, r.Key, r.Mode, state)
}

// redactURL hides a URL's query (it may carry ?token=) for messages.
func redactURL(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		return s[:i] + "?…"
	}
	return s
}
