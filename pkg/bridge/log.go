package bridge

import "github.com/bridge-dev/bridge/pkg/store"

// Log keys: every line about an event uses these names, so one query finds
// all lines of an event, a conversation, an inbox or a route.
const (
	keyEventID        = "event_id"
	keyConversationID = "conversation_id"
	keyInboxID        = "inbox_id"
	keyRoute          = "route"
	keyStage          = "stage"
	keyAttempt        = "attempt"
	keyErr            = "err"
)

// maxLoggedDetail and maxLoggedBody bound what one log line carries: hop
// details at Info, and bodies (webhooks, answers) at Debug only.
const (
	maxLoggedDetail = 200
	maxLoggedBody   = 2048
)

// eventAttrs are the keys that place a log line: event, conversation, inbox,
// route and attempt.
func eventAttrs(e *store.Event, more ...any) []any {
	return append([]any{keyEventID, e.ID, keyConversationID, e.ConversationID, keyInboxID, e.InboxID,
		keyRoute, e.RouteID, keyAttempt, e.Attempts}, more...)
}

// logHop writes the one Info line of a trace step.
func (b *Bridge) logHop(msg string, e *store.Event, h store.Hop) {
	b.log.Info(msg, eventAttrs(e, keyStage, h.Stage, "outcome", h.Outcome,
		"detail", truncate(h.Detail, maxLoggedDetail), "ms", h.Duration.Milliseconds())...)
}
