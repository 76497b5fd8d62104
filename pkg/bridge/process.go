package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/dify"
	"github.com/bridge-dev/bridge/pkg/lifecycle"
	"github.com/bridge-dev/bridge/pkg/store"
)

// Handoff reasons (metric labels and the first word of the note).
const (
	HandoffCustomerAsked = "customer_asked"
	HandoffAIRequested   = "ai_requested"
	HandoffAIFailed      = "ai_failed"
	HandoffAgentReplied  = "agent_replied"
)

// chatwootAttempts bounds tries of one Chatwoot call.
const chatwootAttempts = 4

func (b *Bridge) processTakeover(ctx context.Context, e *store.Event) error {
	if !b.o.Handoff.OpenOnAgentReply {
		return b.finish(ctx, e, store.StatusHandedOff, "agent replied", "", store.Hop{Stage: StageTakeover,
			Outcome: "human", Detail: "agent replied; bot stops (handoff.open_on_agent_reply is off, status left as is)"})
	}
	if err := b.step(ctx, e, StepTakeoverStatus, "toggle_status", func(ctx context.Context) (int64, error) {
		return 0, b.o.Chatwoot.ToggleStatus(ctx, e.AccountID, e.ConversationID, "open")
	}); err != nil {
		return b.fail(ctx, e, fmt.Errorf("open conversation after agent reply: %w", err))
	}
	b.setStatus(ctx, e, "open")
	b.o.Metrics.handoff(HandoffAgentReplied)
	return b.finish(ctx, e, store.StatusHandedOff, "agent replied", "", store.Hop{Stage: StageTakeover,
		Outcome: "human", Detail: "agent replied; conversation set open"})
}

// processReopen opens a human-held conversation that Chatwoot put back in a
// bot status, when the route does not return conversations to the bot that
// way: the humans keep it, and see it.
func (b *Bridge) processReopen(ctx context.Context, e *store.Event) error {
	if err := b.step(ctx, e, StepReopenStatus, "toggle_status", func(ctx context.Context) (int64, error) {
		return 0, b.o.Chatwoot.ToggleStatus(ctx, e.AccountID, e.ConversationID, "open")
	}); err != nil {
		return b.fail(ctx, e, fmt.Errorf("open conversation for the humans who hold it: %w", err))
	}
	b.setStatus(ctx, e, "open")
	return b.finish(ctx, e, store.StatusHandedOff, "humans hold it", "", store.Hop{Stage: StageTakeover,
		Outcome: "human", Detail: "Chatwoot put it in a bot status; the route gives it back only by " +
			"an agent's give-back, so it is open again for the humans who hold it"})
}

func (b *Bridge) processMessage(ctx context.Context, e *store.Event) error {
	route, err := b.routeByID(ctx, e.RouteID)
	if err != nil {
		return b.fail(ctx, e, fmt.Errorf("route %d: %w", e.RouteID, err))
	}
	if !route.Enabled {
		return b.fail(ctx, e, fmt.Errorf("route %d was disabled after the message was accepted", route.ID))
	}
	draft := route.Mode == store.ModeDraft
	conv, err := b.o.Store.Conversation(ctx, e.AccountID, e.ConversationID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if e.Attempts > 1 {
		// A resumed event whose answer may already be out: settle that post
		// with the content it had, instead of asking Dify for a new one.
		if !draft {
			p, err := b.loadPlan(ctx, e)
			if err != nil {
				return err
			}
			if p != nil {
				return b.resumePlan(ctx, e, &route, p)
			}
			if _, ok, err := b.o.Store.Intent(ctx, e.ID, StepVoiceAsk); err != nil {
				return err
			} else if ok {
				return b.askToType(ctx, e, "the request to type was being posted when bridge stopped")
			}
		}
		step := StepAnswer
		if draft {
			step = StepDraft
		}
		in, ok, err := b.o.Store.Intent(ctx, e.ID, step)
		if err != nil {
			return err
		}
		if ok {
			return b.resumeAnswer(ctx, e, &route, &in)
		}
	}
	// Resume what a restart interrupted: side effects already carried out
	// are recorded as steps and never repeated.
	switch {
	case e.HasStep(StepHandoffDue):
		return b.handoff(ctx, e, &route, HandoffAIRequested, "AI requested handoff")
	case e.HasStep(StepSupersededNote):
		return b.finish(ctx, e, store.StatusSuperseded, "human took over while the AI was answering", "", store.Hop{Stage: StageDone,
			Outcome: "superseded", Detail: "the answer was kept as a private note before a restart"})
	case e.HasStep(StepAnswer) || e.HasStep(StepDraft):
		return b.finish(ctx, e, store.StatusAnswered, "", "", store.Hop{Stage: StageDone, Outcome: "answered",
			Detail: "answer was already posted before a restart"})
	case e.HasStep(StepVoiceAsk):
		return b.finish(ctx, e, store.StatusAnswered, reasonAskedToType, "", store.Hop{Stage: StageDone, Outcome: "answered",
			Detail: "the customer was asked to type before a restart"})
	case handoffStarted(e):
		code := handoffCode(e)
		note := "AI requested handoff"
		switch code {
		case HandoffCustomerAsked:
			note = fmt.Sprintf("customer asked for a human: %q", truncate(e.Text, 200))
		case HandoffAIFailed:
			note = "AI failed: " + orDefault(e.LastError, "see the trace")
		}
		return b.handoff(ctx, e, &route, code, note)
	}
	if !draft && conv.State == store.StateHuman {
		return b.finish(ctx, e, store.StatusSuperseded, "human took over before the answer", "", store.Hop{})
	}
	ho := b.handoffFor(&route)
	if !draft {
		if kw := MatchKeyword(e.Text, ho.Keywords); kw != "" {
			b.hop(ctx, e, store.Hop{Stage: StageHandoff, Outcome: "keyword", Detail: fmt.Sprintf("matched %q", kw)})
			return b.handoff(ctx, e, &route, HandoffCustomerAsked, fmt.Sprintf("customer asked for a human: %q", truncate(e.Text, 200)))
		}
	}
	// Typing shows while Dify works; it goes off before anything is posted
	// (and on every way out), so the indicator never outlives the answer.
	b.typing(ctx, e, true)
	typing := true
	stopTyping := func() {
		if typing {
			typing = false
			b.typing(ctx, e, false)
		}
	}
	defer stopTyping()

	user := difyUser(e, &conv)
	q, err := b.prepare(ctx, e, &route, user)
	if err != nil {
		stopTyping()
		if draft {
			return b.fail(ctx, e, fmt.Errorf("ai failed: %w", err))
		}
		return b.handoff(ctx, e, &route, HandoffAIFailed, "AI failed: "+errText(err))
	}
	if q.nothingElse {
		stopTyping()
		return b.voiceFallback(ctx, e, &route, q.voiceFailed, draft)
	}
	if !draft {
		// Said in a voice note, a request for a human counts as written.
		if kw := MatchKeyword(strings.Join(q.spoken, "\n"), ho.Keywords); kw != "" {
			stopTyping()
			b.hop(ctx, e, store.Hop{Stage: StageHandoff, Outcome: "keyword", Detail: fmt.Sprintf("matched %q in a voice note", kw)})
			return b.handoff(ctx, e, &route, HandoffCustomerAsked, fmt.Sprintf("customer asked for a human (voice note): %q", truncate(strings.Join(q.spoken, " "), 200)))
		}
	}
	ans, err := b.ask(ctx, e, &route, &conv, q, user)
	stopTyping()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if store.IsStorage(err) || errors.Is(err, errDifyBusy) {
			return err // the journal's failure, or Dify at its cap: the worker drives the event again
		}
		if draft {
			return b.fail(ctx, e, fmt.Errorf("ai failed: %w", err))
		}
		return b.handoff(ctx, e, &route, HandoffAIFailed, "AI failed: "+errText(err))
	}
	if ans.Paused {
		if draft {
			return b.fail(ctx, e, errors.New("ai paused for human input"))
		}
		return b.handoff(ctx, e, &route, HandoffAIRequested, "AI requested handoff: "+orDefault(ans.PauseReason, "human input required"))
	}
	text, marked := stripMarker(ans.Text, ho.AIMarker)
	if draft {
		if text == "" {
			return b.fail(ctx, e, errors.New("ai failed: empty answer"))
		}
		if err := b.post(ctx, e, StepDraft, "AI draft: "+text+filesNote(ans), true); err != nil {
			return b.fail(ctx, e, err)
		}
		return b.finish(ctx, e, store.StatusAnswered, "draft", "", store.Hop{Stage: StageDone, Outcome: "answered", Detail: "draft posted as a private note"})
	}
	if !marked && strings.TrimSpace(text) == "" && len(ans.Files) == 0 {
		return b.handoff(ctx, e, &route, HandoffAIFailed, "AI failed: empty answer")
	}
	// The supersede gate: a human may have taken over, or Chatwoot may have
	// moved the conversation out of a bot status, while Dify was thinking.
	if why := b.superseded(ctx, e); why != "" {
		note := "AI draft, not sent: " + text + filesNote(ans)
		if text == "" && len(ans.Files) == 0 {
			note = "AI draft, not sent: (the AI asked for a human)"
		}
		if err := b.post(ctx, e, StepSupersededNote, note, true); err != nil {
			return b.fail(ctx, e, err)
		}
		return b.finish(ctx, e, store.StatusSuperseded, why, "", store.Hop{Stage: StageDone, Outcome: "superseded", Detail: why + "; answer kept as a private note"})
	}
	pl := b.planAnswer(&route, q.channel, text, ans, user)
	save, err := planWriter(e, pl, marked, markerTarget(ans.Text, ho.AIMarker))
	if err != nil {
		return err
	}
	if len(pl.Parts) == 0 && marked {
		if err := b.o.Store.Write(context.WithoutCancel(ctx), save); err != nil {
			return err
		}
	}
	if i, err := b.postPlan(ctx, e, &route, &pl, save); err != nil {
		if marked {
			return b.fail(ctx, e, err)
		}
		return b.afterPostFailure(ctx, e, &route, i, err)
	}
	if marked {
		return b.handoff(ctx, e, &route, HandoffAIRequested, "AI requested handoff")
	}
	return b.finishAnswered(ctx, e, &route, &pl)
}

// resumeAnswer finishes an event resumed with its answer in doubt.
func (b *Bridge) resumeAnswer(ctx context.Context, e *store.Event, route *store.Route, in *store.Intent) error {
	b.hop(ctx, e, store.Hop{Stage: StageWorker, Outcome: "resumed", Detail: in.Step + " was being posted when bridge stopped; settling it"})
	if in.Step == StepAnswer {
		if why := b.superseded(ctx, e); why != "" {
			// Only what is already out stays out: a human owns the
			// conversation now.
			done, err := b.resolveInDoubt(ctx, e, in)
			if err != nil {
				return err
			}
			if !done {
				if err := b.post(ctx, e, StepSupersededNote, "AI draft, not sent: "+in.Content, true); err != nil {
					return b.fail(ctx, e, err)
				}
				return b.finish(ctx, e, store.StatusSuperseded, why, "", store.Hop{Stage: StageDone, Outcome: "superseded",
					Detail: why + "; answer kept as a private note"})
			}
		}
	}
	if err := b.post(ctx, e, in.Step, in.Content, in.Private); err != nil {
		if in.Step == StepAnswer && !e.HasStep(StepHandoffDue) {
			return b.handoff(ctx, e, route, HandoffAIFailed, "answer could not be posted: "+errText(err))
		}
		return b.fail(ctx, e, err)
	}
	if e.HasStep(StepHandoffDue) {
		return b.handoff(ctx, e, route, HandoffAIRequested, "AI requested handoff")
	}
	reason := ""
	if in.Step == StepDraft {
		reason = "draft"
	}
	return b.finishWith(ctx, e, store.StatusAnswered, reason, "", store.Hop{Stage: StageDone, Outcome: "answered"},
		func(tx *store.Tx) error { return tx.CountAnswer(e.AccountID, e.ConversationID) })
}

// superseded says why the conversation is no longer the bot's ("" if it is).
func (b *Bridge) superseded(ctx context.Context, e *store.Event) string {
	conv, err := b.o.Store.Conversation(ctx, e.AccountID, e.ConversationID)
	if err != nil {
		return ""
	}
	if conv.State == store.StateHuman {
		return "human took over: " + conv.StateReason
	}
	if conv.Status != "" && !slices.Contains(b.o.BotStatuses, conv.Status) {
		return "conversation status changed to " + conv.Status
	}
	return ""
}

// ask calls the route's Dify app with retries, reusing the mapped Dify
// conversation and starting a new one once if Dify no longer knows it.
func (b *Bridge) ask(ctx context.Context, e *store.Event, route *store.Route, conv *store.Conversation, q *question, user string) (*dify.Answer, error) {
	client, err := b.difyFor(route)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.o.DifyTimeout)
	defer cancel()
	difyConv := ""
	if conv.RouteID == route.ID {
		difyConv = conv.DifyConversationID
	}
	ev, _ := chatwoot.ParseEvent(e.Payload) // it parsed when it was accepted; nil only for a hand-edited row
	req := dify.ChatRequest{
		Query:          q.query,
		Inputs:         b.inputs(ev, route),
		User:           user,
		ConversationID: difyConv,
		Files:          q.files,
		AppMode:        route.AppMode,
	}
	b.episodeInputs(ctx, e, req.ConversationID == "", req.Inputs)
	if strings.TrimSpace(req.Query) == "" {
		// Dify refuses an empty query.
		req.Query = "(the customer sent an empty message)"
	}
	freshTried, uploaded := false, false
	for attempt := 0; ; attempt++ {
		start := time.Now()
		k := convKey{e.AccountID, e.ConversationID}
		rt := &runningTask{client: client, user: req.User, event: e.ID}
		b.running.Store(k, rt)
		b.waitingDify(1)
		ans, err := client.Chat(ctx, req, func(taskID, _ string) {
			if rt.started(taskID) {
				b.stopTask(rt) // a human took over before the first token
			}
		})
		b.waitingDify(-1)
		b.running.Delete(k)
		d := time.Since(start)
		if err == nil {
			b.o.Metrics.dify(route.ID, "ok", d)
			b.difyAnswered(route.ID)
			if ans.FirstToken > 0 {
				b.o.Metrics.firstToken(route.ID, ans.FirstToken)
			}
			detail := fmt.Sprintf("%d chars, %d events", len(ans.Text), ans.Events)
			if ans.Usage.TotalTokens > 0 {
				detail += fmt.Sprintf(", %d tokens", ans.Usage.TotalTokens)
			}
			if ans.Paused {
				detail = "paused: " + ans.PauseReason
			}
			h := store.Hop{EventID: e.ID, Stage: StageDify, Outcome: "answer", Detail: detail, Duration: d}
			// The hop and a new mapping land in one commit, without an fsync of
			// their own: the post that follows is durable and covers them (a
			// mapping lost to a power cut only starts a new Dify conversation).
			if err := b.o.Store.WriteNoSync(context.WithoutCancel(ctx), func(tx *store.Tx) error {
				if err := tx.AddHop(h); err != nil {
					return err
				}
				if ans.ConversationID != "" && ans.ConversationID != req.ConversationID {
					return tx.MapDify(e.AccountID, e.ConversationID, route.ID, ans.ConversationID)
				}
				return nil
			}); err != nil {
				return nil, fmt.Errorf("store dify conversation: %w", err)
			}
			b.logHop("hop", e, h)
			b.log.Debug("dify answer", eventAttrs(e, keyStage, StageDify, "text", truncate(ans.Text, maxLoggedBody))...)
			return ans, nil
		}
		b.o.Metrics.dify(route.ID, "error", d)
		var ae *dify.APIError
		if errors.As(err, &ae) && ae.ConcurrencyCapped() && b.difyBusy(route.ID, e) {
			// Not retried here: the event goes back in the queue and the
			// dispatcher slows this route down, so that the worker is free.
			b.hop(ctx, e, store.Hop{Stage: StageDify, Outcome: "busy", Detail: errText(err) + "; back in the queue", Duration: d})
			return nil, fmt.Errorf("%w: %w", errDifyBusy, err)
		}
		// A chatflow worker that fails before its first node is, with a conversation id, most
		// likely Dify 1.14 not finding the conversation; try a new one once, as after a 404.
		if errors.As(err, &ae) && (ae.ConversationNotExists() || ae.FailedBeforeFirstNode()) && req.ConversationID != "" && !freshTried {
			detail := "dify no longer knows conversation " + req.ConversationID + "; starting a new one"
			if !ae.ConversationNotExists() {
				detail = errText(err) + "; conversation " + req.ConversationID + " may be gone; starting a new one"
			}
			b.hop(ctx, e, store.Hop{Stage: StageDify, Outcome: "stale conversation", Detail: detail, Duration: d})
			if err := b.o.Store.Write(context.WithoutCancel(ctx), func(tx *store.Tx) error {
				return tx.MapDify(e.AccountID, e.ConversationID, route.ID, "")
			}); err != nil {
				return nil, err
			}
			req.ConversationID, freshTried = "", true
			attempt--
			continue
		}
		if len(q.remote) > 0 && !uploaded && b.transferFor(route) == TransferAuto && refusedRemote(err) {
			// Dify could not fetch Chatwoot's URL (its SSRF proxy refuses
			// private addresses since 1.15, or the URL needs a login):
			// bring the files over by upload instead.
			b.hop(ctx, e, store.Hop{Stage: StageDify, Outcome: "remote url refused",
				Detail: errText(err) + "; uploading the file(s) instead (attachments.transfer auto)", Duration: d})
			b.uploadInstead(ctx, e, client, q, user)
			req.Query, req.Files, uploaded = q.query, q.files, true
			attempt--
			continue
		}
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			b.hop(ctx, e, store.Hop{Stage: StageDify, Outcome: "error", Detail: "dify.timeout reached: " + errText(err), Duration: d})
			return nil, fmt.Errorf("dify.timeout (%s) reached: %w", b.o.DifyTimeout, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		retry := dify.Retryable(err) && attempt < b.o.DifyMaxRetries
		outcome := "error"
		if retry {
			outcome = "error, retrying"
		}
		b.hop(ctx, e, store.Hop{Stage: StageDify, Outcome: outcome, Detail: fmt.Sprintf("attempt %d: %s", attempt+1, errText(err)), Duration: d})
		if !retry {
			return nil, err
		}
		b.o.Metrics.retry("dify")
		if serr := sleep(ctx, b.backoff(attempt, 10*time.Second)); serr != nil {
			return nil, fmt.Errorf("dify.timeout (%s) reached while retrying: %w", b.o.DifyTimeout, err)
		}
	}
}

var placeholder = regexp.MustCompile(`\{(contact\.name|contact\.email|inbox\.name|conversation\.id|account\.id)\}`)

// inputs fills the route's input placeholders from the webhook.
func (b *Bridge) inputs(ev *chatwoot.Event, route *store.Route) map[string]any {
	out := make(map[string]any, len(route.Inputs))
	if len(route.Inputs) == 0 {
		return out
	}
	for k, v := range route.Inputs {
		out[k] = placeholder.ReplaceAllStringFunc(v, func(m string) string {
			if ev == nil {
				return ""
			}
			switch m {
			case "{contact.name}":
				if ev.Sender != nil && ev.Sender.Name != "" {
					return ev.Sender.Name
				}
				return ev.Conversation.Contact.Name
			case "{contact.email}":
				if ev.Sender != nil && ev.Sender.Email != "" {
					return ev.Sender.Email
				}
				return ev.Conversation.Contact.Email
			case "{inbox.name}":
				return ev.InboxName
			case "{conversation.id}":
				return strconv.FormatInt(ev.Conversation.ID, 10)
			case "{account.id}":
				return strconv.FormatInt(ev.AccountID, 10)
			}
			return m
		})
	}
	return out
}

// handoffFor merges the route's overrides into the [handoff] defaults.
func (b *Bridge) handoffFor(r *store.Route) HandoffOptions {
	h := b.o.Handoff
	if r.Keywords != nil {
		h.Keywords = r.Keywords
	}
	if r.HandoffTeam != nil {
		h.TeamID = *r.HandoffTeam
	}
	if r.HandoffLabels != nil {
		h.Labels = r.HandoffLabels
	}
	return h
}

// handoff glides the conversation to a human: the handoff message to the
// customer (the route's out-of-hours message when nobody is there), status
// open, a private note that says why at a glance, then the team, agent,
// priority and labels the route's handoff table gives the reason (or the
// target an AI marker named). Each step is recorded, so a retry or restart
// never repeats one.
//
// The status goes open with the bot token first: for a pending
// conversation that is Chatwoot's bot_handoff! (ConversationsController#
// toggle_status → Conversation#bot_handoff!), which sets waiting_since and
// dispatches conversation.bot_handoff, what Chatwoot's bot-handoff reports
// and its unattended views count. Assigning an agent before that would open
// the conversation without it (AssignmentService#open_on_assignment?).
func (b *Bridge) handoff(ctx context.Context, e *store.Event, route *store.Route, reason, note string) error {
	note = b.o.Redactor.String(note) // every agent reads the note
	ho := b.handoffFor(route)
	s := b.settingsFor(ctx, route.ID)
	cur, err := b.o.Store.Event(ctx, e.ID)
	if err != nil {
		return err
	}
	if !handoffStarted(&cur) {
		// A human who took over meanwhile needs no handoff, and the customer
		// must not hear the bot again: leave the agent a note instead.
		if why := b.superseded(ctx, e); why != "" {
			if err := b.post(ctx, e, StepSupersededNote, "Not handed off ("+why+"): "+note, true); err != nil {
				return b.fail(ctx, e, err)
			}
			return b.finish(ctx, e, store.StatusSuperseded, why, "", store.Hop{Stage: StageDone, Outcome: "superseded",
				Detail: why + "; " + note})
		}
	}
	target := handoffTarget(&cur)
	asg := s.AssignFor(lifecycle.Assign{Team: ho.TeamID, Labels: ho.Labels}, reason, target)
	detail := note
	if target != "" {
		if _, ok := s.Handoff.Targets[target]; ok {
			detail += "; target " + target
		} else {
			detail += "; target " + target + " is not in the route's handoff table"
		}
	}
	hopDetail := detail
	if !asg.IsZero() {
		hopDetail += "; " + asg.String()
	}
	if err := b.record(ctx, e.ID, &store.EventUpdate{AddStep: stepHandoffReason + reason},
		store.Hop{Stage: StageHandoff, Outcome: reason, Detail: hopDetail}); err != nil {
		return err
	}
	b.logHop("hop", e, store.Hop{Stage: StageHandoff, Outcome: reason, Detail: detail})
	hours, err := b.handoffHours(ctx, e, &cur, route, &s)
	if err != nil {
		return err
	}
	closed := hours.known && !hours.open
	msg := ho.Message
	if closed {
		tmpl := s.Hours.Closed
		if tmpl == "" && hours.away != "" {
			tmpl = strings.TrimSpace(hours.away) + " We are back {next_open}."
		}
		msg = lifecycle.ClosedMessage(tmpl, hours.next, s.Hours.AskEmail)
	}
	// Each step is tried on its own: whatever Chatwoot accepts gets a human
	// looking. The status goes open before the note, so a conversation
	// whose messages Chatwoot refuses still lands in front of agents.
	var errs []error
	if msg != "" {
		if err := b.post(ctx, e, StepHandoffMessage, msg, false); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, fmt.Errorf("handoff message: %w", err))
		}
	}
	statusErr := b.step(ctx, e, StepHandoffStatus, "toggle_status", func(ctx context.Context) (int64, error) {
		return 0, b.o.Chatwoot.ToggleStatus(ctx, e.AccountID, e.ConversationID, "open")
	})
	if statusErr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, fmt.Errorf("handoff status: %w", statusErr))
	} else {
		b.setStatus(ctx, e, "open")
	}
	noteText := b.handoffNote(ctx, e, route, &s, handoffNote{reason: reason, note: note, target: target, asg: asg,
		closed: closed, next: hours.next})
	if len(errs) > 0 {
		noteText += "\n(not done: " + errText(errors.Join(errs...)) + ")"
	}
	if err := b.post(ctx, e, StepHandoffNote, noteText, true); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, fmt.Errorf("handoff note: %w", err))
	}
	if asg.Team > 0 {
		if err := b.step(ctx, e, StepHandoffTeam, "assignments", func(ctx context.Context) (int64, error) {
			return 0, b.o.Chatwoot.AssignTeam(ctx, e.AccountID, e.ConversationID, asg.Team)
		}); err != nil {
			b.hop(ctx, e, store.Hop{Stage: StageHandoff, Outcome: "team not assigned", Detail: errText(err)})
		}
	}
	if asg.Agent > 0 {
		if err := b.step(ctx, e, StepHandoffAgent, "assignments", func(ctx context.Context) (int64, error) {
			return 0, b.o.Chatwoot.AssignAgent(ctx, e.AccountID, e.ConversationID, asg.Agent)
		}); err != nil {
			b.hop(ctx, e, store.Hop{Stage: StageHandoff, Outcome: "agent not assigned", Detail: errText(err)})
		}
	}
	if asg.Priority != "" {
		if err := b.step(ctx, e, StepHandoffPriority, "toggle_priority", func(ctx context.Context) (int64, error) {
			return 0, b.o.Chatwoot.TogglePriority(ctx, e.AccountID, e.ConversationID, asg.Priority)
		}); err != nil {
			b.hop(ctx, e, store.Hop{Stage: StageHandoff, Outcome: "priority not set", Detail: errText(err)})
		}
	}
	if len(asg.Labels) > 0 {
		if b.o.ChatwootUser == nil {
			b.hop(ctx, e, store.Hop{Stage: StageHandoff, Outcome: "labels skipped",
				Detail: "labels need a user access token: set chatwoot.user_token"})
			b.log.Warn("handoff labels skipped: chatwoot.user_token is not set", eventAttrs(e, keyStage, StageHandoff)...)
		} else if err := b.step(ctx, e, StepHandoffLabels, "labels", func(ctx context.Context) (int64, error) {
			return 0, b.o.ChatwootUser.SetLabels(ctx, e.AccountID, e.ConversationID, asg.Labels)
		}); err != nil {
			b.hop(ctx, e, store.Hop{Stage: StageHandoff, Outcome: "labels not set", Detail: errText(err)})
		}
	}
	if statusErr == nil {
		// The bot stops only once Chatwoot has the conversation open: with
		// the status still pending, the customer's next message is the
		// bot's again rather than nobody's.
		own := detail
		if closed {
			own += "; out of hours"
		}
		if err := b.o.Store.Write(context.WithoutCancel(ctx), func(tx *store.Tx) error {
			conv, _, err := tx.Conversation(e.AccountID, e.ConversationID)
			if err != nil {
				return err
			}
			if err := tx.SetConversationState(e.AccountID, e.ConversationID, store.StateHuman, note); err != nil {
				return err
			}
			if err := tx.SetHandoffCause(e.AccountID, e.ConversationID, reason); err != nil {
				return err
			}
			if conv.State == store.StateHuman {
				return nil // a resumed handoff already journaled the change
			}
			return tx.AddOwnership(store.Ownership{AccountID: e.AccountID, ConversationID: e.ConversationID, RouteID: route.ID,
				Kind: store.OwnHandoff, Owner: store.StateHuman, Cause: reason, Detail: own, EventID: e.ID})
		}); err != nil {
			return err
		}
	}
	if len(errs) > 0 {
		return b.fail(ctx, e, errors.Join(errs...))
	}
	b.o.Metrics.handoff(reason)
	return b.finish(ctx, e, store.StatusHandedOff, note, "", store.Hop{Stage: StageDone, Outcome: "handed_off", Detail: note})
}

// fail ends an event as failed: even the handoff could not reach Chatwoot.
func (b *Bridge) fail(ctx context.Context, e *store.Event, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if store.IsStorage(err) {
		return err // the journal's failure: the worker drives the event again
	}
	if ferr := b.finish(ctx, e, store.StatusFailed, errText(err), errText(err), store.Hop{Stage: StageDone, Outcome: "failed", Detail: errText(err)}); ferr != nil {
		return errors.Join(err, ferr)
	}
	return err
}

// post posts a message or a private note once per event and step.
//
// The intent (event, step, the exact content, the time) is made durable
// before the POST. A step that has an intent and no result is in doubt: a
// crash, or an answer lost on the wire, may have come after Chatwoot created
// the message. A post in doubt is resolved before anything is posted again
// (resolveInDoubt), and it always carries the content it had the first time.
func (b *Bridge) post(ctx context.Context, e *store.Event, step, content string, private bool) error {
	return b.postMsg(ctx, e, nil, step, content, private, nil, nil)
}

// postMsg is post with the answer's files (fetched from the route's Dify).
// pre, when set, is written in the same commit as the intent (the answer's
// plan, with the first part), so it costs no fsync of its own.
func (b *Bridge) postMsg(ctx context.Context, e *store.Event, route *store.Route, step, content string, private bool,
	files []planFile, pre func(*store.Tx) error) error {
	cur, err := b.o.Store.Event(ctx, e.ID)
	if err != nil {
		return err
	}
	if cur.HasStep(step) {
		b.hop(ctx, e, store.Hop{Stage: StageChatwoot, Outcome: "skipped", Detail: step + " already done"})
		return nil
	}
	in, inDoubt, err := b.o.Store.Intent(ctx, e.ID, step)
	if err != nil {
		return err
	}
	if inDoubt {
		content, private = in.Content, in.Private
	} else {
		in = store.Intent{EventID: e.ID, Step: step, AccountID: e.AccountID, ConversationID: e.ConversationID,
			Private: private, Content: content, Hash: store.ContentHash(content, private), At: b.o.Now()}
		if err := b.o.Store.Write(context.WithoutCancel(ctx), func(tx *store.Tx) error {
			if pre != nil {
				if err := pre(tx); err != nil {
					return err
				}
			}
			return tx.AddIntent(in)
		}); err != nil {
			return fmt.Errorf("record intent to post %s: %w", step, err)
		}
	}
	var lastErr error
	for attempt := 0; attempt < chatwootAttempts; attempt++ {
		if inDoubt {
			done, err := b.resolveInDoubt(ctx, e, &in)
			if err != nil || done {
				return err
			}
			inDoubt = false
		}
		start := time.Now()
		m, err := b.sendMessage(ctx, e, route, content, private, files)
		d := time.Since(start)
		if errors.Is(err, errNothingToPost) {
			// The step is over: nothing of it can reach the customer.
			return b.record(ctx, e.ID, &store.EventUpdate{AddStep: step}, store.Hop{Stage: StageChatwoot, Outcome: "skipped",
				Detail: step + ": " + errText(err)})
		}
		b.o.Metrics.chatwoot("messages", statusOf(err), d)
		if err == nil {
			return b.recordPost(ctx, e, step, m.ID, store.Hop{Stage: StageChatwoot, Outcome: "ok",
				Detail: fmt.Sprintf("%s: message %d", step, m.ID), Duration: d})
		}
		lastErr = err
		// An answer lost after the request went out may hide a created
		// message: the next try first finds out.
		inDoubt = maybeDone(err)
		if retry, err := b.retryChatwoot(ctx, e, step, attempt, err, d); !retry || err != nil {
			return cmp.Or(err, lastErr)
		}
	}
	return lastErr
}

// recordPost records a post as done with Chatwoot's message id.
func (b *Bridge) recordPost(ctx context.Context, e *store.Event, step string, id int64, h store.Hop) error {
	u := store.EventUpdate{AddStep: step}
	if step == StepAnswer || step == StepDraft {
		u.PostedMessageID = id
	}
	h.EventID = e.ID
	if err := b.o.Store.Write(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		if err := tx.RecordPost(id, e.ID, step); err != nil {
			return err
		}
		if err := tx.UpdateEvent(e.ID, u); err != nil {
			return err
		}
		return tx.AddHop(h)
	}); err != nil {
		return err
	}
	b.logHop("hop", e, h)
	return nil
}

// Outcomes of a post in doubt (the outcome label of
// bridge_posts_in_doubt_total).
const (
	InDoubtJournal     = "found_in_journal"
	InDoubtChatwoot    = "found_in_chatwoot"
	InDoubtAbsent      = "not_in_chatwoot"
	InDoubtPostedAgain = "posted_again"
)

// echoPoll is how often a post in doubt looks for its echo in the journal.
const echoPoll = 50 * time.Millisecond

// resolveInDoubt finds out whether a post in doubt was made, in this order:
// its echo already journaled (the webhook of the created message resolves
// the intent when it arrives); with chatwoot.user_token, the conversation's
// latest messages (bot tokens may not list them); otherwise a bounded wait
// (chatwoot.echo_wait) for the echo. done is true when the post exists and
// is now recorded; false means post it (again): a possible duplicate beats
// silence.
func (b *Bridge) resolveInDoubt(ctx context.Context, e *store.Event, in *store.Intent) (done bool, err error) {
	found := func(outcome string, id int64, detail string) (bool, error) {
		b.o.Metrics.postInDoubt(outcome)
		b.log.Info("post in doubt resolved", eventAttrs(e, keyStage, StageChatwoot, "step", in.Step, "outcome", outcome, "message_id", id)...)
		return true, b.recordPost(ctx, e, in.Step, id, store.Hop{Stage: StageChatwoot, Outcome: "in doubt: " + strings.ReplaceAll(outcome, "_", " "),
			Detail: fmt.Sprintf("%s: message %d %s", in.Step, id, detail)})
	}
	fromJournal := func() (bool, int64, error) {
		cur, ok, err := b.o.Store.Intent(ctx, e.ID, in.Step)
		if err != nil || !ok {
			return false, 0, err
		}
		return cur.MessageID != 0, cur.MessageID, nil
	}
	if ok, id, err := fromJournal(); err != nil || ok {
		if err != nil {
			return false, err
		}
		return found(InDoubtJournal, id, "(its webhook was journaled)")
	}
	if b.o.ChatwootUser != nil {
		id, ok, err := b.findPosted(ctx, e, in)
		switch {
		case err != nil:
			b.hop(ctx, e, store.Hop{Stage: StageChatwoot, Outcome: "in doubt", Detail: "listing the conversation's messages failed: " + errText(err)})
		case ok:
			return found(InDoubtChatwoot, id, "(found in the conversation's messages)")
		default:
			// Chatwoot lists every message it created: the post never
			// happened, and posting it now makes no duplicate.
			b.o.Metrics.postInDoubt(InDoubtAbsent)
			b.hop(ctx, e, store.Hop{Stage: StageChatwoot, Outcome: "in doubt: not in chatwoot",
				Detail: in.Step + " is not among the conversation's messages; posting it"})
			return false, nil
		}
	}
	wait := time.NewTimer(b.o.EchoWait)
	defer wait.Stop()
	tick := time.NewTicker(echoPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-tick.C:
			ok, id, err := fromJournal()
			if err != nil {
				return false, err
			}
			if ok {
				return found(InDoubtJournal, id, "(its webhook arrived)")
			}
			continue
		case <-wait.C:
		}
		break
	}
	b.o.Metrics.postInDoubt(InDoubtPostedAgain)
	b.log.Warn("post in doubt made again; set chatwoot.user_token so bridge can check Chatwoot first",
		eventAttrs(e, keyStage, StageChatwoot, "step", in.Step)...)
	b.hop(ctx, e, store.Hop{Stage: StageChatwoot, Outcome: "in doubt: posted again",
		Detail: fmt.Sprintf("no webhook of %s within chatwoot.echo_wait (%s) and no user token to check; posting again", in.Step, b.o.EchoWait)})
	return false, nil
}

// findPosted looks for the post among the conversation's latest messages:
// outgoing, same privacy and content, created around or after the intent,
// and not already recorded as another of bridge's posts.
func (b *Bridge) findPosted(ctx context.Context, e *store.Event, in *store.Intent) (int64, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	msgs, err := b.o.ChatwootUser.Messages(ctx, e.AccountID, e.ConversationID)
	b.o.Metrics.chatwoot("list_messages", statusOf(err), time.Since(start))
	if err != nil {
		return 0, false, err
	}
	// Two clocks meet here (Chatwoot's created_at, bridge's intent time):
	// allow for some skew.
	since := in.At.Add(-5 * time.Minute).Unix()
	for _, m := range msgs {
		if m.MessageType != 1 || m.Private != in.Private || m.CreatedAt < since ||
			store.ContentHash(m.Content, m.Private) != in.Hash {
			continue
		}
		posted, err := b.o.Store.IsPosted(ctx, m.ID)
		if err != nil {
			return 0, false, err
		}
		if !posted {
			return m.ID, true, nil
		}
	}
	return 0, false, nil
}

// maybeDone reports whether a failed POST may still have created the
// message: the request went out and the answer was lost (a timeout, a
// connection cut mid-answer) or a gateway gave up waiting for Chatwoot.
// A refused connection, a 4xx, 429, 500 or 503 created nothing.
func maybeDone(err error) bool {
	var ae *chatwoot.APIError
	if errors.As(err, &ae) {
		// Chatwoot's messages#create answers its own failures 422; a 500
		// comes from before the action. A gateway's 502 or 504 may hide a
		// Chatwoot that went on working.
		return ae.Status == http.StatusBadGateway || ae.Status == http.StatusGatewayTimeout
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return false
	}
	return chatwoot.Retryable(err)
}

// step runs one Chatwoot side effect of an event with retries, unless the
// journal says it was done already, and records it as done.
func (b *Bridge) step(ctx context.Context, e *store.Event, step, call string, fn func(context.Context) (int64, error)) error {
	var lastErr error
	for attempt := 0; attempt < chatwootAttempts; attempt++ {
		// Read the journal before every try: the webhook of our own post
		// may have recorded it even though its response was lost.
		cur, err := b.o.Store.Event(ctx, e.ID)
		if err != nil {
			return err
		}
		if cur.HasStep(step) {
			b.hop(ctx, e, store.Hop{Stage: StageChatwoot, Outcome: "skipped", Detail: step + " already done"})
			return nil
		}
		start := time.Now()
		id, err := fn(ctx)
		d := time.Since(start)
		b.o.Metrics.chatwoot(call, statusOf(err), d)
		if err == nil {
			u := &store.EventUpdate{AddStep: step}
			if step == StepAnswer {
				u.PostedMessageID = id
			}
			detail := step
			if id != 0 {
				detail = fmt.Sprintf("%s: message %d", step, id)
			}
			if err := b.o.Store.Write(context.WithoutCancel(ctx), func(tx *store.Tx) error {
				if id != 0 {
					if err := tx.RecordPosted(id, e.ID, step); err != nil {
						return err
					}
				}
				if err := tx.UpdateEvent(e.ID, *u); err != nil {
					return err
				}
				return tx.AddHop(store.Hop{EventID: e.ID, Stage: StageChatwoot, Outcome: "ok", Detail: detail, Duration: d})
			}); err != nil {
				return err
			}
			b.logHop("hop", e, store.Hop{Stage: StageChatwoot, Outcome: "ok", Detail: detail, Duration: d})
			return nil
		}
		lastErr = err
		if retry, err := b.retryChatwoot(ctx, e, step, attempt, err, d); !retry || err != nil {
			return cmp.Or(err, lastErr)
		}
	}
	return lastErr
}

// retryChatwoot records a failed try of a Chatwoot call and, when another
// try may succeed, waits the backoff before it. It reports whether to try
// again; err is set only when the wait was cut short.
func (b *Bridge) retryChatwoot(ctx context.Context, e *store.Event, step string, attempt int, callErr error, d time.Duration) (bool, error) {
	retry := chatwoot.Retryable(callErr) && attempt < chatwootAttempts-1 && ctx.Err() == nil
	outcome := "error"
	if retry {
		outcome = "error, retrying"
	}
	b.hop(ctx, e, store.Hop{Stage: StageChatwoot, Outcome: outcome, Detail: fmt.Sprintf("%s attempt %d: %s", step, attempt+1, errText(callErr)), Duration: d})
	if !retry {
		return false, nil
	}
	b.o.Metrics.retry("chatwoot")
	if err := sleep(ctx, b.backoff(attempt, 5*time.Second)); err != nil {
		return false, err
	}
	return true, nil
}

func statusOf(err error) int {
	if err == nil {
		return http.StatusOK
	}
	var ae *chatwoot.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

func (b *Bridge) setStatus(ctx context.Context, e *store.Event, status string) {
	_ = b.o.Store.Write(context.WithoutCancel(ctx), func(tx *store.Tx) error { // bookkeeping only; the next webhook corrects it
		return tx.SetStatus(e.AccountID, e.ConversationID, status, b.o.Now())
	})
}

// typing toggles the typing indicator; best effort, no retries.
func (b *Bridge) typing(ctx context.Context, e *store.Event, on bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	start := time.Now()
	err := b.o.Chatwoot.Typing(ctx, e.AccountID, e.ConversationID, on)
	b.o.Metrics.chatwoot("toggle_typing_status", statusOf(err), time.Since(start))
	if err != nil {
		b.log.Debug("typing indicator", eventAttrs(e, keyStage, StageChatwoot, keyErr, err)...)
	}
}

// MatchKeyword returns the first keyword found in text as a whole word or
// phrase, case-insensitively ("" if none).
func MatchKeyword(text string, keywords []string) string {
	t := " " + normalizeWords(text) + " "
	for _, k := range keywords {
		nk := normalizeWords(k)
		if nk != "" && strings.Contains(t, " "+nk+" ") {
			return k
		}
	}
	return ""
}

// normalizeWords lower-cases text and turns every run of non-letters and
// non-digits into one space, so "Human!" and "a  real-person" match.
func normalizeWords(s string) string {
	var sb strings.Builder
	space := true
	for _, r := range strings.ToLower(s) {
		if isWordRune(r) {
			sb.WriteRune(r)
			space = false
		} else if !space {
			sb.WriteByte(' ')
			space = true
		}
	}
	return strings.TrimSpace(sb.String())
}

func isWordRune(r rune) bool {
	return r == '\'' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127 && !strings.ContainsRune("  、。，！？", r)
}

// stripMarker removes every occurrence of the handoff marker
// (case-insensitively) and reports whether there was one.
func stripMarker(text, marker string) (string, bool) {
	if marker == "" {
		return strings.TrimSpace(text), false
	}
	if re := targetedMarker(marker); re != nil && re.MatchString(text) {
		// [[handoff:billing]] is the marker naming a target.
		text = re.ReplaceAllString(text, marker)
	}
	lower, lm := strings.ToLower(text), strings.ToLower(marker)
	if !strings.Contains(lower, lm) {
		return strings.TrimSpace(text), false
	}
	var sb strings.Builder
	for {
		i := strings.Index(lower, lm)
		if i < 0 {
			sb.WriteString(text)
			break
		}
		sb.WriteString(text[:i])
		text, lower = text[i+len(marker):], lower[i+len(lm):]
	}
	return strings.TrimSpace(sb.String()), true
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// runningTask is a Dify stream in flight, so a takeover can stop it.
type runningTask struct {
	client *dify.Client
	user   string
	event  int64

	mu       sync.Mutex
	task     string
	stopWant bool
	stopped  bool
}

// started records the task id and reports whether a stop is already wanted.
func (rt *runningTask) started(task string) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.task = task
	return rt.stopWant && !rt.stopped
}

// stopRunning asks Dify to stop the stream of a conversation a human just
// took over, instead of paying for the rest of an answer nobody will send.
// A stream that has not reported its task id yet is stopped as soon as it
// does.
func (b *Bridge) stopRunning(account, conv int64) {
	v, ok := b.running.Load(convKey{account, conv})
	if !ok {
		return
	}
	rt := v.(*runningTask)
	rt.mu.Lock()
	rt.stopWant = true
	ready := rt.task != "" && !rt.stopped
	rt.mu.Unlock()
	if ready {
		b.stopTask(rt)
	}
}

func (b *Bridge) stopTask(rt *runningTask) {
	rt.mu.Lock()
	if rt.stopped {
		rt.mu.Unlock()
		return
	}
	rt.stopped = true
	task := rt.task
	rt.mu.Unlock()
	b.bg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := rt.client.Stop(ctx, task, rt.user)
		outcome, detail := "stopped", "human took over; dify task "+task+" stopped"
		if err != nil {
			outcome, detail = "stop failed", errText(err)
		}
		if rerr := b.record(ctx, rt.event, nil, store.Hop{Stage: StageDify, Outcome: outcome, Detail: detail}); rerr != nil {
			b.log.Error("record hop", "event_id", rt.event, "err", rerr)
		}
	})
}

// stepHandoffReason prefixes the step that records why a handoff began, so
// a resumed handoff keeps its reason.
const stepHandoffReason = "handoff_reason_"

// handoffStarted reports whether a handoff of the event already began.
func handoffStarted(e *store.Event) bool {
	return handoffCode(e) != "" || e.HasStep(StepHandoffMessage) || e.HasStep(StepHandoffNote) || e.HasStep(StepHandoffStatus)
}

// handoffCode is the reason of a handoff that began ("" if none).
func handoffCode(e *store.Event) string {
	for st := range strings.SplitSeq(e.Steps, ",") {
		if code, ok := strings.CutPrefix(st, stepHandoffReason); ok {
			return code
		}
	}
	return ""
}
