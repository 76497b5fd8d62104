package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/store"
)

// What replay does with a stored event.
const (
	// ActionDrive asks Dify (again) and posts the answer; steps that would
	// repeat what is being redone (the answer, a handoff) are forgotten
	// first, and a trace hop says so.
	ActionDrive = "drive"
	// ActionResume carries out the steps not yet done, as serve does after
	// a restart: none that was carried out is repeated.
	ActionResume = "resume"
	// ActionDecide decides the stored payload again with today's routes and
	// conversation states, as a new event.
	ActionDecide = "decide"
	// ActionRefuse does nothing; the plan says why.
	ActionRefuse = "refuse"
)

// ReplayRule is one case of what replay does with a stored event. The
// rules are the single description of replay: PlanReplay applies them, and
// `bridge replay --help` and the README print their Text.
type ReplayRule struct {
	Name   string // the case, for tests and --json
	When   string // the states and condition, as --help shows them
	Action string
	Text   string
}

// ReplayRules in the order --help lists them.
var ReplayRules = []ReplayRule{
	{Name: "accepted", When: "accepted", Action: ActionResume,
		Text: "driven now, as a worker would: Dify is asked and the answer posted."},
	{Name: "failed", When: "failed", Action: ActionResume,
		Text: "driven again from where it failed: Dify is asked unless its answer was posted; steps already carried out (a posted note, say) are not repeated."},
	{Name: "working", When: "working", Action: ActionRefuse,
		Text: "refused: a running 'bridge serve' may be driving it. If none runs (it was interrupted), --force finishes it like serve does on start, repeating no step."},
	{Name: "working-force", When: "working, --force", Action: ActionResume,
		Text: "finished: the steps not yet carried out are done, none is repeated."},
	{Name: "answered", When: "answered", Action: ActionRefuse,
		Text: "refused, so the customer never gets the same answer twice; --force asks Dify again and posts a new answer."},
	{Name: "answered-force", When: "answered, --force", Action: ActionDrive,
		Text: "Dify is asked again and a new answer posted (the first stays in the trace)."},
	{Name: "customer-asked", When: "handed_off (the customer asked for a human)", Action: ActionRefuse,
		Text: "refused: the message asks for a human, so replaying it could only hand off again."},
	{Name: "takeover", When: "handed_off (an agent replied)", Action: ActionRefuse,
		Text: "refused: an agent's takeover, already carried out; there is nothing to ask Dify."},
	{Name: "human", When: "handed_off or superseded (or answered, --force), conversation with a human", Action: ActionRefuse,
		Text: "refused, so the bot never talks over an agent: the handoff stands. Give the conversation back to the bot in Chatwoot (a bot status such as pending), then replay."},
	{Name: "back-to-bot", When: "handed_off or superseded, conversation back with the bot", Action: ActionDrive,
		Text: "Dify is asked again and its answer posted. The earlier handoff stays done (its note and status change are not undone or repeated); if the AI fails or asks for a human again, that is a new handoff."},
	{Name: "merged", When: "answered together with an earlier message (debounce)", Action: ActionRefuse,
		Text: "refused: replay the event it was merged into."},
	{Name: "payload", When: "ignored, rejected", Action: ActionDecide,
		Text: "the stored payload is decided again with today's routes and conversation states and journaled as a new event, driven at once if accepted. A rejected body is kept only up to its first 512 bytes, so a longer one cannot be replayed."},
}

func replayRule(name string) *ReplayRule {
	for i := range ReplayRules {
		if ReplayRules[i].Name == name {
			return &ReplayRules[i]
		}
	}
	panic("no replay rule " + name)
}

// ReplayInput is what PlanReplay decides on.
type ReplayInput struct {
	Event *store.Event
	// Conv is the conversation as bridge knows it now (state bot when
	// bridge has no record of it).
	Conv store.Conversation
	// Draft says the event's route is in draft mode, where answers are
	// private notes and the conversation's owner does not matter.
	Draft       bool
	BotStatuses []string
	Force       bool
}

// ReplayPlan is what replay would do with one stored event.
type ReplayPlan struct {
	Rule   *ReplayRule
	Action string
	// Why is this event's case in one line, with its particulars
	// (Chatwoot message ids, the conversation's state).
	Why string
	// forget are the steps to forget so that they are carried out anew.
	forget []string
}

// redoSteps are the steps of an answer and of a handoff: forgotten when
// Dify is asked again, so that its answer (and any new handoff) is posted.
var redoSteps = []string{StepAnswer, StepDraft, StepHandoffDue, StepHandoffMessage, StepHandoffNote, StepHandoffStatus,
	StepHandoffTeam, StepHandoffLabels, StepSupersededNote}

// PlanReplay says what replay does with a stored event: the one decision
// behind --dry-run, the real run, --help and the README.
func PlanReplay(in ReplayInput) ReplayPlan {
	e := in.Event
	plan := func(name, why string) ReplayPlan {
		r := replayRule(name)
		p := ReplayPlan{Rule: r, Action: r.Action, Why: why}
		if p.Action == ActionDrive {
			p.forget = redoSteps
		}
		return p
	}
	withHuman := in.Conv.State == store.StateHuman
	back := !withHuman && (in.Conv.Status == "" || slices.Contains(in.BotStatuses, in.Conv.Status))
	ownerText := func() string {
		if withHuman {
			return "the conversation is with a human (" + text.OneLine(text.Or(in.Conv.StateReason, "since the handoff"), 60) + ")"
		}
		return "the conversation's status is " + in.Conv.Status + ", not a bot status"
	}
	switch {
	case e.Status == store.StatusIgnored || e.Status == store.StatusRejected:
		return plan("payload", e.Status+": decide the payload again")
	case e.MergedInto != 0:
		return plan("merged", fmt.Sprintf("answered together with event %d: replay that one", e.MergedInto))
	}
	switch e.Status {
	case store.StatusAccepted:
		return plan("accepted", "waiting for a worker: drive it now")
	case store.StatusFailed:
		return plan("failed", "failed ("+text.Or(e.LastError, "see the trace")+"): drive it again from where it failed")
	case store.StatusWorking:
		if in.Force {
			return plan("working-force", "interrupted: finish it, repeating no step")
		}
		return plan("working", "being worked on (by 'bridge serve', or an interrupted run); add --force if no server runs")
	case store.StatusAnswered:
		if !in.Force {
			return plan("answered", fmt.Sprintf("already answered (Chatwoot message %d); replaying it would answer the customer twice: add --force to ask Dify again and post a new answer",
				e.PostedMessageID))
		}
		if !in.Draft && !back {
			return plan("human", ownerText()+": the bot would talk over an agent; give the conversation back to the bot, then replay")
		}
		return plan("answered-force", fmt.Sprintf("answered (Chatwoot message %d): ask Dify again and post a new answer", e.PostedMessageID))
	case store.StatusHandedOff, store.StatusSuperseded:
		if e.Kind == store.KindTakeover || e.Kind == store.KindReopen {
			return plan("takeover", "an agent's takeover, already carried out: nothing to ask Dify")
		}
		if handoffCode(e) == HandoffCustomerAsked {
			return plan("customer-asked", "handed off because the customer asked for a human: replaying it could only hand off again")
		}
		if !in.Draft && !back {
			return plan("human", ownerText()+": the handoff stands; give the conversation back to the bot in Chatwoot (a bot status such as pending), then replay")
		}
		return plan("back-to-bot", e.Status+", and the conversation is back with the bot: ask Dify again")
	}
	return ReplayPlan{Action: ActionRefuse, Why: e.Status + ", a state replay does not know"}
}

// PlanReplayOf plans the replay of stored event e with the conversation and
// route as the store has them now.
func (b *Bridge) PlanReplayOf(ctx context.Context, e *store.Event, force bool) (ReplayPlan, error) {
	in := ReplayInput{Event: e, Conv: store.Conversation{State: store.StateBot}, BotStatuses: b.o.BotStatuses, Force: force}
	if e.AccountID != 0 && e.ConversationID != 0 {
		c, err := b.o.Store.Conversation(ctx, e.AccountID, e.ConversationID)
		switch {
		case err == nil:
			in.Conv = c
		case !errors.Is(err, store.ErrNotFound):
			return ReplayPlan{}, err
		}
	}
	if e.RouteID != 0 {
		if r, err := b.o.Store.Route(ctx, e.RouteID); err == nil {
			in.Draft = r.Mode == store.ModeDraft
		}
	}
	if len(in.BotStatuses) == 0 {
		in.BotStatuses = []string{"pending"}
	}
	return PlanReplay(in), nil
}

// ErrReplayChanged is returned by Requeue when the event changed state
// since it was planned (a running server took it, say).
var ErrReplayChanged = errors.New("changed while replay was deciding")

// Requeue puts a stored event back in the queue as plan says (drive or
// resume), forgetting the steps the plan redoes. History is appended, never
// overwritten: a trace hop records the state and reason the event had.
func (b *Bridge) Requeue(ctx context.Context, e *store.Event, plan ReplayPlan) error {
	if plan.Action != ActionDrive && plan.Action != ActionResume {
		return fmt.Errorf("%s is not a requeue", plan.Action)
	}
	return b.o.Store.Write(ctx, func(tx *store.Tx) error {
		cur, err := tx.Event(e.ID)
		if err != nil {
			return err
		}
		if cur.Status != e.Status || cur.Steps != e.Steps {
			return fmt.Errorf("%w (now %s)", ErrReplayChanged, cur.Status)
		}
		if len(plan.forget) > 0 {
			if _, err := tx.Exec("UPDATE events SET steps = ? WHERE id = ?", strings.Join(keptSteps(cur.Steps, plan), ","), e.ID); err != nil {
				return err
			}
			// The posts of forgotten steps are history: they are made anew,
			// not settled as posts in doubt.
			for _, st := range plan.forget {
				if _, err := tx.Exec("DELETE FROM intents WHERE event_id = ? AND step = ?", e.ID, st); err != nil {
					return err
				}
			}
		}
		reason := ""
		if err := tx.UpdateEvent(e.ID, store.EventUpdate{Status: store.StatusAccepted, Reason: &reason}); err != nil {
			return err
		}
		was := e.Status
		if why := EventWhy(e); why != "" {
			was += ": " + why
		}
		what := "driven again from where it stopped"
		if plan.Action == ActionDrive {
			what = "Dify asked again"
		}
		return tx.AddHop(store.Hop{EventID: e.ID, Stage: StageWorker, Outcome: "replayed",
			Detail: fmt.Sprintf("replay (was %s): %s", text.OneLine(was, 300), what)})
	})
}

// ErrReplayRefused is returned by Redrive when the plan refuses; the
// message says why.
var ErrReplayRefused = errors.New("replay refused")

// Redrive plans the replay of stored event id and requeues it when the
// plan drives or resumes it, for a worker to pick up.
func (b *Bridge) Redrive(ctx context.Context, id int64, force bool) error {
	e, err := b.o.Store.Event(ctx, id)
	if err != nil {
		return err
	}
	p, err := b.PlanReplayOf(ctx, &e, force)
	if err != nil {
		return err
	}
	switch p.Action {
	case ActionRefuse:
		return fmt.Errorf("%w: event %d: %s", ErrReplayRefused, id, p.Why)
	case ActionDecide:
		return fmt.Errorf("event %d was %s: replay its payload as a new delivery instead", id, e.Status)
	}
	return b.Requeue(ctx, &e, p)
}

// keptSteps are the steps of an event that replay by plan keeps.
func keptSteps(steps string, plan ReplayPlan) []string {
	keep := []string{}
	for st := range strings.SplitSeq(steps, ",") {
		if st == "" {
			continue
		}
		if len(plan.forget) > 0 && (slices.Contains(plan.forget, st) || strings.HasPrefix(st, stepHandoffReason) ||
			strings.HasPrefix(st, stepHandoffHours)) {
			continue
		}
		keep = append(keep, st)
	}
	return keep
}

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
	in := Input{Event: ev, Route: route, Conv: conv, BotStatuses: b.o.BotStatuses, CSATFeedback: b.o.CSATFeedback}
	if ev.Name == "message_updated" && ev.MessageID != 0 {
		// A refusal counts for bridge's own posts only.
		posted, err := b.o.Store.IsPosted(ctx, ev.MessageID)
		if err != nil {
			return Verdict{}, nil, err
		}
		in.Posted = posted
	}
	v := Decide(in)
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
