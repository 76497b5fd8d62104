package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/store"
)

// rejectedKeep is how much of a refused body the journal keeps (the first
// 512 bytes): a longer rejected payload cannot be replayed.
const rejectedKeep = 512

// replayTimeout bounds one POST to a running server with --to; a server
// answers in milliseconds.
const replayTimeout = 15 * time.Second

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

// replayItem is one replayed payload, as --json shows it.
type replayItem struct {
	ID         int64        `json:"id"`
	File       string       `json:"file,omitempty"`
	NewEventID int64        `json:"new_event_id"`
	Decision   string       `json:"decision"`
	Reason     string       `json:"reason"`
	Status     string       `json:"status"`
	Error      string       `json:"error"`
	Kind       string       `json:"kind,omitempty"`
	Route      *replayRoute `json:"route,omitempty"`
	HTTPStatus int          `json:"http_status,omitempty"`
	Response   string       `json:"response,omitempty"`

	// For the human output.
	was     string       // the stored event's state before the replay
	wasWhy  string       // and its reason
	result  *store.Event // the event the replay drove or journaled
	note    string
	routeOK bool // the route lookup ran (dry run)
}

// Decisions of replayItem.
const (
	decisionRedrive  = "redrive"  // an acted-on event, driven again
	decisionAccepted = "accepted" // a payload journaled as a new acted-on event
	decisionIgnored  = "ignored"  // a payload journaled as ignored
	decisionRejected = "rejected" // the server refused the payload (--to)
	decisionRefused  = "refused"  // an answered event, without --force
	decisionError    = "error"    // nothing could be decided
)

type replayRoute struct {
	ID      int64  `json:"id"`
	Name    string `json:"name,omitempty"`
	InboxID int64  `json:"inbox_id"`
	Key     string `json:"dify_key"`
	Mode    string `json:"mode"`
	Enabled bool   `json:"enabled"`
}

// replaySource is one payload to replay: a stored event or the file.
type replaySource struct {
	id    int64
	file  string
	event *store.Event // the stored event, nil for the file
	body  []byte
}

func (s *replaySource) label() string {
	if s.event != nil || s.id != 0 {
		return "Event " + strconv.FormatInt(s.id, 10)
	}
	if s.file == "-" {
		return "stdin"
	}
	return s.file
}

// name is the source as error messages name it.
func (s *replaySource) name() string {
	if s.event != nil || s.id != 0 {
		return "event " + strconv.FormatInt(s.id, 10)
	}
	return s.label()
}

func (s *replaySource) delivery() string {
	if s.event != nil {
		return "replay-" + strconv.FormatInt(s.id, 10)
	}
	return "replay-file"
}

func runReplay(ctx context.Context, a *app, o *replayOptions) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	var srcs []*replaySource
	if o.file != "" {
		body, err := readReplayFile(a, o.file)
		if err != nil {
			return err
		}
		srcs = append(srcs, &replaySource{file: o.file, body: body})
	}
	var db *store.DB
	if len(o.ids) > 0 || o.target == nil {
		if db, err = a.openStore(ctx); err != nil {
			return err
		}
		defer db.Close()
		db.Now = a.now
	}
	for _, id := range o.ids {
		src := &replaySource{id: id}
		e, err := db.Event(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			src.event, src.body = &e, e.Payload
		}
		srcs = append(srcs, src)
	}

	var items []replayItem
	if o.target != nil {
		items = replayTo(ctx, cfg, o.target, srcs)
	} else {
		r := &replayer{db: db, force: o.force}
		opts := bridgeOptions(cfg, db, replayLogger(a, cfg))
		opts.Now = a.now
		r.core = bridge.New(opts)
		for _, src := range srcs {
			if o.dryRun {
				items = append(items, r.dryRun(ctx, src))
			} else {
				items = append(items, r.replay(ctx, src))
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

// parsePayload parses a stored or file payload, saying why it cannot be
// replayed when it is not a usable webhook.
func parsePayload(src *replaySource) (*chatwoot.Event, error) {
	ev, err := chatwoot.ParseEvent(src.body)
	if err == nil {
		return ev, nil
	}
	switch {
	case src.event == nil:
		return nil, fmt.Errorf("%s is not a Chatwoot webhook: %v", src.name(), err)
	case len(src.body) == 0:
		return nil, fmt.Errorf("event %d has no stored payload to replay", src.id)
	case src.event.Status == store.StatusRejected && len(src.body) >= rejectedKeep:
		return nil, fmt.Errorf("event %d cannot be replayed: it was rejected, and the journal keeps only the first %d bytes of a rejected body, so its payload is truncated (%v)",
			src.id, rejectedKeep, err)
	}
	return nil, fmt.Errorf("event %d cannot be replayed: its stored payload is not a usable webhook (%v)", src.id, err)
}

type replayer struct {
	db    *store.DB
	core  *bridge.Bridge
	force bool
}

func notFound(id int64) replayItem {
	return replayItem{ID: id, Decision: decisionError, Error: fmt.Sprintf("no event %d (bridge events list)", id)}
}

func actedOn(status string) bool {
	return status != store.StatusIgnored && status != store.StatusRejected
}

func refusal(e *store.Event) string {
	return fmt.Sprintf("event %d was already answered (Chatwoot message %d); replaying it would answer the customer twice — add --force to drive it again and post a new answer",
		e.ID, e.PostedMessageID)
}

// replay drives a stored event again, or journals a payload as a new
// delivery, and drives the new event if it is accepted.
func (r *replayer) replay(ctx context.Context, src *replaySource) replayItem {
	it := replayItem{ID: src.id, File: src.file}
	if src.event == nil && src.file == "" {
		return notFound(src.id)
	}
	if e := src.event; e != nil {
		it.was, it.wasWhy = e.Status, eventWhy(e)
		if actedOn(e.Status) {
			it.Decision, it.Reason, it.Kind = decisionRedrive, "was "+e.Status, e.Kind
			err := r.core.Redrive(ctx, e.ID, r.force)
			if errors.Is(err, bridge.ErrAlreadyAnswered) {
				it.Decision, it.Reason, it.Status = decisionRefused, "already answered", e.Status
				it.Error = refusal(e)
				return it
			}
			if err != nil {
				it.Decision, it.Error = decisionError, fmt.Sprintf("event %d: %v", e.ID, err)
				return it
			}
			return r.drive(ctx, it, e.ID)
		}
	}
	ev, err := parsePayload(src)
	if err != nil {
		it.Decision, it.Error = decisionError, err.Error()
		return it
	}
	ack, err := r.core.Ingest(ctx, ev, src.body, src.delivery())
	if err != nil {
		it.Decision, it.Error = decisionError, fmt.Sprintf("%s: journal: %v", src.name(), err)
		return it
	}
	it.NewEventID = ack.EventID
	if ack.Status != "accepted" {
		it.Decision, it.Reason = decisionIgnored, ack.Reason
		ne, err := r.db.Event(ctx, ack.EventID)
		if err != nil {
			it.Error = err.Error()
			return it
		}
		it.Status, it.result = ne.Status, &ne
		return it
	}
	it.Decision = decisionAccepted
	return r.drive(ctx, it, ack.EventID)
}

// drive processes an accepted event to its final state and records it.
func (r *replayer) drive(ctx context.Context, it replayItem, id int64) replayItem {
	e, err := r.core.ProcessNow(ctx, id)
	if err != nil {
		it.Error = fmt.Sprintf("event %d: %v", id, err)
		return it
	}
	it.Status, it.Kind, it.result = e.Status, e.Kind, &e
	if e.Status == store.StatusFailed {
		it.Error = fmt.Sprintf("event %d failed again: %s", e.ID, e.LastError)
	}
	if !e.Finished() && ctx.Err() != nil {
		it.Error = fmt.Sprintf("event %d: interrupted while %s; 'bridge serve' resumes it", e.ID, e.Status)
	}
	return it
}

// dryRun says what replay would do, with today's routes and conversation
// states, writing nothing and calling no API.
func (r *replayer) dryRun(ctx context.Context, src *replaySource) replayItem {
	it := replayItem{ID: src.id, File: src.file}
	if src.event == nil && src.file == "" {
		return notFound(src.id)
	}
	if e := src.event; e != nil {
		it.was, it.wasWhy, it.Status = e.Status, eventWhy(e), e.Status
	}
	ev, perr := parsePayload(src)
	if perr != nil && (src.event == nil || !actedOn(src.event.Status)) {
		it.Decision, it.Error = decisionError, perr.Error()
		return it
	}
	var (
		v     bridge.Verdict
		route *store.Route
	)
	if ev != nil {
		var err error
		if v, route, err = r.core.DryRun(ctx, ev); err != nil {
			it.Decision, it.Error = decisionError, fmt.Sprintf("%s: %v", src.name(), err)
			return it
		}
		it.routeOK = true
		if route != nil {
			it.Route = &replayRoute{ID: route.ID, Name: route.Name, InboxID: route.InboxID, Key: maskedKey(route),
				Mode: route.Mode, Enabled: route.Enabled}
		}
	}
	if e := src.event; e != nil && actedOn(e.Status) {
		it.Decision, it.Reason, it.Kind = decisionRedrive, "was "+e.Status, e.Kind
		if e.Status == store.StatusAnswered && !r.force {
			it.Decision, it.Reason = decisionRefused, "already answered"
			it.Error = refusal(e)
		}
		if ev != nil && !v.Accept && v.Reason != bridge.ReasonDuplicate {
			it.note = "a new delivery of this webhook would be ignored today: " + v.Reason
		}
		return it
	}
	if v.Accept {
		it.Decision, it.Kind = decisionAccepted, v.Kind
	} else {
		it.Decision, it.Reason = decisionIgnored, v.Reason
	}
	return it
}

// replayTo POSTs each payload to a running server, as Chatwoot would.
func replayTo(ctx context.Context, cfg *config.Config, target *url.URL, srcs []*replaySource) []replayItem {
	u := *target
	if tok := cfg.Chatwoot.WebhookToken.Reveal(); tok != "" {
		q := u.Query()
		if !q.Has("token") {
			q.Set("token", tok)
			u.RawQuery = q.Encode()
		}
	}
	shown := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	client := &http.Client{Timeout: replayTimeout}
	items := make([]replayItem, 0, len(srcs))
	for _, src := range srcs {
		it := replayItem{ID: src.id, File: src.file}
		if src.event == nil && src.file == "" {
			items = append(items, notFound(src.id))
			continue
		}
		if src.event != nil {
			it.was, it.wasWhy = src.event.Status, eventWhy(src.event)
			if _, err := parsePayload(src); err != nil {
				// Junk would only be refused again; say why here instead.
				it.Decision, it.Error = decisionError, err.Error()
				items = append(items, it)
				continue
			}
		}
		status, body, err := postWebhook(ctx, client, u.String(), cfg.Chatwoot.WebhookSecret.Reveal(), src.delivery(), src.body)
		if err != nil {
			it.Decision, it.Error = decisionError, fmt.Sprintf("%s: post to %s: %v", src.name(), shown, err)
			items = append(items, it)
			continue
		}
		it.HTTPStatus, it.Response = status, strings.TrimSpace(printable(body, 1000))
		var ack bridge.Ack
		if json.Unmarshal(body, &ack) == nil && ack.Status != "" {
			it.Decision, it.Status, it.NewEventID = ack.Status, ack.Status, ack.EventID
			it.Reason = ack.Reason
			if ack.Error != "" {
				it.Reason = ack.Error
			}
		}
		if status < 200 || status > 299 {
			if it.Decision == "" {
				it.Decision = decisionRejected
			}
			it.Error = fmt.Sprintf("%s: %s refused it: HTTP %d %s", src.name(), shown, status, oneLineText(it.Response, 200))
		}
		items = append(items, it)
	}
	return items
}

// postWebhook POSTs one body as Chatwoot does: JSON, a delivery id, and the
// signature headers when a secret is set.
func postWebhook(ctx context.Context, client *http.Client, target, secret, delivery string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, nil, errors.New("bad URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "bridge-replay")
	req.Header.Set("X-Chatwoot-Delivery", delivery)
	if secret != "" {
		// The receiving server checks the timestamp against its own clock,
		// so this is the wall clock, not the output's.
		ts := time.Now().Unix()
		req.Header.Set("X-Chatwoot-Timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("X-Chatwoot-Signature", chatwoot.Sign(secret, ts, body))
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may carry ?token=; the caller names the target without it
		}
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, out, err
}

// redactURL hides a URL's query (it may carry ?token=) for messages.
func redactURL(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		return s[:i] + "?…"
	}
	return s
}

func printReplay(a *app, srcs []*replaySource, items []replayItem, o *replayOptions) {
	w := a.io.Out
	st := a.styles()
	if o.dryRun {
		fmt.Fprintln(w, "Dry run: nothing is written, Chatwoot and Dify are not called.")
	}
	for i := range items {
		it, src := &items[i], srcs[i]
		if it.Decision == decisionError || it.Decision == decisionRefused && !o.dryRun {
			continue // said on stderr
		}
		head := src.label()
		if it.was != "" {
			head += " (" + it.was
			if it.wasWhy != "" && !actedOn(it.was) {
				head += ": " + oneLineText(it.wasWhy, 60)
			}
			head += ")"
		}
		switch {
		case o.target != nil:
			fmt.Fprintf(w, "%s → HTTP %d %s\n", head, it.HTTPStatus, oneLineText(it.Response, 300))
			if it.Reason == bridge.ReasonDuplicate && src.event != nil {
				again := "bridge replay " + strconv.FormatInt(src.id, 10)
				if src.event.Status == store.StatusAnswered {
					again += " --force"
				}
				fmt.Fprintf(w, "  the server already acted on this message; to drive the stored event again: %s\n", again)
			}
		case o.dryRun:
			fmt.Fprintln(w, head)
			fmt.Fprintf(w, "  decision:  %s\n", dryDecision(it))
			if it.routeOK {
				fmt.Fprintf(w, "  route:     %s\n", describeReplayRoute(it.Route, src))
			}
			if it.note != "" {
				fmt.Fprintf(w, "  note:      %s\n", it.note)
			}
		case it.result == nil:
			// Nothing to show beyond the error on stderr.
		default:
			action := "driven again"
			switch it.Decision {
			case decisionAccepted, decisionIgnored:
				action = "journaled as event " + strconv.FormatInt(it.NewEventID, 10)
				if src.event != nil {
					action = "decided again as event " + strconv.FormatInt(it.NewEventID, 10)
				}
			}
			fmt.Fprintf(w, "%s: %s → %s\n", head, action, stateStyle(st, it.Status).Render(it.Status))
			if it.result != nil {
				fmt.Fprintf(w, "  %s\n", stopReason(it.result))
				if actedOn(it.result.Status) {
					fmt.Fprintf(w, "  trace: bridge events show %d\n", it.result.ID)
				}
			}
		}
	}
}

func dryDecision(it *replayItem) string {
	switch it.Decision {
	case decisionRedrive:
		return "drive the event again (" + it.Reason + ")"
	case decisionRefused:
		return "refused: already answered; --force drives it again and posts a new answer"
	case decisionAccepted:
		return "accept (" + it.Kind + ")"
	case decisionIgnored:
		return "ignore: " + it.Reason + " — " + ignoreHelp(it.Reason)
	}
	return it.Decision
}

func describeReplayRoute(r *replayRoute, src *replaySource) string {
	if r == nil {
		inbox := int64(0)
		if src.event != nil {
			inbox = src.event.InboxID
		} else if ev, err := chatwoot.ParseEvent(src.body); err == nil {
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
