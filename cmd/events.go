package cmd

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/store"
)

func newEventsCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:   "events",
		Short: "Read the journal of webhooks and what became of them",
		Long: `Every webhook bridge received is in the journal: accepted, ignored (with the
reason) or rejected (with the reason and the first bytes of the body).

States: rejected, ignored, accepted, working, answered, handed_off, superseded,
failed.`,
		Example: `  bridge events list --status failed
  bridge events list --conversation 42 --since 1h
  bridge events show 17`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	c.AddCommand(newEventsListCmd(a), newEventsShowCmd(a))
	return c
}

type eventsListOptions struct {
	status       string
	conversation int64
	since        time.Duration
	limit        int
}

func newEventsListCmd(a *app) *cobra.Command {
	o := &eventsListOptions{}
	c := &cobra.Command{
		Use:   "list",
		Short: "List events, newest first",
		Example: `  bridge events list
  bridge events list --status failed --since 24h
  bridge events list --conversation 42 --json`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.status != "" && !slices.Contains(store.Statuses, o.status) {
				return usagef("--status "+strings.Join(store.Statuses, "|"), "bad --status %q", o.status)
			}
			if o.limit <= 0 {
				return usagef("--limit 50", "--limit must be positive")
			}
			db, err := a.openStore(c.Context(), readStore)
			if err != nil {
				return err
			}
			defer db.Close()
			f := store.EventFilter{Status: o.status, ConversationID: o.conversation, Limit: o.limit}
			if o.since > 0 {
				f.Since = a.now().Add(-o.since)
			}
			evs, err := db.ListEvents(c.Context(), f)
			if err != nil {
				return err
			}
			for i := range evs {
				a.maskEvent(&evs[i], nil)
			}
			if a.json {
				out := make([]eventView, 0, len(evs))
				for i := range evs {
					out = append(out, viewEvent(&evs[i], nil))
				}
				return a.printJSON(out)
			}
			if len(evs) == 0 {
				fmt.Fprintln(a.io.Out, "No events.")
				return nil
			}
			rows := make([][]string, 0, len(evs))
			for i := range evs {
				e := &evs[i]
				rows = append(rows, []string{strconv.FormatInt(e.ID, 10), a.localTime(e.ReceivedAt).Format("2006-01-02 15:04:05"),
					e.Status, orDash(eventWhat(e)), numOrDash(e.ConversationID), orDash(eventWhy(e)), orDash(text.OneLine(e.Text, 40))})
			}
			a.table([]string{"id", "received", "status", "event", "conv", "reason", "text"}, rows, 5)
			return nil
		},
	}
	c.Flags().StringVar(&o.status, "status", "", "only this state ("+strings.Join(store.Statuses, ", ")+")")
	c.Flags().Int64Var(&o.conversation, "conversation", 0, "only this Chatwoot conversation id")
	c.Flags().DurationVar(&o.since, "since", 0, "only events received within this long (e.g. 30m, 24h)")
	c.Flags().IntVar(&o.limit, "limit", 50, "at most this many events")
	return c
}

func eventWhat(e *store.Event) string {
	if e.Kind != "" && e.Event == "message_created" {
		return e.Kind
	}
	return e.Event
}

func eventWhy(e *store.Event) string {
	if e.LastError != "" && e.Status == store.StatusFailed {
		return e.LastError
	}
	return e.Reason
}

func numOrDash(n int64) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}

// eventView is an event as CLI output shows it.
type eventView struct {
	ID              int64     `json:"id"`
	ReceivedAt      time.Time `json:"received_at"`
	Status          string    `json:"status"`
	Reason          string    `json:"reason,omitempty"`
	Event           string    `json:"event"`
	Kind            string    `json:"kind,omitempty"`
	DeliveryID      string    `json:"delivery_id,omitempty"`
	HTTPStatus      int       `json:"http_status"`
	AccountID       int64     `json:"account_id,omitempty"`
	InboxID         int64     `json:"inbox_id,omitempty"`
	ConversationID  int64     `json:"conversation_id,omitempty"`
	MessageID       int64     `json:"message_id,omitempty"`
	RouteID         int64     `json:"route_id,omitempty"`
	Text            string    `json:"text,omitempty"`
	Attempts        int       `json:"attempts"`
	LastError       string    `json:"last_error,omitempty"`
	PostedMessageID int64     `json:"posted_message_id,omitempty"`
	Body            string    `json:"body,omitempty"`
	Trace           []hopView `json:"trace,omitempty"`
}

type hopView struct {
	At         time.Time `json:"at"`
	Stage      string    `json:"stage"`
	Outcome    string    `json:"outcome"`
	Detail     string    `json:"detail,omitempty"`
	DurationMS float64   `json:"duration_ms,omitempty"`
}

func viewEvent(e *store.Event, hops []store.Hop) eventView {
	v := eventView{ID: e.ID, ReceivedAt: e.ReceivedAt, Status: e.Status, Reason: e.Reason, Event: e.Event, Kind: e.Kind,
		DeliveryID: e.DeliveryID, HTTPStatus: e.HTTPStatus, AccountID: e.AccountID, InboxID: e.InboxID,
		ConversationID: e.ConversationID, MessageID: e.MessageID, RouteID: e.RouteID, Text: e.Text, Attempts: e.Attempts,
		LastError: e.LastError, PostedMessageID: e.PostedMessageID}
	if e.Status == store.StatusRejected {
		v.Body = text.Printable(e.Payload, 512)
	}
	for _, h := range hops {
		v.Trace = append(v.Trace, hopView{At: h.At, Stage: h.Stage, Outcome: h.Outcome, Detail: h.Detail,
			DurationMS: float64(h.Duration.Microseconds()) / 1000})
	}
	return v
}

func newEventsShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one event and its trace, hop by hop",
		Long: `Show one event: what arrived, what bridge decided, and every step after that
(Dify request, each retry with its error and timing, Chatwoot posts, handoff),
ending with where it stopped and why.`,
		Example: "  bridge events show 17\n  bridge events show 17 --json",
		Args:    exactArgs(1, "bridge events show 17"),
		RunE: func(c *cobra.Command, args []string) error {
			_, err := a.byID(c.Context(), readStore, args[0], "event", "bridge events list", func(db *store.DB, ctx context.Context, id int64) error {
				return showEvent(ctx, a, db, id)
			})
			return err
		},
	}
}

func showEvent(ctx context.Context, a *app, db *store.DB, id int64) error {
	e, err := db.Event(ctx, id)
	if err != nil {
		return err
	}
	hops, err := db.Hops(ctx, id)
	if err != nil {
		return err
	}
	a.maskEvent(&e, hops)
	if a.json {
		return a.printJSON(viewEvent(&e, hops))
	}
	writeTrace(a.io.Out, a.styles(), &e, hops)
	return nil
}

// maskEvent masks the free text of an event and its trace as it is shown.
// The store masks what it writes; this covers rows written before it did,
// and secrets configured since.
func (a *app) maskEvent(e *store.Event, hops []store.Hop) {
	e.Reason, e.LastError, e.DeliveryID = a.red.String(e.Reason), a.red.String(e.LastError), a.red.String(e.DeliveryID)
	if e.Status == store.StatusRejected {
		e.Payload = a.red.Bytes(e.Payload)
	}
	for i := range hops {
		hops[i].Outcome, hops[i].Detail = a.red.String(hops[i].Outcome), a.red.String(hops[i].Detail)
	}
}
