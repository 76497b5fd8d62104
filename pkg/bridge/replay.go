package bridge

import (
	"context"
	"errors"
	"fmt"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
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
