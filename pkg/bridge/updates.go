package bridge

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/dify"
	"github.com/bridge-dev/bridge/pkg/store"
)

// Voice fallbacks (voice.fallback, a route's --voice-fallback).
const (
	VoiceAsk     = "ask"
	VoiceHandoff = "handoff"
)

// More steps and handoff reasons of rich messages.
const (
	// StepVoiceAsk: the customer was asked to type instead of sending a
	// voice note nobody could transcribe.
	StepVoiceAsk = "voice_ask"
	// HandoffVoiceNote: a voice note could not be transcribed and the route
	// hands those off.
	HandoffVoiceNote = HandoffNotUnderstood
	// HandoffDeliveryFailed: the channel's provider refused bridge's post.
	HandoffDeliveryFailed = HandoffProviderRefused
)

const reasonAskedToType = "voice note not understood; asked the customer to type"

// Kinds of the message_updated events bridge acts on.
const (
	// KindRefused: the channel refused one of bridge's posts
	// (content_attributes.external_error).
	KindRefused = "refused"
	// KindTranscript: Chatwoot's transcription of a voice note an event is
	// waiting on; it is applied when journaled and shares that event's fate.
	KindTranscript = "transcript"
	// KindFeedback: the customer rated the conversation (CSAT).
	KindFeedback = "feedback"
)

// difyUser is the Dify end user of a conversation's customer.
func difyUser(e *store.Event, conv *store.Conversation) string {
	contact := conv.ContactID
	if contact == 0 {
		contact = e.ContactID
	}
	return fmt.Sprintf("chatwoot-%d-%d", e.AccountID, contact)
}

// voiceFallbackFor is the route's choice, or the configured one.
func (b *Bridge) voiceFallbackFor(r *store.Route) string {
	if r.Options.VoiceFallback != "" {
		return r.Options.VoiceFallback
	}
	return b.o.VoiceFallback
}

// voiceFallback answers a question made only of voice notes nobody could
// transcribe: never silence, never a guess.
func (b *Bridge) voiceFallback(ctx context.Context, e *store.Event, route *store.Route, why string, draft bool) error {
	b.hop(ctx, e, store.Hop{Stage: StageAttachments, Outcome: "voice note not transcribed", Detail: why})
	if draft {
		if err := b.post(ctx, e, StepDraft, "Voice note not transcribed: "+why, true); err != nil {
			return b.fail(ctx, e, err)
		}
		return b.finish(ctx, e, store.StatusAnswered, "draft", "", store.Hop{Stage: StageDone, Outcome: "answered",
			Detail: "the agents were told the voice note could not be transcribed"})
	}
	if b.voiceFallbackFor(route) == VoiceHandoff {
		return b.handoff(ctx, e, route, HandoffVoiceNote, "voice note could not be transcribed: "+why)
	}
	if why := b.superseded(ctx, e); why != "" {
		return b.finish(ctx, e, store.StatusSuperseded, why, "", store.Hop{Stage: StageDone, Outcome: "superseded",
			Detail: why + "; the voice note is left to the agent"})
	}
	return b.askToType(ctx, e, "")
}

// askToType posts voice.ask_message and ends the event answered.
func (b *Bridge) askToType(ctx context.Context, e *store.Event, resumed string) error {
	if resumed != "" {
		b.hop(ctx, e, store.Hop{Stage: StageWorker, Outcome: "resumed", Detail: resumed})
	}
	if err := b.post(ctx, e, StepVoiceAsk, b.o.VoiceAskMessage, false); err != nil {
		route, rerr := b.routeByID(ctx, e.RouteID)
		if rerr != nil || ctx.Err() != nil {
			return b.fail(ctx, e, err)
		}
		return b.handoff(ctx, e, &route, HandoffVoiceNote, "voice note not transcribed, and asking to type failed: "+errText(err))
	}
	return b.finish(ctx, e, store.StatusAnswered, reasonAskedToType, "", store.Hop{Stage: StageDone, Outcome: "answered",
		Detail: "asked the customer to type (voice.fallback ask)"})
}

// updateInput is what Ingest learns about a message_updated before
// deciding: whether an event waits on the message's transcription.
func (b *Bridge) updateInput(tx *store.Tx, ev *chatwoot.Event, in *Input) (waitingEvent int64, err error) {
	in.CSATFeedback = b.o.CSATFeedback
	if ev.Name != "message_updated" || ev.MessageType != "incoming" || ev.Transcript() == "" {
		return 0, nil
	}
	id, ok, err := tx.OpenMessageEvent(ev.MessageID)
	if err != nil || !ok {
		return 0, err
	}
	in.Waiting = true
	return id, nil
}

// applyUpdate journals what an accepted message_updated carries, in the
// webhook's own transaction: a transcription is stored for the event that
// waits on it, which this event then follows (merged into it).
func applyUpdate(tx *store.Tx, ev *chatwoot.Event, rec *store.Event, waitingEvent int64) error {
	if rec.Kind != KindTranscript {
		return nil
	}
	if err := tx.SetTranscript(ev.MessageID, ev.Transcript()); err != nil {
		return err
	}
	if err := tx.UpdateEvent(rec.ID, store.EventUpdate{MergedInto: waitingEvent}); err != nil {
		return err
	}
	return tx.AddHop(store.Hop{EventID: rec.ID, Stage: StageAttachments, Outcome: "transcript",
		Detail: fmt.Sprintf("chatwoot's transcription of message %d (%d chars) for event %d", ev.MessageID, len([]rune(ev.Transcript())), waitingEvent)})
}

// processUpdate drives the message_updated events bridge acts on.
func (b *Bridge) processUpdate(ctx context.Context, e *store.Event) error {
	switch e.Kind {
	case KindTranscript:
		parent, err := b.o.Store.Event(ctx, e.MergedInto)
		if err != nil || !parent.Finished() {
			return b.finish(ctx, e, store.StatusSuperseded, fmt.Sprintf("transcript for event %d", e.MergedInto), "", store.Hop{})
		}
		reason := fmt.Sprintf("transcript used by event %d", parent.ID)
		return b.finish(ctx, e, parent.Status, reason, "", store.Hop{Stage: StageDone, Outcome: parent.Status, Detail: reason})
	case KindRefused:
		return b.processRefused(ctx, e)
	case KindFeedback:
		return b.processFeedback(ctx, e)
	}
	return b.fail(ctx, e, fmt.Errorf("unknown event kind %q", e.Kind))
}

// processRefused records on the posting event that the channel refused its
// post, and hands the conversation to a human with that reason.
func (b *Bridge) processRefused(ctx context.Context, e *store.Event) error {
	ev, err := chatwoot.ParseEvent(e.Payload)
	if err != nil {
		return b.fail(ctx, e, err)
	}
	poster, step, ok, err := b.o.Store.PostedBy(ctx, ev.MessageID)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("message %d", ev.MessageID)
	if ok {
		what = fmt.Sprintf("%s (%s of event %d)", what, step, poster)
		if err := b.record(ctx, poster, nil, store.Hop{Stage: StageChatwoot, Outcome: "refused by the channel",
			Detail: fmt.Sprintf("message %d (%s): %s (event %d)", ev.MessageID, step, ev.ExternalError, e.ID)}); err != nil {
			return err
		}
	}
	b.hop(ctx, e, store.Hop{Stage: StageChatwoot, Outcome: "refused by the channel", Detail: what + ": " + ev.ExternalError})
	route, err := b.routeByID(ctx, e.RouteID)
	if err != nil {
		return b.fail(ctx, e, fmt.Errorf("route %d: %w", e.RouteID, err))
	}
	conv, err := b.o.Store.Conversation(ctx, e.AccountID, e.ConversationID)
	if err == nil && conv.State == store.StateHuman || strings.HasPrefix(step, "handoff") || step == StepSupersededNote {
		// Already in front of a human; a refused handoff message must not
		// start another handoff.
		return b.finish(ctx, e, store.StatusSuperseded, "the conversation is already with a human", "", store.Hop{Stage: StageDone,
			Outcome: "superseded", Detail: "refusal recorded; the conversation is already with a human"})
	}
	return b.handoff(ctx, e, &route, HandoffDeliveryFailed, "the channel refused the answer: "+ev.ExternalError)
}

// processFeedback sends a CSAT rating to Dify as feedback on the last
// answer bridge posted in the conversation: 4-5 like, 1-2 dislike, 3 none.
func (b *Bridge) processFeedback(ctx context.Context, e *store.Event) error {
	ev, err := chatwoot.ParseEvent(e.Payload)
	if err != nil || ev.CSAT == nil {
		return b.fail(ctx, e, fmt.Errorf("no csat rating in the payload: %v", err))
	}
	rating := ""
	switch {
	case ev.CSAT.Rating >= 4:
		rating = dify.RatingLike
	case ev.CSAT.Rating <= 2:
		rating = dify.RatingDislike
	default:
		reason := "csat rating 3: neutral, no feedback sent"
		return b.finish(ctx, e, store.StatusAnswered, reason, "", store.Hop{Stage: StageDone, Outcome: "answered", Detail: reason})
	}
	last, ok, err := b.o.Store.LastAnswer(ctx, e.AccountID, e.ConversationID)
	if err != nil {
		return err
	}
	if !ok {
		reason := fmt.Sprintf("csat rating %d, but bridge posted no answer in this conversation", ev.CSAT.Rating)
		return b.finish(ctx, e, store.StatusSuperseded, reason, "", store.Hop{Stage: StageDone, Outcome: "superseded", Detail: reason})
	}
	route, err := b.routeByID(ctx, last.RouteID)
	if err != nil {
		return b.fail(ctx, e, fmt.Errorf("route %d of the rated answer: %w", last.RouteID, err))
	}
	client, err := b.difyFor(&route)
	if err != nil {
		return b.fail(ctx, e, err)
	}
	var lastErr error
	for attempt := 0; attempt <= b.o.DifyMaxRetries; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, b.backoff(attempt-1, 10*time.Second)); err != nil {
				return err
			}
		}
		lastErr = client.Feedback(ctx, last.DifyMessageID, last.DifyUser, rating, ev.CSAT.Comment)
		if lastErr == nil || !dify.Retryable(lastErr) {
			break
		}
	}
	if lastErr != nil {
		return b.fail(ctx, e, fmt.Errorf("feedback to dify: %w", lastErr))
	}
	reason := fmt.Sprintf("csat rating %d sent to dify as %s on message %s (event %d)", ev.CSAT.Rating, rating, last.DifyMessageID, last.EventID)
	return b.finish(ctx, e, store.StatusAnswered, reason, "", store.Hop{Stage: StageDone, Outcome: "feedback", Detail: reason})
}
