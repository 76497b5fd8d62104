package cmd

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/store"
)

// TestConversationsKeepAndAskAgain runs the Dashboard App's actions from the
// CLI: keep silences the bot, ask-again posts a private draft and nothing
// to the customer, both journaled as an operator's.
func TestConversationsKeepAndAskAgain(t *testing.T) {
	w := newWorld(t)
	j := seedJournal(w)
	jane, max := strconv.FormatInt(j.jane, 10), strconv.FormatInt(j.max, 10)
	public := len(botMessages(w.cw, j.jane))

	res := w.mustRun(0, "conversations", "ask-again", jane)
	if !strings.Contains(res.Out, "Draft posted to conversation "+jane+" as private note") {
		t.Errorf("ask-again output:\n%s", res.Out)
	}
	var note string
	for _, m := range w.cw.Messages(j.jane) {
		if m.Private {
			note = m.Content
		}
	}
	// Jane's last message asked for a human; the draft answers it.
	if note != "AI draft: Answer to: Please let me talk to a human." {
		t.Errorf("last private note = %q", note)
	}
	if n := len(botMessages(w.cw, j.jane)); n != public {
		t.Errorf("ask-again posted %d public messages", n-public)
	}

	res = w.mustRunJSON(0, "conversations", "keep", max)
	var kept struct {
		ConversationID int64  `json:"conversation_id"`
		State          string `json:"state"`
	}
	if err := json.Unmarshal([]byte(res.Out), &kept); err != nil || kept.ConversationID != j.max || kept.State != store.StateHuman {
		t.Errorf("keep --json: %q %v", res.Out, err)
	}
	w.withCore(nil, func(ctx context.Context, core *bridge.Bridge, db *store.DB) {
		c, err := db.Conversation(ctx, 1, j.max)
		if err != nil || c.State != store.StateHuman || c.StateReason != "kept for humans by an operator" {
			t.Errorf("after keep: %+v %v", c, err)
		}
		// The kept conversation's next message is not the bot's.
		if e := ingest(t, ctx, core, w.say(j.max, "Hello?"), true); e.Status != store.StatusIgnored || e.Reason != bridge.ReasonHumanOwned {
			t.Errorf("message after keep: %s %s", e.Status, e.Reason)
		}
		evs, err := db.ListEvents(ctx, store.EventFilter{ConversationID: j.jane, Limit: 10})
		if err != nil || len(evs) == 0 || evs[0].Kind != bridge.KindAskAgain || evs[0].Reason != "asked again by an operator" {
			t.Errorf("ask-again event: %+v %v", evs, err)
		}
	})

	w.mustRun(1, "conversations", "ask-again", "999")
	w.mustRun(1, "conversations", "keep", "999")
	w.mustRun(2, "conversations", "keep", "abc")
	// Erik's inbox has no route: bridge knows the conversation but has
	// nothing to ask it with.
	res = w.mustRun(1, "conversations", "ask-again", strconv.FormatInt(j.erik, 10))
	if !strings.Contains(res.Err, "no record") && !strings.Contains(res.Err, "no conversation") && !strings.Contains(res.Err, "no route") {
		t.Errorf("ask-again in an unrouted inbox:\n%s", res.Err)
	}
}
