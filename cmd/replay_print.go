package cmd

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/store"
)

// printReplay is replay's output for a person; errors and refusals of a
// real run were said on stderr.
func printReplay(a *app, srcs []*bridge.ReplaySource, items []bridge.ReplayItem, o *replayOptions) {
	w := a.io.Out
	st := a.styles()
	if o.dryRun {
		fmt.Fprintln(w, "Dry run: nothing is written, Chatwoot and Dify are not called.")
	}
	for i := range items {
		it, src := &items[i], srcs[i]
		if it.Decision == bridge.DecisionError || it.Decision == bridge.DecisionRefused && !o.dryRun {
			continue // said on stderr
		}
		head := src.Label()
		if it.Was != "" {
			head += " (" + it.Was
			if it.WasWhy != "" && !bridge.ActedOn(it.Was) {
				head += ": " + text.OneLine(it.WasWhy, 60)
			}
			head += ")"
		}
		switch {
		case o.target != nil:
			fmt.Fprintf(w, "%s → HTTP %d %s\n", head, it.HTTPStatus, text.OneLine(it.Response, 300))
			if it.Reason == bridge.ReasonDuplicate && src.Event != nil {
				again := "bridge replay " + strconv.FormatInt(src.ID, 10)
				if src.Event.Status == store.StatusAnswered {
					again += " --force"
				}
				fmt.Fprintf(w, "  the server already acted on this message; to drive the stored event again: %s\n", again)
			}
		case o.dryRun:
			fmt.Fprintln(w, head)
			fmt.Fprintf(w, "  decision:  %s\n", dryDecision(it))
			if it.RouteOK {
				fmt.Fprintf(w, "  route:     %s\n", describeReplayRoute(it.Route, src))
			}
			if it.Note != "" {
				fmt.Fprintf(w, "  note:      %s\n", it.Note)
			}
		case it.Result == nil:
			// Nothing to show beyond the error on stderr.
		default:
			action := "driven again from where it stopped"
			switch it.Decision {
			case bridge.ActionDrive:
				action = "asked Dify again"
			case bridge.DecisionAccepted, bridge.DecisionIgnored:
				action = "journaled as event " + strconv.FormatInt(it.NewEventID, 10)
				if src.Event != nil {
					action = "decided again as event " + strconv.FormatInt(it.NewEventID, 10)
				}
			}
			fmt.Fprintf(w, "%s: %s → %s\n", head, action, stateStyle(st, it.Status).Render(it.Status))
			if it.Result != nil {
				fmt.Fprintf(w, "  %s\n", stopReason(it.Result))
				if bridge.ActedOn(it.Result.Status) {
					fmt.Fprintf(w, "  trace: bridge events show %d\n", it.Result.ID)
				}
			}
		}
	}
}

// dryDecision says what replay would do, in the plan's words.
func dryDecision(it *bridge.ReplayItem) string {
	switch it.Decision {
	case bridge.ActionDrive, bridge.ActionResume:
		return it.Decision + ": " + it.Reason
	case bridge.DecisionRefused:
		return "refuse: " + it.Reason
	case bridge.DecisionAccepted:
		return "accept (" + it.Kind + ")"
	case bridge.DecisionIgnored:
		return "ignore: " + it.Reason + " — " + ignoreHelp(it.Reason)
	}
	return it.Decision
}

// describeReplayRoute names the route a payload would take.
func describeReplayRoute(r *bridge.ReplayRoute, src *bridge.ReplaySource) string {
	if r == nil {
		inbox := int64(0)
		if src.Event != nil {
			inbox = src.Event.InboxID
		} else if ev, err := chatwoot.ParseEvent(src.Body); err == nil {
			inbox = ev.InboxID
		}
		return fmt.Sprintf("none for inbox %d", inbox)
	}
	s := strconv.FormatInt(r.ID, 10)
	if r.Name != "" {
		s += " " + r.Name
	}
	state := "enabled"
	if !r.Enabled {
		state = "disabled"
	}
	return fmt.Sprintf("%s (inbox %d, key %s, %s, %s)", s, r.InboxID, r.Key, r.Mode, state)
}

// redactURL hides a URL's query (it may carry ?token=) for messages.
func redactURL(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		return s[:i] + "?…"
	}
	return s
}
