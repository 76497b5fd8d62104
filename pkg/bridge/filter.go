package bridge

import (
	"slices"
	"strconv"
	"strings"

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

// SourcePrefix marks the source_id of every message bridge posts. Chatwoot
// echoes source_id in the webhook of the created message, so bridge knows its
// own post even when that webhook arrives before the POST has returned.
const SourcePrefix = "bridge:"

// Input is everything Decide looks at. It is gathered by the handler; Decide
// itself does no I/O.
type Input struct {
	Event *chatwoot.Event
	// Route is the route of the event's inbox, nil when there is none.
	Route *store.Route
	// Conv is bridge's record of the conversation (State "bot" when new).
	Conv store.Conversation
	// Posted is true when bridge recorded the message id as its own post.
	Posted      bool
	BotStatuses []string
}

// Verdict is what to do with a webhook.
type Verdict struct {
	Accept bool
	Kind   string // store.KindMessage or store.KindTakeover when accepted
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
	status := e.Conversation.Status
	// A conversation returns to the bot when Chatwoot reports a bot status
	// after having reported (or bridge having set) a non-bot status since the
	// takeover: an agent put it back to pending, or it was resolved and
	// reopened as pending by the customer.
	back := in.Conv.State == store.StateHuman && status != "" && slices.Contains(in.BotStatuses, status) &&
		(in.Conv.Status != "" && !slices.Contains(in.BotStatuses, in.Conv.Status) ||
			// Chatwoot sends a status change only when the status changed:
			// into a bot status means someone gave it back to the bot.
			e.Name == "conversation_status_changed")
	if e.Name != "message_created" {
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
		return ignore(ReasonHumanOwned)
	}
	if strings.TrimSpace(e.Content) == "" && len(e.Attachments) == 0 {
		return Verdict{Reason: ReasonEmpty, ReturnToBot: back}
	}
	return Verdict{Accept: true, Kind: store.KindMessage, ReturnToBot: back}
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

func isOwn(e *chatwoot.Event, posted bool) bool {
	return posted || strings.HasPrefix(e.SourceID, SourcePrefix) ||
		(e.Sender != nil && e.Sender.Type == chatwoot.SenderAgentBot)
}

// ownSource parses a source_id bridge set: "bridge:<event id>:<step>".
func ownSource(s string) (eventID int64, step string, ok bool) {
	rest, found := strings.CutPrefix(s, SourcePrefix)
	if !found {
		return 0, "", false
	}
	idStr, step, found := strings.Cut(rest, ":")
	if !found {
		return 0, "", false
	}
	for _, c := range idStr {
		if c < '0' || c > '9' {
			return 0, "", false
		}
	}
	id, err := strconv.ParseInt(idStr, 10, 64)
	if err != nil {
		return 0, "", false // empty, or too large for an event id (it would wrap onto another event)
	}
	return id, step, id > 0 && step != ""
}
