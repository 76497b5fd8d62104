package cmd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/store"
)

// seedOutcomes writes a journal with known times around testEpoch: route 1
// "support" answered three turns (1 s, 2 s and 9 s; 120 tokens each; a
// fourth message was answered together with the third), posted an answer
// in 0.5 s that the AI followed with its handoff marker, handed off two
// conversations (one given back), saw one resolve by the bot that the
// customer reopened an hour later; route 2 "email" had an agent take over;
// one handoff of route 1 lies eight days back.
func seedOutcomes(t *testing.T, path string) {
	t.Helper()
	db, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.Now = func() time.Time { return testEpoch }
	ctx := t.Context()
	for _, r := range []*store.Route{
		{InboxID: 1, Name: "support", DifyKey: testDifyKey, Mode: store.ModeAuto, Enabled: true},
		{InboxID: 2, Name: "email", DifyKey: testDifyKey2, Mode: store.ModeAuto, Enabled: true},
	} {
		if err := db.AddRoute(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	at := func(d time.Duration) int64 { return testEpoch.Add(d).UnixMilli() }
	err = db.Write(ctx, func(tx *store.Tx) error {
		// ev journals a finished message; an answer (lat > 0) is posted
		// lat after the webhook, as Chatwoot message 1000+id.
		ev := func(id, route, conv int64, status string, rec, lat time.Duration) error {
			posted := int64(0)
			if lat > 0 {
				posted = 1000 + id
				if _, err := tx.Exec(`INSERT INTO posted (message_id, event_id, step, at) VALUES (?, ?, 'answer', ?)`, posted, id, at(rec+lat)); err != nil {
					return err
				}
			}
			// The handoff after an answer ends the event a while later.
			fin := rec + lat
			if status == store.StatusHandedOff {
				fin += 10 * time.Second
			}
			_, err := tx.Exec(`INSERT INTO events (id, received_at, event, kind, account_id, inbox_id, conversation_id, route_id, status, text, updated_at, finished_at, posted_message_id)
				VALUES (?, ?, 'message_created', 'message', 1, ?, ?, ?, ?, 'question', ?, ?, ?)`, id, at(rec), route, conv, route, status, at(fin), at(fin), posted)
			return err
		}
		for i, lat := range []time.Duration{time.Second, 2 * time.Second, 9 * time.Second} {
			id := int64(i + 1)
			if err := ev(id, 1, 41+int64(i%2), store.StatusAnswered, time.Duration(i)*time.Minute, lat); err != nil {
				return err
			}
			if err := tx.AddHop(store.Hop{EventID: id, Stage: "dify", Outcome: "answer", Detail: "40 chars, 12 events, 120 tokens"}); err != nil {
				return err
			}
		}
		if err := ev(4, 1, 42, store.StatusHandedOff, 5*time.Minute, 0); err != nil {
			return err
		}
		if err := ev(5, 2, 50, store.StatusAnswered, 6*time.Minute, 3*time.Second); err != nil {
			return err
		}
		if err := ev(6, 1, 43, store.StatusHandedOff, 7*time.Minute-time.Second, 500*time.Millisecond); err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO events (id, received_at, event, kind, account_id, inbox_id, conversation_id, route_id, status, text, updated_at, finished_at, merged_into)
			VALUES (7, ?, 'message_created', 'message', 1, 1, 41, 1, 'answered', 'and another', ?, ?, 3)`, at(2*time.Minute), at(2*time.Minute+9*time.Second), at(2*time.Minute+9*time.Second)); err != nil {
			return err
		}
		if err := tx.TouchConversation(1, 42, 1, 7, "open", testEpoch, true); err != nil {
			return err
		}
		if err := tx.SetConversationState(1, 42, store.StateBot, "given back by Jane Doe (agent 3)"); err != nil {
			return err
		}
		for _, o := range []store.Ownership{
			{At: testEpoch.Add(-8 * 24 * time.Hour), ConversationID: 40, RouteID: 1, Kind: store.OwnHandoff, Owner: store.StateHuman, Cause: "ai_failed"},
			{At: testEpoch.Add(5 * time.Minute), ConversationID: 42, RouteID: 1, Kind: store.OwnHandoff, Owner: store.StateHuman, Cause: "customer_asked",
				Detail: `customer asked for a human: "a person please"`, EventID: 4},
			{At: testEpoch.Add(7 * time.Minute), ConversationID: 43, RouteID: 1, Kind: store.OwnHandoff, Owner: store.StateHuman, Cause: "ai_requested",
				Detail: "AI requested handoff; target billing"},
			{At: testEpoch.Add(12 * time.Minute), ConversationID: 42, RouteID: 1, Kind: store.OwnReturn, Owner: store.StateBot, Cause: "give-back",
				Detail: "given back by Jane Doe (agent 3); memory after a handoff: same Dify conversation"},
			{At: testEpoch.Add(14 * time.Minute), ConversationID: 41, RouteID: 1, Kind: store.OwnResolved, Owner: store.StateBot, Cause: "status resolved"},
			{At: testEpoch.Add(20 * time.Minute), ConversationID: 41, RouteID: 1, Kind: store.OwnReopened, Owner: store.StateBot, Cause: "status pending"},
			{At: testEpoch.Add(8 * time.Minute), ConversationID: 50, RouteID: 2, Kind: store.OwnTakeover, Owner: store.StateHuman, Cause: "agent_replied"},
		} {
			o.AccountID = 1
			if err := tx.AddOwnership(o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStatsAndLifecycleGolden(t *testing.T) {
	w := newWorld(t)
	seedOutcomes(t, w.db)
	w.mustRun(0, "stats")
	w.mustRun(0, "stats", "--since", "10m", "--route", "1")
	w.mustRun(0, "stats", "--since", "30d", "--route", "2")
	w.mustRun(0, "stats", "--since", "1h", "--route", "9")
	w.mustRun(2, "stats", "--since", "soon")
	w.mustRun(0, "conversations", "show", "42")
	w.mustRun(1, "conversations", "show", "999")

	table := filepath.Join(w.dir, "handoff.toml")
	if err := os.WriteFile(table, []byte("[reasons.customer_asked]\nteam = 2\nagent = 12\npriority = \"high\"\n\n[targets.billing]\nteam = 5\nlabels = [\"billing\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.mustRun(0, "routes", "update", "1", "--handoff-table", table, "--return", "idle", "--idle-after", "45m",
		"--memory-after-handoff", "summary", "--hours", "route", "--week", "mon-fri 09:00-17:30, sat 10:00-13:00",
		"--timezone", "Europe/Paris", "--ask-email")
	w.mustRun(0, "routes", "show", "1")
	w.mustRun(2, "routes", "update", "1", "--return", "sometimes")
	w.mustRun(2, "routes", "update", "1")
	w.mustRun(1, "routes", "update", "7", "--return", "never")
	// The in-flight cap and message options change in place: same id.
	w.mustRun(0, "routes", "update", "2", "--max-in-flight", "3", "--format", "plain", "--transfer", "upload")
	w.mustRun(0, "routes", "show", "2")
	w.mustRun(2, "routes", "update", "2", "--format", "html")
	w.mustRun(2, "routes", "update", "2", "--max-in-flight", "-1")
	checkGolden(t, "lifecycle", w.tr.String())

	res := w.mustRunJSON(0, "stats")
	var st []statsView
	if err := json.Unmarshal([]byte(res.Out), &st); err != nil || len(st) != 2 {
		t.Fatalf("stats --json: %v\n%s", err, res.Out)
	}
	s := st[0]
	if s.RouteID != 1 || s.Name != "support" || s.Handled != 3 || s.Answered != 4 || s.Tokens != 360 || s.HandedOff != 2 ||
		s.Handoffs["customer_asked"] != 1 || s.Returned != 1 || s.ResolvedByBot != 1 || s.Reopened24h != 1 ||
		s.LatencyP50 != 1 || s.LatencyP95 != 9 {
		t.Errorf("route 1: %+v", s)
	}
	if st[1].Takeovers != 1 || st[1].HandedOff != 0 {
		t.Errorf("route 2: %+v", st[1])
	}
	res = w.mustRunJSON(0, "routes", "show", "1")
	var rv routeView
	if err := json.Unmarshal([]byte(res.Out), &rv); err != nil || rv.Lifecycle == nil || rv.Lifecycle.Handoff.Targets["billing"].Team != 5 ||
		rv.Lifecycle.ReturnRule() != "idle" || rv.Lifecycle.MemoryAfterHandoff() != "summary" {
		t.Errorf("routes show --json: %v\n%s", err, res.Out)
	}
}
