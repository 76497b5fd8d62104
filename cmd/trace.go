package cmd

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/store"
)

// writeTrace prints an event and its hops for a human.
func writeTrace(w io.Writer, st styles, e *store.Event, hops []store.Hop) {
	fmt.Fprintf(w, "Event %d  %s\n", e.ID, stateStyle(st, e.Status).Render(e.Status))
	kv := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "  %-13s %s\n", k, v)
		}
	}
	kv("received", e.ReceivedAt.Format("2006-01-02 15:04:05.000 MST"))
	kv("event", strings.TrimSpace(e.Event+" "+e.Kind))
	kv("delivery", e.DeliveryID)
	if e.ConversationID != 0 {
		kv("conversation", fmt.Sprintf("%d (account %d, inbox %d)", e.ConversationID, e.AccountID, e.InboxID))
	}
	if e.MessageID != 0 {
		kv("message", strconv.FormatInt(e.MessageID, 10))
	}
	if e.RouteID != 0 {
		kv("route", strconv.FormatInt(e.RouteID, 10))
	}
	kv("text", quoteText(e.Text))
	if e.Attempts > 0 {
		kv("attempts", strconv.Itoa(e.Attempts))
	}
	if e.Status == store.StatusRejected {
		kv("http", strconv.Itoa(e.HTTPStatus))
		kv("body", quoteText(text.Printable(e.Payload, 200)))
	}
	if len(hops) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Trace")
		t0 := e.ReceivedAt
		for _, h := range hops {
			off := h.At.Sub(t0)
			dur := ""
			if h.Duration > 0 {
				dur = " (" + fmtDur(h.Duration) + ")"
			}
			line := fmt.Sprintf("  %8s  %-9s %-18s %s%s", "+"+fmtDur(off), h.Stage, h.Outcome, h.Detail, dur)
			fmt.Fprintln(w, strings.TrimRight(line, " "))
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Stopped: "+stopReason(e))
}

func quoteText(s string) string {
	if s == "" {
		return ""
	}
	return strconv.Quote(text.OneLine(s, 120))
}

func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		return "0ms"
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	}
	return d.Round(time.Second).String()
}

func stateStyle(st styles, status string) interface{ Render(...string) string } {
	switch status {
	case store.StatusAnswered:
		return st.ok
	case store.StatusFailed, store.StatusRejected:
		return st.bad
	case store.StatusHandedOff, store.StatusSuperseded:
		return st.warn
	}
	return st.dim
}

// stopReason says in one line where the event stopped and why.
func stopReason(e *store.Event) string {
	switch e.Status {
	case store.StatusRejected:
		return fmt.Sprintf("rejected with HTTP %d: %s", e.HTTPStatus, e.Reason)
	case store.StatusIgnored:
		return "ignored: " + e.Reason + " — " + ignoreHelp(e.Reason)
	case store.StatusAccepted:
		if !e.NotBefore.IsZero() && time.Now().Before(e.NotBefore) {
			return "accepted, waiting for the debounce window to close"
		}
		return "accepted, waiting for a worker (is 'bridge serve' running?)"
	case store.StatusWorking:
		return "being worked on (or interrupted; 'bridge serve' resumes it on start)"
	case store.StatusAnswered:
		if e.PostedMessageID != 0 {
			return fmt.Sprintf("answered: the answer was posted as Chatwoot message %d", e.PostedMessageID)
		}
		return "answered"
	case store.StatusHandedOff:
		return "handed to a human: " + e.Reason
	case store.StatusSuperseded:
		return "superseded: " + e.Reason
	case store.StatusFailed:
		return "failed: " + e.LastError + " — fix the cause, then 'bridge replay " + strconv.FormatInt(e.ID, 10) + "'"
	}
	return e.Status
}

func ignoreHelp(reason string) string {
	switch {
	case reason == "not_message_created":
		return "only new messages are answered"
	case reason == "outgoing":
		return "an outgoing message, not the customer's"
	case reason == "own_message":
		return "bridge's own post coming back"
	case reason == "private":
		return "a private note"
	case reason == "not_contact":
		return "the sender is not a contact"
	case strings.HasPrefix(reason, "conversation_status:"):
		return "the conversation is not in a bot status (chatwoot.bot_statuses)"
	case reason == "human_owned":
		return "a human took this conversation over"
	case reason == "empty":
		return "no text and no attachments"
	case reason == "no_route":
		return "the inbox has no route: bridge routes add --inbox ID ..."
	case reason == "disabled_route":
		return "the inbox's route is disabled: bridge routes enable ID"
	case reason == "duplicate":
		return "this message id was already accepted (a redelivery)"
	}
	return ""
}
