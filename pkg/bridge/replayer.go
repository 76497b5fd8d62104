package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/store"
)

// ReplayTimeout bounds one POST to a running server with replay --to; a
// server answers in milliseconds.
const ReplayTimeout = 15 * time.Second

// EventWhy is the one-line reason of an event's state: the last error of a
// failed event, else its reason.
func EventWhy(e *store.Event) string {
	if e.LastError != "" && e.Status == store.StatusFailed {
		return e.LastError
	}
	return e.Reason
}

// ReplayItem is one replayed payload, as --json shows it.
type ReplayItem struct {
	ID         int64        `json:"id"`
	File       string       `json:"file,omitempty"`
	NewEventID int64        `json:"new_event_id"`
	Decision   string       `json:"decision"`
	Reason     string       `json:"reason"`
	Status     string       `json:"status"`
	Error      string       `json:"error"`
	Kind       string       `json:"kind,omitempty"`
	Route      *ReplayRoute `json:"route,omitempty"`
	HTTPStatus int          `json:"http_status,omitempty"`
	Response   string       `json:"response,omitempty"`

	// Plan is the action PlanReplay chose (drive, resume, decide,
	// refuse) and Rule the case of ReplayRules it follows.
	Plan string `json:"plan,omitempty"`
	Rule string `json:"rule,omitempty"`

	// For the human output.
	Was     string       `json:"-"` // the stored event's state before the replay
	WasWhy  string       `json:"-"` // and its reason
	Result  *store.Event `json:"-"` // the event the replay drove or journaled
	Note    string       `json:"-"`
	RouteOK bool         `json:"-"` // the route lookup ran (dry run)
}

// Decisions of ReplayItem; a stored event driven again has the plan's
// action, ActionDrive or ActionResume.
const (
	DecisionAccepted = "accepted" // a payload journaled as a new acted-on event
	DecisionIgnored  = "ignored"  // a payload journaled as ignored
	DecisionRejected = "rejected" // the server refused the payload (--to)
	DecisionRefused  = "refused"  // the plan refuses (see Reason)
	DecisionError    = "error"    // nothing could be decided
)

// ReplayRoute is the route a payload would take, key masked.
type ReplayRoute struct {
	ID      int64  `json:"id"`
	Name    string `json:"name,omitempty"`
	InboxID int64  `json:"inbox_id"`
	Key     string `json:"dify_key"`
	Mode    string `json:"mode"`
	Enabled bool   `json:"enabled"`
}

// ReplaySource is one payload to replay: a stored event or the file.
type ReplaySource struct {
	ID    int64
	File  string
	Event *store.Event // the stored event, nil for the file
	Body  []byte
}

// Label is the source as the output heads it.
func (s *ReplaySource) Label() string {
	if s.Event != nil || s.ID != 0 {
		return "Event " + strconv.FormatInt(s.ID, 10)
	}
	if s.File == "-" {
		return "stdin"
	}
	return s.File
}

// Name is the source as error messages name it.
func (s *ReplaySource) Name() string {
	if s.Event != nil || s.ID != 0 {
		return "event " + strconv.FormatInt(s.ID, 10)
	}
	return s.Label()
}

// Delivery is the delivery id a replayed payload is journaled with.
func (s *ReplaySource) Delivery() string {
	if s.Event != nil {
		return "replay-" + strconv.FormatInt(s.ID, 10)
	}
	return "replay-file"
}

// parsePayload parses a stored or file payload, saying why it cannot be
// replayed when it is not a usable webhook.
func parsePayload(src *ReplaySource) (*chatwoot.Event, error) {
	ev, err := chatwoot.ParseEvent(src.Body)
	if err == nil {
		return ev, nil
	}
	switch {
	case src.Event == nil:
		return nil, fmt.Errorf("not a Chatwoot webhook: %v", err)
	case len(src.Body) == 0:
		return nil, errors.New("no stored payload to replay")
	case src.Event.Status == store.StatusRejected && len(src.Body) >= rejectedPrefix:
		return nil, fmt.Errorf("rejected, and the journal keeps only the first %d bytes of a rejected body, so its payload is truncated (%v)",
			rejectedPrefix, err)
	}
	return nil, fmt.Errorf("the stored payload is not a usable webhook (%v)", err)
}

// Replayer replays stored events and webhook bodies in this process.
type Replayer struct {
	Core  *Bridge
	Force bool
}

func notFound(id int64) ReplayItem {
	return ReplayItem{ID: id, Decision: DecisionError, Error: fmt.Sprintf("no event %d (bridge events list)", id)}
}

// ActedOn says whether an event in status was acted on (not ignored or
// rejected).
func ActedOn(status string) bool {
	return status != store.StatusIgnored && status != store.StatusRejected
}

// plan decides about a source: a stored event by PlanReplay, a file as a
// new delivery. A payload that cannot be used is a refusal too.
func (r *Replayer) plan(ctx context.Context, src *ReplaySource) (ReplayPlan, *chatwoot.Event, error) {
	if src.Event == nil {
		ev, err := parsePayload(src)
		if err != nil {
			return ReplayPlan{Action: ActionRefuse, Why: err.Error()}, nil, nil
		}
		return ReplayPlan{Rule: replayRule("payload"), Action: ActionDecide}, ev, nil
	}
	p, err := r.Core.PlanReplayOf(ctx, src.Event, r.Force)
	if err != nil {
		return p, nil, err
	}
	if p.Action != ActionDecide {
		return p, nil, nil
	}
	ev, err := parsePayload(src)
	if err != nil {
		return ReplayPlan{Rule: p.Rule, Action: ActionRefuse, Why: err.Error()}, nil, nil
	}
	return p, ev, nil
}

// start plans src and begins its record; !ok means the record is final
// (no such event, or the plan could not be made).
func (r *Replayer) start(ctx context.Context, src *ReplaySource) (it ReplayItem, p ReplayPlan, ev *chatwoot.Event, ok bool) {
	if src.Event == nil && src.File == "" {
		return notFound(src.ID), p, nil, false
	}
	p, ev, err := r.plan(ctx, src)
	if err != nil {
		return ReplayItem{ID: src.ID, File: src.File, Decision: DecisionError, Error: errorf(src, "%v", err)}, p, nil, false
	}
	it = ReplayItem{ID: src.ID, File: src.File, Plan: p.Action, Reason: p.Why}
	if p.Rule != nil {
		it.Rule = p.Rule.Name
	}
	if e := src.Event; e != nil {
		it.Was, it.WasWhy, it.Kind = e.Status, EventWhy(e), e.Kind
	}
	return it, p, ev, true
}

// errorf formats a message about src once: "event 3: …" or "file.json: …".
func errorf(src *ReplaySource, format string, args ...any) string {
	return src.Name() + ": " + fmt.Sprintf(format, args...)
}

// Replay does what the plan of src says: drives or resumes a stored event,
// or journals a payload as a new delivery and drives it if accepted.
func (r *Replayer) Replay(ctx context.Context, src *ReplaySource) ReplayItem {
	it, p, ev, ok := r.start(ctx, src)
	if !ok {
		return it
	}
	switch p.Action {
	case ActionRefuse:
		it.Decision, it.Status, it.Error = DecisionRefused, it.Was, errorf(src, "%s", p.Why)
		return it
	case ActionDrive, ActionResume:
		it.Decision = p.Action
		if err := r.Core.Requeue(ctx, src.Event, p); err != nil {
			it.Decision, it.Error = DecisionError, errorf(src, "%v", err)
			return it
		}
		return r.drive(ctx, it, src)
	}
	ack, err := r.Core.Ingest(ctx, ev, src.Body, src.Delivery())
	if err != nil {
		it.Decision, it.Error = DecisionError, errorf(src, "journal: %v", err)
		return it
	}
	it.NewEventID = ack.EventID
	if ack.Status != "accepted" {
		it.Decision, it.Reason = DecisionIgnored, ack.Reason
		ne, err := r.Core.o.Store.Event(ctx, ack.EventID)
		if err != nil {
			it.Error = errorf(src, "%v", err)
			return it
		}
		it.Status, it.Result = ne.Status, &ne
		return it
	}
	it.Decision, it.Reason = DecisionAccepted, ""
	return r.drive(ctx, it, src)
}

// drive processes the accepted event of an item to its final state.
func (r *Replayer) drive(ctx context.Context, it ReplayItem, src *ReplaySource) ReplayItem {
	id := it.NewEventID
	if id == 0 {
		id = src.ID
	}
	e, err := r.Core.ProcessNow(ctx, id)
	if err != nil {
		it.Error = errorf(src, "%v", err)
		return it
	}
	it.Status, it.Kind, it.Result = e.Status, e.Kind, &e
	where := ""
	if id != src.ID {
		where = fmt.Sprintf(" (as event %d)", id)
	}
	if e.Status == store.StatusFailed {
		it.Error = errorf(src, "failed again%s: %s", where, e.LastError)
	}
	if !e.Finished() && ctx.Err() != nil {
		it.Error = errorf(src, "interrupted while %s%s; 'bridge serve' resumes it", e.Status, where)
	}
	return it
}

// DryRun says what Replay would do, with today's routes and conversation
// states, writing nothing and calling no API. A refusal is a decision, not
// an error: only a source that cannot be looked at carries an Error.
func (r *Replayer) DryRun(ctx context.Context, src *ReplaySource) ReplayItem {
	it, p, ev, ok := r.start(ctx, src)
	if !ok {
		return it
	}
	it.Status = it.Was
	var err error
	if ev == nil && src.Event != nil && p.Action != ActionRefuse {
		// An acted-on event: its payload shows what a new delivery would
		// meet today.
		ev, _ = chatwoot.ParseEvent(src.Body) // a stored payload that no longer parses just gets no note
	}
	var v Verdict
	if ev != nil {
		var route *store.Route
		if v, route, err = r.Core.DryRun(ctx, ev); err != nil {
			it.Decision, it.Error = DecisionError, errorf(src, "%v", err)
			return it
		}
		it.RouteOK = true
		if route != nil {
			it.Route = &ReplayRoute{ID: route.ID, Name: route.Name, InboxID: route.InboxID,
				Key: config.KeyRef(route.DifyKeyEnv, route.DifyKey), Mode: route.Mode, Enabled: route.Enabled}
		}
	}
	switch p.Action {
	case ActionRefuse:
		it.Decision = DecisionRefused
	case ActionDrive, ActionResume:
		it.Decision = p.Action
		if ev != nil && !v.Accept && v.Reason != ReasonDuplicate {
			it.Note = "a new delivery of this webhook would be ignored today: " + v.Reason
		}
	default:
		if v.Accept {
			it.Decision, it.Kind, it.Reason = DecisionAccepted, v.Kind, ""
		} else {
			it.Decision, it.Reason = DecisionIgnored, v.Reason
		}
	}
	return it
}

// ReplayTo POSTs each payload to a running server, as Chatwoot would.
// token and secret are chatwoot.webhook_token and chatwoot.webhook_secret,
// which the server checks.
func ReplayTo(ctx context.Context, token, secret string, target *url.URL, srcs []*ReplaySource) []ReplayItem {
	u := *target
	if tok := token; tok != "" {
		q := u.Query()
		if !q.Has("token") {
			q.Set("token", tok)
			u.RawQuery = q.Encode()
		}
	}
	shown := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	client := &http.Client{Timeout: ReplayTimeout}
	items := make([]ReplayItem, 0, len(srcs))
	for _, src := range srcs {
		it := ReplayItem{ID: src.ID, File: src.File}
		if src.Event == nil && src.File == "" {
			items = append(items, notFound(src.ID))
			continue
		}
		if src.Event != nil {
			it.Was, it.WasWhy = src.Event.Status, EventWhy(src.Event)
			if _, err := parsePayload(src); err != nil {
				// Junk would only be refused again; say why here instead.
				it.Decision, it.Error = DecisionError, errorf(src, "%v", err)
				items = append(items, it)
				continue
			}
		}
		status, body, err := postWebhook(ctx, client, u.String(), secret, src.Delivery(), src.Body)
		if err != nil {
			it.Decision, it.Error = DecisionError, errorf(src, "post to %s: %v", shown, err)
			items = append(items, it)
			continue
		}
		it.HTTPStatus, it.Response = status, strings.TrimSpace(text.Printable(body, 1000))
		var ack Ack
		if json.Unmarshal(body, &ack) == nil && ack.Status != "" {
			it.Decision, it.Status, it.NewEventID = ack.Status, ack.Status, ack.EventID
			it.Reason = ack.Reason
			if ack.Error != "" {
				it.Reason = ack.Error
			}
		}
		if status < 200 || status > 299 {
			if it.Decision == "" {
				it.Decision = DecisionRejected
			}
			it.Error = fmt.Sprintf("%s: %s refused it: HTTP %d %s", src.Name(), shown, status, text.OneLine(it.Response, 200))
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
