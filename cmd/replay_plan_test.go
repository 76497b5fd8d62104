package cmd

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// TestReplayHandoffAsksDifyAgain: an event handed off because the AI failed
// is refused while the conversation is a human's (the dry run says so and
// exits 0); once an agent gives the conversation back to the bot, replay
// really asks Dify and posts the answer, and the trace keeps the handoff
// and gains the replay.
func TestReplayHandoffAsksDifyAgain(t *testing.T) {
	w := newWorld(t)
	seedJournal(w)
	var conv, id int64
	w.withCore(nil, func(ctx context.Context, core *bridge.Bridge, _ *store.DB) {
		conv = w.cw.NewConversation(1, simulate.Contact{ID: 7, Name: "Ada"}, "pending")
		w.dify.Fail(testDifyKey, simulate.DifyFault{Status: 500})
		e := ingest(t, ctx, core, w.say(conv, "Can I change my delivery address?"), true)
		if e.Status != store.StatusHandedOff {
			t.Fatalf("seed: ended %s (%s)", e.Status, e.LastError)
		}
		id = e.ID
	})
	before := w.event(id)

	q := w.snapshot()
	res := w.mustRun(0, "replay", itoa(id), "--dry-run")
	if !strings.Contains(res.Out, "refuse: the conversation is with a human") {
		t.Errorf("dry run: %q", res.Out)
	}
	res = w.mustRun(1, "replay", itoa(id))
	if want := "event " + itoa(id) + ": the conversation is with a human"; !strings.Contains(res.Err, want) || strings.Count(res.Err, "event "+itoa(id)) != 1 {
		t.Errorf("replay while a human has it: %q, want %q once", res.Err, want)
	}
	w.assertQuiet(q, "a refused replay")

	// An agent hands the conversation back to the bot.
	w.withCore(nil, func(ctx context.Context, core *bridge.Bridge, _ *store.DB) {
		d, err := w.cw.SetStatus(ctx, conv, "pending")
		if err != nil && d.Body == nil {
			t.Fatal(err)
		}
		ingest(t, ctx, core, d.Body, false)
	})
	q = w.snapshot()
	res = w.mustRun(0, "replay", itoa(id), "--dry-run")
	if !strings.Contains(res.Out, "drive: handed_off, and the conversation is back with the bot: ask Dify again") {
		t.Errorf("dry run, back with the bot: %q", res.Out)
	}
	w.assertQuiet(q, "replay --dry-run")

	difyBefore := w.difyHits.n.Load()
	w.mustRun(0, "replay", itoa(id))
	if w.difyHits.n.Load() == difyBefore {
		t.Error("replay of the handoff did not ask Dify")
	}
	if got := botMessages(w.cw, conv); !slices.Contains(got, "Answer to: Can I change my delivery address?") {
		t.Errorf("bot messages %q", got)
	}
	after := w.event(id)
	if after.Status != store.StatusAnswered {
		t.Errorf("replayed handoff ended %s (%s)", after.Status, after.LastError)
	}
	res = w.mustRun(0, "events", "show", itoa(id))
	if !strings.Contains(res.Out, "replayed") || !strings.Contains(res.Out, "replay (was handed_off: "+before.Reason) ||
		!strings.Contains(res.Out, "handoff   ai_failed") {
		t.Errorf("trace lost history:\n%s", res.Out)
	}
	checkGolden(t, "replay_handoff", w.tr.String())
}

// TestReplayWorking: an event left working is refused without --force
// (the dry run and --help say so too); --force finishes it.
func TestReplayWorking(t *testing.T) {
	w := newWorld(t)
	j := seedJournal(w)
	var id int64
	w.withCore(nil, func(ctx context.Context, core *bridge.Bridge, db *store.DB) {
		id = ingest(t, ctx, core, w.say(j.max, "Is there a warranty?"), false).ID
		if err := db.Write(ctx, func(tx *store.Tx) error { return tx.Claim(id) }); err != nil {
			t.Fatal(err)
		}
	})
	q := w.snapshot()
	if res := w.mustRun(0, "replay", itoa(id), "--dry-run"); !strings.Contains(res.Out, "refuse: being worked on") {
		t.Errorf("dry run: %q", res.Out)
	}
	if res := w.mustRun(1, "replay", itoa(id)); !strings.Contains(res.Err, "event "+itoa(id)+": being worked on") {
		t.Errorf("replay: %q", res.Err)
	}
	w.assertQuiet(q, "a refused replay")
	if res := w.mustRun(0, "replay", itoa(id), "--force", "--dry-run"); !strings.Contains(res.Out, "resume: interrupted") {
		t.Errorf("dry run --force: %q", res.Out)
	}
	w.mustRun(0, "replay", itoa(id), "--force")
	if e := w.event(id); e.Status != store.StatusAnswered {
		t.Errorf("replay --force of a working event ended %s (%s)", e.Status, e.LastError)
	}
	checkGolden(t, "replay_working", w.tr.String())
}

// TestReplayRulesDocumented: --help and the README describe every case of
// the decision replay applies, in its words.
func TestReplayRulesDocumented(t *testing.T) {
	isolate(t)
	help := runCLI(t, "replay", "--help").Out
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	norm := func(s string) string { return strings.Join(strings.Fields(strings.ReplaceAll(s, "`", "")), " ") }
	h, r := norm(help), norm(string(readme))
	for _, rule := range bridge.ReplayRules {
		if !strings.Contains(h, norm(rule.When+" "+rule.Text)) {
			t.Errorf("--help lacks rule %s: %s: %s", rule.Name, rule.When, rule.Text)
		}
		if !strings.Contains(r, norm(rule.Text)) || !strings.Contains(r, norm(rule.When)) {
			t.Errorf("README lacks rule %s: %s: %s", rule.Name, rule.When, rule.Text)
		}
	}
}
