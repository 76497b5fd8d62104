package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/dashboard"
	"github.com/bridge-dev/bridge/pkg/store"
)

// What an agent or an operator does to one conversation, from the
// Dashboard App or the CLI. Each action is journaled with who did it: in
// the conversation's state reason, or in the trace of the event it creates.

// KindAskAgain is the event an agent's "ask the AI again" journals: the last
// customer message asked once more, the answer posted as a private note.
const KindAskAgain = "ask_again"

// StageAgent is the trace stage of what an agent asked for.
const StageAgent = "agent"

// ErrNoCustomerMessage is returned by AskAgain when bridge journaled no
// customer message in the conversation that it could ask about.
var ErrNoCustomerMessage = errors.New("no customer message to ask about")

// askAgainScan bounds how many of a conversation's newest message webhooks
// AskAgain looks through for the customer's last message.
const askAgainScan = 200

// Operator names who acted from the CLI.
const Operator = "an operator"

// GiveBackBy is GiveBack naming who gave the conversation back.
func GiveBackBy(ctx context.Context, db *store.DB, cw *chatwoot.Client, botStatuses []string, account, conv int64, by string) error {
	if _, err := db.Conversation(ctx, account, conv); err != nil {
		return err
	}
	return giveBack(ctx, db, cw, botStatuses, account, conv, ReturnByGiveBack, "given back by "+by)
}

// Keep makes a conversation the humans': bridge stays silent in it (state
// human) until it is given back, whatever its Chatwoot status. Chatwoot is
// not called: the agent asking is already looking at the conversation.
func Keep(ctx context.Context, db *store.DB, account, conv int64, by string) error {
	if _, err := db.Conversation(ctx, account, conv); err != nil {
		return err
	}
	route, _, err := routeOfConversation(ctx, db, account, conv)
	if err != nil {
		return err
	}
	return db.Write(ctx, func(tx *store.Tx) error {
		c, _, err := tx.Conversation(account, conv)
		if err != nil {
			return err
		}
		if err := tx.SetConversationState(account, conv, store.StateHuman, "kept for humans by "+by); err != nil {
			return err
		}
		if c.State == store.StateHuman {
			return nil // already the humans': kept, not a change of holder
		}
		return tx.AddOwnership(store.Ownership{AccountID: account, ConversationID: conv, RouteID: route,
			Kind: store.OwnKeep, Owner: store.StateHuman, Cause: "keep", Detail: "kept for humans by " + by})
	})
}

// AskAgain journals an ask_again event for the conversation's last customer
// message and returns its id; the worker (or ProcessNow) asks the
// conversation's route with it and posts the answer as a private note
// "AI draft: ...", never to the customer. It works whoever holds the
// conversation: the draft is for the agent to copy.
func AskAgain(ctx context.Context, db *store.DB, account, conv int64, by string) (int64, error) {
	cv, err := db.Conversation(ctx, account, conv)
	if err != nil {
		return 0, err
	}
	src, ev, err := lastCustomerMessage(ctx, db, account, conv)
	if err != nil {
		return 0, err
	}
	routes, err := db.Routes(ctx)
	if err != nil {
		return 0, err
	}
	inbox := cv.InboxID
	if inbox == 0 {
		inbox = src.InboxID
	}
	var route *store.Route
	for i := range routes {
		if routes[i].InboxID == inbox {
			route = &routes[i]
		}
	}
	switch {
	case route == nil:
		return 0, fmt.Errorf("inbox %d has no route: nothing to ask", inbox)
	case !route.Enabled:
		return 0, fmt.Errorf("route %d of inbox %d is disabled", route.ID, inbox)
	}
	rec := store.Event{
		Event: KindAskAgain, Kind: KindAskAgain, Status: store.StatusAccepted, AccountID: account, InboxID: inbox,
		ConversationID: conv, ContactID: src.ContactID, RouteID: route.ID, Payload: src.Payload, Text: ev.Content,
		Reason: "asked again by " + by,
	}
	if rec.ContactID == 0 {
		rec.ContactID = cv.ContactID
	}
	err = db.Write(ctx, func(tx *store.Tx) error {
		if err := tx.InsertEvent(&rec); err != nil {
			return err
		}
		return tx.AddHop(store.Hop{EventID: rec.ID, Stage: StageAgent, Outcome: "ask again",
			Detail: fmt.Sprintf("%s asked the AI again about message %d (event %d)%s; the answer goes in a private note",
				by, ev.MessageID, src.ID, routeNote(route))})
	})
	if err != nil {
		return 0, fmt.Errorf("journal ask again for conversation %d: %w", conv, err)
	}
	return rec.ID, nil
}

// lastCustomerMessage finds the newest customer message bridge journaled in
// the conversation, acted on or ignored (a conversation a human holds has
// only ignored ones).
func lastCustomerMessage(ctx context.Context, db *store.DB, account, conv int64) (store.Event, *chatwoot.Event, error) {
	evs, err := db.ConversationMessages(ctx, account, conv, askAgainScan)
	if err != nil {
		return store.Event{}, nil, err
	}
	for _, e := range evs {
		ev, err := chatwoot.ParseEvent(e.Payload)
		if err != nil || ev.MessageType != "incoming" || ev.Private {
			continue
		}
		if ev.Sender != nil && ev.Sender.Type != chatwoot.SenderContact && ev.Sender.Type != "contact" {
			continue
		}
		if strings.TrimSpace(ev.Content) == "" && len(ev.Attachments) == 0 {
			continue
		}
		return e, ev, nil
	}
	return store.Event{}, nil, fmt.Errorf("conversation %d: %w", conv, ErrNoCustomerMessage)
}

// processAskAgain asks the route about the customer's message again and
// posts the answer as a private note. Nothing reaches the customer, so it
// runs whoever holds the conversation, with no typing indicator, no
// handoff and no supersede gate.
func (b *Bridge) processAskAgain(ctx context.Context, e *store.Event) error {
	route, err := b.routeByID(ctx, e.RouteID)
	if err != nil {
		return b.fail(ctx, e, fmt.Errorf("route %d: %w", e.RouteID, err))
	}
	if e.HasStep(StepDraft) {
		return b.finish(ctx, e, store.StatusAnswered, "draft for an agent", "", store.Hop{Stage: StageDone, Outcome: "answered",
			Detail: "the draft was already posted before a restart"})
	}
	if e.Attempts > 1 {
		// Resumed with the note perhaps out: settle that post with the
		// content it had rather than asking Dify for another.
		in, ok, err := b.o.Store.Intent(ctx, e.ID, StepDraft)
		if err != nil {
			return err
		}
		if ok {
			return b.postAskAgain(ctx, e, in.Content)
		}
	}
	if !route.Enabled {
		return b.fail(ctx, e, fmt.Errorf("route %d was disabled after the agent asked", route.ID))
	}
	conv, err := b.o.Store.Conversation(ctx, e.AccountID, e.ConversationID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	user := difyUser(e, &conv)
	q, err := b.prepare(ctx, e, &route, user)
	if err != nil {
		return b.fail(ctx, e, fmt.Errorf("ai failed: %w", err))
	}
	ans, err := b.ask(ctx, e, &route, &conv, q, user)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errDifyBusy) {
			return err
		}
		return b.fail(ctx, e, fmt.Errorf("ai failed: %w", err))
	}
	if ans.Paused {
		return b.fail(ctx, e, errors.New("ai paused for human input: "+orDefault(ans.PauseReason, "no reason given")))
	}
	text, marked := stripMarker(ans.Text, b.handoffFor(&route).AIMarker)
	switch {
	case text == "" && marked:
		text = "(the AI asked for a human)"
	case text == "":
		return b.fail(ctx, e, errors.New("ai failed: empty answer"))
	}
	return b.postAskAgain(ctx, e, "AI draft: "+text)
}

func (b *Bridge) postAskAgain(ctx context.Context, e *store.Event, note string) error {
	if err := b.post(ctx, e, StepDraft, note, true); err != nil {
		return b.fail(ctx, e, err)
	}
	// The reason stays "asked again by ...".
	return b.finish(ctx, e, store.StatusAnswered, "", "", store.Hop{Stage: StageDone, Outcome: "answered",
		Detail: "draft posted as a private note for the agent"})
}

// dashActions carries out the Dashboard App's buttons inside serve, where
// a running stream can be stopped and the worker woken.
type dashActions struct{ b *Bridge }

var _ dashboard.Actions = dashActions{}

func (a dashActions) GiveBack(ctx context.Context, account, conv int64, by string) error {
	return GiveBackBy(ctx, a.b.o.Store, a.b.o.Chatwoot, a.b.o.BotStatuses, account, conv, by)
}

// Keep lets an answer being written now run to its end: the supersede gate
// keeps it from the customer and posts it as a private note the agent may
// use.
func (a dashActions) Keep(ctx context.Context, account, conv int64, by string) error {
	return Keep(ctx, a.b.o.Store, account, conv, by)
}

func (a dashActions) AskAgain(ctx context.Context, account, conv int64, by string) (int64, error) {
	id, err := AskAgain(ctx, a.b.o.Store, account, conv, by)
	if err == nil {
		a.b.kick()
	}
	return id, err
}
