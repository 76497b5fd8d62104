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

// ErrAlreadyAnswered is returned by Redrive for an event whose answer was
// posted: driving it again would post it twice.
var ErrAlreadyAnswered = errors.New("already answered")

// DryRun decides about a webhook as Ingest would, with today's routes and
// conversation state, without writing anything or calling any API.
func (b *Bridge) DryRun(ctx context.Context, ev *chatwoot.Event) (Verdict, *store.Route, error) {
	route, err := b.routeForInbox(ctx, ev.InboxID)
	if err != nil {
		return Verdict{}, nil, err
	}
	conv := store.Conversation{State: store.StateBot}
	if ev.AccountID != 0 && ev.Conversation.ID != 0 {
		c, err := b.o.Store.Conversation(ctx, ev.AccountID, ev.Conversation.ID)
		switch {
		case err == nil:
			conv = c
		case !errors.Is(err, store.ErrNotFound):
			return Verdict{}, nil, err
		}
	}
	v := Decide(Input{Event: ev, Route: route, Conv: conv, BotStatuses: b.o.BotStatuses})
	if v.Accept && ev.MessageID != 0 {
		evs, err := b.o.Store.ListEvents(ctx, store.EventFilter{ConversationID: ev.Conversation.ID, Limit: 1000})
		if err != nil {
			return v, route, err
		}
		for _, e := range evs {
			if e.MessageID == ev.MessageID && e.Status != store.StatusIgnored && e.Status != store.StatusRejected {
				v = Verdict{Reason: ReasonDuplicate}
				break
			}
		}
	}
	return v, route, nil
}

// Redrive puts an acted-on event back in the queue so it is driven again.
// Side effects already carried out (a posted handoff note, say) are
// recorded as steps and are not repeated. An answered event is refused with
// ErrAlreadyAnswered unless force is set; with force, its answer step is
// forgotten so a new answer is posted.
func (b *Bridge) Redrive(ctx context.Context, id int64, force bool) error {
	return b.o.Store.Write(ctx, func(tx *store.Tx) error {
		e, err := tx.Event(id)
		if err != nil {
			return err
		}
		if e.MergedInto != 0 && !force {
			return fmt.Errorf("event %d was answered together with event %d: replay that one", id, e.MergedInto)
		}
		switch e.Status {
		case store.StatusWorking:
			if !force {
				return fmt.Errorf("event %d is being worked on (by bridge serve, or an interrupted run); use --force if no server runs", id)
			}
			return fmt.Errorf("event %d was %s, not acted on: replay its payload instead", id, e.Status)
		case store.StatusAnswered:
			if !force {
				return fmt.Errorf("event %d: %w (Chatwoot message %d)", id, ErrAlreadyAnswered, e.PostedMessageID)
			}
		}
		if force && e.Status == store.StatusAnswered {
			if _, err := tx.Exec("UPDATE events SET steps = '' WHERE id = ?", id); err != nil {
				return err
			}
			// The posts made are history now: a forced run posts anew.
			if _, err := tx.Exec("DELETE FROM intents WHERE event_id = ?", id); err != nil {
				return err
			}
		}
		reason := ""
		if err := tx.UpdateEvent(id, store.EventUpdate{Status: store.StatusAccepted, Reason: &reason}); err != nil {
			return err
		}
		return tx.AddHop(store.Hop{EventID: id, Stage: StageWorker, Outcome: "replayed", Detail: fmt.Sprintf("queued again by replay (was %s)", e.Status)})
	})
}

// ProcessNow drives one accepted event to a final state in the caller's
// goroutine (replay without a running server) and returns the result.
func (b *Bridge) ProcessNow(ctx context.Context, id int64) (store.Event, error) {
	e, err := b.o.Store.Event(ctx, id)
	if err != nil {
		return e, err
	}
	if e.Status != store.StatusAccepted {
		return e, nil
	}
	b.InvalidateRoutes() // an operator replaying has likely just changed them
	b.process(ctx, e)
	b.bg.Wait()
	return b.o.Store.Event(ctx, id)
}

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

	// For the human output.
	Was     string       `json:"-"` // the stored event's state before the replay
	WasWhy  string       `json:"-"` // and its reason
	Result  *store.Event `json:"-"` // the event the replay drove or journaled
	Note    string       `json:"-"`
	RouteOK bool         `json:"-"` // the route lookup ran (dry run)
}

// Decisions of ReplayItem.
const (
	DecisionRedrive  = "redrive"  // an acted-on event, driven again
	DecisionAccepted = "accepted" // a payload journaled as a new acted-on event
	DecisionIgnored  = "ignored"  // a payload journaled as ignored
	DecisionRejected = "rejected" // the server refused the payload (--to)
	DecisionRefused  = "refused"  // an answered event, without --force
	DecisionError    = "error"    // nothing could be decided
)

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

func (s *ReplaySource) Label() string {
	if s.Event != nil || s.ID != 0 {
		return "Event " + strconv.FormatInt(s.ID, 10)
	}
	if s.File == "-" {
		return "stdin"
	}
	return s.File
}

// name is the source as error messages name it.
func (s *ReplaySource) Name() string {
	if s.Event != nil || s.ID != 0 {
		return "event " + strconv.FormatInt(s.ID, 10)
	}
	return s.Label()
}

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
		return nil, fmt.Errorf("%s is not a Chatwoot webhook: %v", src.Name(), err)
	case len(src.Body) == 0:
		return nil, fmt.Errorf("event %d has no stored payload to replay", src.ID)
	case src.Event.Status == store.StatusRejected && len(src.Body) >= rejectedPrefix:
		return nil, fmt.Errorf("event %d cannot be replayed: it was rejected, and the journal keeps only the first %d bytes of a rejected body, so its payload is truncated (%v)",
			src.ID, rejectedPrefix, err)
	}
	return nil, fmt.Errorf("event %d cannot be replayed: its stored payload is not a usable webhook (%v)", src.ID, err)
}

type Replayer struct {
	Core  *Bridge
	Force bool
}

func notFound(id int64) ReplayItem {
	return ReplayItem{ID: id, Decision: DecisionError, Error: fmt.Sprintf("no event %d (bridge events list)", id)}
}

func ActedOn(status string) bool {
	return status != store.StatusIgnored && status != store.StatusRejected
}

func refusal(e *store.Event) string {
	return fmt.Sprintf("event %d was already answered (Chatwoot message %d); replaying it would answer the customer twice — add --force to drive it again and post a new answer",
		e.ID, e.PostedMessageID)
}

// Replay drives a stored event again, or journals a payload as a new
// delivery, and drives the new event if it is accepted.
func (r *Replayer) Replay(ctx context.Context, src *ReplaySource) ReplayItem {
	it := ReplayItem{ID: src.ID, File: src.File}
	if src.Event == nil && src.File == "" {
		return notFound(src.ID)
	}
	if e := src.Event; e != nil {
		it.Was, it.WasWhy = e.Status, EventWhy(e)
		if ActedOn(e.Status) {
			it.Decision, it.Reason, it.Kind = DecisionRedrive, "was "+e.Status, e.Kind
			err := r.Core.Redrive(ctx, e.ID, r.Force)
			if errors.Is(err, ErrAlreadyAnswered) {
				it.Decision, it.Reason, it.Status = DecisionRefused, "already answered", e.Status
				it.Error = refusal(e)
				return it
			}
			if err != nil {
				it.Decision, it.Error = DecisionError, fmt.Sprintf("event %d: %v", e.ID, err)
				return it
			}
			return r.drive(ctx, it, e.ID)
		}
	}
	ev, err := parsePayload(src)
	if err != nil {
		it.Decision, it.Error = DecisionError, err.Error()
		return it
	}
	ack, err := r.Core.Ingest(ctx, ev, src.Body, src.Delivery())
	if err != nil {
		it.Decision, it.Error = DecisionError, fmt.Sprintf("%s: journal: %v", src.Name(), err)
		return it
	}
	it.NewEventID = ack.EventID
	if ack.Status != "accepted" {
		it.Decision, it.Reason = DecisionIgnored, ack.Reason
		ne, err := r.Core.o.Store.Event(ctx, ack.EventID)
		if err != nil {
			it.Error = err.Error()
			return it
		}
		it.Status, it.Result = ne.Status, &ne
		return it
	}
	it.Decision = DecisionAccepted
	return r.drive(ctx, it, ack.EventID)
}

// drive processes an accepted event to its final state and records it.
func (r *Replayer) drive(ctx context.Context, it ReplayItem, id int64) ReplayItem {
	e, err := r.Core.ProcessNow(ctx, id)
	if err != nil {
		it.Error = fmt.Sprintf("event %d: %v", id, err)
		return it
	}
	it.Status, it.Kind, it.Result = e.Status, e.Kind, &e
	if e.Status == store.StatusFailed {
		it.Error = fmt.Sprintf("event %d failed again: %s", e.ID, e.LastError)
	}
	if !e.Finished() && ctx.Err() != nil {
		it.Error = fmt.Sprintf("event %d: interrupted while %s; 'bridge serve' resumes it", e.ID, e.Status)
	}
	return it
}

// DryRun says what replay would do, with today's routes and conversation
// states, writing nothing and calling no API.
func (r *Replayer) DryRun(ctx context.Context, src *ReplaySource) ReplayItem {
	it := ReplayItem{ID: src.ID, File: src.File}
	if src.Event == nil && src.File == "" {
		return notFound(src.ID)
	}
	if e := src.Event; e != nil {
		it.Was, it.WasWhy, it.Status = e.Status, EventWhy(e), e.Status
	}
	ev, perr := parsePayload(src)
	if perr != nil && (src.Event == nil || !ActedOn(src.Event.Status)) {
		it.Decision, it.Error = DecisionError, perr.Error()
		return it
	}
	var (
		v     Verdict
		route *store.Route
	)
	if ev != nil {
		var err error
		if v, route, err = r.Core.DryRun(ctx, ev); err != nil {
			it.Decision, it.Error = DecisionError, fmt.Sprintf("%s: %v", src.Name(), err)
			return it
		}
		it.RouteOK = true
		if route != nil {
			it.Route = &ReplayRoute{ID: route.ID, Name: route.Name, InboxID: route.InboxID, Key: config.KeyRef(route.DifyKeyEnv, route.DifyKey),
				Mode: route.Mode, Enabled: route.Enabled}
		}
	}
	if e := src.Event; e != nil && ActedOn(e.Status) {
		it.Decision, it.Reason, it.Kind = DecisionRedrive, "was "+e.Status, e.Kind
		if e.Status == store.StatusAnswered && !r.Force {
			it.Decision, it.Reason = DecisionRefused, "already answered"
			it.Error = refusal(e)
		}
		if ev != nil && !v.Accept && v.Reason != ReasonDuplicate {
			it.Note = "a new delivery of this webhook would be ignored today: " + v.Reason
		}
		return it
	}
	if v.Accept {
		it.Decision, it.Kind = DecisionAccepted, v.Kind
	} else {
		it.Decision, it.Reason = DecisionIgnored, v.Reason
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
				it.Decision, it.Error = DecisionError, err.Error()
				items = append(items, it)
				continue
			}
		}
		status, body, err := postWebhook(ctx, client, u.String(), secret, src.Delivery(), src.Body)
		if err != nil {
			it.Decision, it.Error = DecisionError, fmt.Sprintf("%s: post to %s: %v", src.Name(), shown, err)
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
