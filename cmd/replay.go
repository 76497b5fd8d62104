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

	"github.com/bridge-dev/bridge/pkg/bridge"
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
		Long:  replayLong(),
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
	f.BoolVar(&o.force, "force", false, "ask Dify again for an answered event, or finish an interrupted (working) one")
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
		return usagef("bridge replay 17 --force", "--force applies to stored answered and working events, not to --file")
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
	return newLogger(a.io.Err, "warn", cfg.LogFormat, isTerminal(a.io.Err), a.red)
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

// replayLong is replay's --help: the rules come from bridge.ReplayRules,
// the decision replay applies, so help and behaviour cannot drift apart.
func replayLong() string {
	var b strings.Builder
	b.WriteString(`Feed webhooks through the pipeline again: in this process by default (no
server needs to run), or POSTed to a running 'bridge serve' with --to.

A stored event is replayed according to what became of it (--dry-run shows
which case applies):

`)
	for _, r := range bridge.ReplayRules {
		fmt.Fprintf(&b, "  %s\n", r.When)
		for _, l := range wrap(r.Text, 70) {
			fmt.Fprintf(&b, "      %s\n", l)
		}
	}
	b.WriteString(`
Replay appends to an event's history and never overwrites it: the trace
gains a "replayed" hop naming the state and reason the event had.

--file FILE (- for standard input) takes a webhook body as Chatwoot sends it
and handles it like a new delivery (delivery id "replay-file").

--dry-run prints, for each payload, what replay would do and the route, and
writes nothing and calls neither Chatwoot nor Dify. It exits 0 whenever it
could decide, a refusal included.

--to URL POSTs the payloads to a running server's webhook URL instead
(/webhooks/chatwoot is added when the URL has no path), with ?token= and the
X-Chatwoot-Signature headers when chatwoot.webhook_token and
chatwoot.webhook_secret are set, and prints the server's answer. The server
decides them as new deliveries: a message it already acted on is ignored as
a duplicate.

--json prints one object per payload: id, new_event_id, decision, plan,
rule, reason, status (the state after the replay; with --dry-run, the stored
state) and error. Exit status 1 when a payload was refused or could not be
replayed, ended failed, or the server refused it.`)
	return b.String()
}

// wrap breaks s into lines of at most n columns.
func wrap(s string, n int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len([]rune(line))+1+len([]rune(w)) > n {
			lines = append(lines, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}
