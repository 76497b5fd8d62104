package bridge

import (
	"slices"
	"strings"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/store"
)

// Ignore reasons, as SPEC section 2.2 names them.
const (
	ReasonNotMessageCreated = "not_message_created"
	ReasonOutgoing          = "outgoing"
	ReasonOwnMessage        = "own_message"
	ReasonPrivate           = "private"
	ReasonNotContact        = "not_contact"
	ReasonStatusPrefix      = "conversation_status:"
	ReasonHumanOwned        = "human_owned"
	ReasonEmpty             = "empty"
	ReasonNoRoute           = "no_route"
	ReasonDisabledRoute     = "disabled_route"
	ReasonDuplicate         = "duplicate"
)

// Input is everything Decide looks at. It is gathered by the handler; Decide
// itself does no I/O.
type Input struct {
	Event *chatwoot.Event
	// Route is the route of the event's inbox, nil when there is none.
	Route *store.Route
	// Conv is bridge's record of the conversation (State "bot" when new).
	Conv store.Conversation
	// Posted is true when the message is bridge's own post: its id was
	// recorded when the POST returned, or its content matched a post in
	// flight in this conversation (the echo can beat the POST's answer).
	Posted      bool
	BotStatuses []string
	// NoStatusReturn: the route gives conversations back to the bot only
	// on a give-back (or never), so a status change into a bot status does
	// not (lifecycle return rule giveback or never).
	NoStatusReturn bool
	// Waiting is true when an open event waits on this message (a voice
	// note whose transcription a message_updated brings).
	Waiting bool
	// CSATFeedback is true when CSAT ratings go to Dify (feedback.csat).
	CSATFeedback bool
}

// Verdict is what to do with a webhook.
type Verdict struct {
	Accept bool
	Kind   string // store.KindMessage, KindTakeover or KindReopen when accepted
	Reason string // why it was ignored
	// ReturnToBot: Chatwoot reports the conversation in a bot status again
	// after a human took it over, so the bot owns it again.
	ReturnToBot bool
}

func ignore(reason string) Verdict { return Verdict{Reason: reason} }

// Decide is the pure filter of SPEC section 2.2: accept a new customer
// message in a conversation the bot owns, or a human's takeover; ignore
// everything else with a reason.
func Decide(in Input) Verdict {
	e := in.Event
	status := effectiveStatus(e, in.Conv)
	// Payloads are snapshots built when their event fired and delivered out
	// of order, retries resending the same snapshot (AgentBotListener and
	// AgentBots::WebhookJob). So only news that a status changed into a bot
	// status, newer than the takeover, gives a human-held conversation back
	// to the bot; the status inside a message_created never does.
	back := !in.NoStatusReturn && in.Conv.State == store.StateHuman && e.Name == "conversation_status_changed" &&
		slices.Contains(in.BotStatuses, status) && newerThan(e.SnapshotAt(), in.Conv.StateAt)
	// A route that does not give conversations back on a status change
	// must not leave one sitting in a bot status, which agents' views do
	// not show as theirs, with a bot that stays silent: Chatwoot reopened it
	// (a customer wrote into a resolved conversation) or someone set it
	// pending, after the takeover. It is opened again for the humans.
	reopen := in.NoStatusReturn && in.Conv.State == store.StateHuman && in.Route != nil && in.Route.Enabled &&
		in.Route.Mode != store.ModeDraft && slices.Contains(in.BotStatuses, status) &&
		!e.SnapshotAt().IsZero() && e.SnapshotAt().After(in.Conv.StateAt)
	if e.Name == "message_updated" {
		if k := updateKind(in); k != "" {
			return Verdict{Accept: true, Kind: k}
		}
	}
	if e.Name != "message_created" {
		if reopen && e.Name == "conversation_status_changed" {
			return Verdict{Accept: true, Kind: store.KindReopen}
		}
		return Verdict{Reason: ReasonNotMessageCreated, ReturnToBot: back}
	}
	draft := in.Route != nil && in.Route.Mode == store.ModeDraft
	if e.MessageType != "incoming" {
		if isOwn(e, in.Posted) {
			return ignore(ReasonOwnMessage)
		}
		if e.Private {
			return ignore(ReasonPrivate)
		}
		human := e.Sender == nil || e.Sender.Type == chatwoot.SenderUser
		// A human reply takes over only a conversation the bot owns; in an
		// open or resolved one it is just an agent at work.
		if e.MessageType == "outgoing" && human && in.Route != nil && in.Route.Enabled && !draft &&
			slices.Contains(in.BotStatuses, status) && (in.Conv.State != store.StateHuman || back) {
			return Verdict{Accept: true, Kind: store.KindTakeover}
		}
		return ignore(ReasonOutgoing)
	}
	if e.Private {
		return ignore(ReasonPrivate)
	}
	if e.Sender != nil && e.Sender.Type != chatwoot.SenderContact && e.Sender.Type != "contact" {
		return ignore(ReasonNotContact)
	}
	if in.Route == nil {
		return ignore(ReasonNoRoute)
	}
	if !in.Route.Enabled {
		return ignore(ReasonDisabledRoute)
	}
	if !statusAllowed(status, in.BotStatuses, draft) {
		return ignore(ReasonStatusPrefix + statusOrUnknown(status))
	}
	if !draft && in.Conv.State == store.StateHuman && !back {
		if reopen {
			return Verdict{Accept: true, Kind: store.KindReopen}
		}
		return ignore(ReasonHumanOwned)
	}
	if strings.TrimSpace(e.Content) == "" && len(e.Attachments) == 0 {
		return Verdict{Reason: ReasonEmpty, ReturnToBot: back}
	}
	return Verdict{Accept: true, Kind: store.KindMessage, ReturnToBot: back}
}

// updateKind picks the message_updated events bridge acts on; every other
// one stays not_message_created. The channel refused one of bridge's own
// posts (content_attributes.external_error); Chatwoot transcribed a voice
// note an event is waiting on; the customer rated the conversation.
func updateKind(in Input) string {
	e := in.Event
	switch {
	case in.Posted && e.ExternalError != "" && in.Route != nil && in.Route.Mode != store.ModeDraft:
		return KindRefused
	case in.Waiting && e.MessageType == "incoming" && e.Transcript() != "":
		return KindTranscript
	case in.CSATFeedback && e.CSAT != nil && e.ContentType == "input_csat" && in.Route != nil && in.Route.Enabled:
		return KindFeedback
	}
	return ""
}

// statusAllowed: auto routes act in bot statuses only; a draft route is a
// copilot for agents, so it also acts while the conversation is open.
func statusAllowed(status string, bot []string, draft bool) bool {
	if slices.Contains(bot, status) {
		return true
	}
	return draft && (status == "open" || status == "pending")
}

func statusOrUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// isOwn: bridge posts with the agent bot's token, so its messages come
// back with sender type agent_bot; with any other token its posts are known
// by their recorded ids or by matching a post in flight.
func isOwn(e *chatwoot.Event, posted bool) bool {
	return posted || (e.Sender != nil && e.Sender.Type == chatwoot.SenderAgentBot)
}

// effectiveStatus is the newest status bridge knows of: the payload's, unless
// bridge holds a status from a newer snapshot (or one it set itself after
// the payload was built).
func effectiveStatus(e *chatwoot.Event, c store.Conversation) string {
	snap := e.SnapshotAt()
	if c.Status != "" && !snap.IsZero() && c.StatusAt.After(snap) {
		return c.Status
	}
	return e.Conversation.Status
}

// newerThan reports whether a snapshot taken at snap is news after t. A
// payload without a time cannot be placed and counts as news.
func newerThan(snap, t time.Time) bool {
	return snap.IsZero() || !snap.Before(t)
}
