package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func mustOpen(t *testing.T) *DB {
	t.Helper()
	db, err := Open(t.Context(), filepath.Join(t.TempDir(), "bridge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestOpenSQLite(t *testing.T) {
	t.Run("CreatesFile0600AndMigrates", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sub", "bridge.db")
		db, err := Open(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("mode = %v, want 0600", st.Mode().Perm())
		}
		applied, known, err := db.SchemaVersion(t.Context())
		if err != nil || applied != known || known < 1 {
			t.Errorf("schema applied=%d known=%d err=%v", applied, known, err)
		}
		var mode string
		if err := db.Reader().QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
			t.Errorf("journal_mode = %q, %v; want wal", mode, err)
		}
	})
}

func TestGroupCommit(t *testing.T) {
	db := mustOpen(t)
	// Hold the writer inside a write so the others queue up behind it and
	// must share the next transaction.
	release := make(chan struct{})
	started := make(chan struct{})
	go func() {
		_ = db.Write(t.Context(), func(tx *Tx) error {
			close(started)
			<-release
			return nil
		})
	}()
	<-started
	const n = 50
	var wg sync.WaitGroup
	ids := make([]int64, n)
	for i := range n {
		wg.Go(func() {
			e := &Event{Status: StatusAccepted, MessageID: int64(1000 + i), Kind: KindMessage}
			if err := db.Write(t.Context(), func(tx *Tx) error { return tx.InsertEvent(e) }); err != nil {
				t.Error(err)
			}
			ids[i] = e.ID
		})
	}
	// Wait until every writer is queued, then let the first batch finish.
	for len(db.reqs) < n {
		time.Sleep(time.Millisecond) // polling a queue length, not timing behaviour
	}
	close(release)
	wg.Wait()
	commits, writes := db.Commits()
	if writes != n+1 {
		t.Fatalf("writes = %d, want %d", writes, n+1)
	}
	if commits >= writes {
		t.Errorf("commits = %d for %d writes: no group commit", commits, writes)
	}
	for i, id := range ids {
		e, err := db.Event(t.Context(), id)
		if err != nil || e.MessageID != int64(1000+i) {
			t.Errorf("event %d: %+v %v", id, e, err)
		}
	}
}

func TestWriteErrorUndoesOnlyItsOwnChanges(t *testing.T) {
	db := mustOpen(t)
	release := make(chan struct{})
	started := make(chan struct{})
	go func() {
		_ = db.Write(t.Context(), func(tx *Tx) error { close(started); <-release; return nil })
	}()
	<-started
	boom := errors.New("boom")
	var wg sync.WaitGroup
	var good, bad *Event
	wg.Go(func() {
		good = &Event{Status: StatusIgnored, Reason: "good"}
		if err := db.Write(t.Context(), func(tx *Tx) error { return tx.InsertEvent(good) }); err != nil {
			t.Error(err)
		}
	})
	wg.Go(func() {
		bad = &Event{Status: StatusIgnored, Reason: "bad"}
		err := db.Write(t.Context(), func(tx *Tx) error {
			if err := tx.InsertEvent(bad); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Errorf("err = %v, want boom", err)
		}
	})
	for len(db.reqs) < 2 {
		time.Sleep(time.Millisecond) // polling a queue length, not timing behaviour
	}
	close(release)
	wg.Wait()
	if _, err := db.Event(t.Context(), good.ID); err != nil {
		t.Errorf("good event lost: %v", err)
	}
	evs, err := db.ListEvents(t.Context(), EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Reason == "bad" {
			t.Errorf("failed write left its row behind: %+v", e)
		}
	}
}

func testEventsAndSteps(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	e := &Event{Status: StatusAccepted, Kind: KindMessage, MessageID: 7, AccountID: 1, ConversationID: 42}
	if err := db.Write(ctx, func(tx *Tx) error { return tx.InsertEvent(e) }); err != nil {
		t.Fatal(err)
	}
	err := db.Write(ctx, func(tx *Tx) error {
		seen, err := tx.SeenMessage(7)
		if err != nil || !seen {
			t.Errorf("SeenMessage(7) = %v, %v", seen, err)
		}
		seen, _ = tx.SeenMessage(8)
		if seen {
			t.Error("SeenMessage(8) = true")
		}
		for _, s := range []string{"answer", "handoff_note", "answer"} {
			if err := tx.UpdateEvent(e.ID, EventUpdate{AddStep: s}); err != nil {
				return err
			}
		}
		if err := tx.AddHop(Hop{EventID: e.ID, Stage: "a", Outcome: "x"}); err != nil {
			return err
		}
		return tx.AddHop(Hop{EventID: e.ID, Stage: "b", Outcome: "y", Duration: 1500 * time.Microsecond})
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.Event(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Steps != "answer,handoff_note" || !got.HasStep("handoff_note") || got.HasStep("handoff") {
		t.Errorf("steps = %q", got.Steps)
	}
	hops, err := db.Hops(ctx, e.ID)
	if err != nil || len(hops) != 2 || hops[0].Stage != "a" || hops[1].Seq != 2 || hops[1].Duration != 1500*time.Microsecond {
		t.Errorf("hops = %+v, %v", hops, err)
	}
	if err := db.Write(ctx, func(tx *Tx) error { return tx.UpdateEvent(e.ID, EventUpdate{Status: StatusWorking}) }); err != nil {
		t.Fatal(err)
	}
	if db.Shared() {
		// Left by a process that is gone: its lease ran out.
		if _, err := db.Reader().ExecContext(ctx, "UPDATE events SET lease_owner = 'gone', lease_until = 0 WHERE id = ?", e.ID); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := db.ResetWorking(ctx); err != nil || n != 1 {
		t.Errorf("ResetWorking = %d, %v", n, err)
	}
	open, err := db.OpenEvents(ctx, 0, 10)
	if err != nil || len(open) != 1 || open[0].Status != StatusAccepted {
		t.Errorf("open = %+v, %v", open, err)
	}
	if err := db.Write(ctx, func(tx *Tx) error { return tx.UpdateEvent(999, EventUpdate{Status: StatusFailed}) }); !errors.Is(err, ErrNotFound) {
		t.Errorf("update of missing event: %v", err)
	}
}

func testRetentionDeletesOnlyOldIgnored(t *testing.T, b backend) {
	db := b.open(t)
	ctx := context.Background()
	old := time.Now().Add(-200 * time.Hour)
	var ids []int64
	for _, st := range []string{StatusIgnored, StatusRejected, StatusAnswered, StatusFailed} {
		e := &Event{Status: st, ReceivedAt: old}
		if err := db.Write(ctx, func(tx *Tx) error { return tx.InsertEvent(e) }); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	recent := &Event{Status: StatusIgnored}
	if err := db.Write(ctx, func(tx *Tx) error { return tx.InsertEvent(recent) }); err != nil {
		t.Fatal(err)
	}
	n, err := db.DeleteIgnoredBefore(ctx, time.Now().Add(-168*time.Hour), 100)
	if err != nil || n != 2 {
		t.Fatalf("deleted %d, %v; want 2", n, err)
	}
	for i, id := range ids {
		_, err := db.Event(ctx, id)
		if gone := errors.Is(err, ErrNotFound); gone != (i < 2) {
			t.Errorf("event %d gone=%v", id, gone)
		}
	}
	if _, err := db.Event(ctx, recent.ID); err != nil {
		t.Errorf("recent ignored event deleted: %v", err)
	}
}

func testConversations(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	err := db.Write(ctx, func(tx *Tx) error {
		if err := tx.TouchConversation(1, 42, 3, 12, "pending", time.Unix(100, 0), true); err != nil {
			return err
		}
		if err := tx.MapDify(1, 42, 5, "dify-conv"); err != nil {
			return err
		}
		return tx.SetConversationState(1, 42, StateHuman, "agent replied")
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := db.Conversation(ctx, 1, 42)
	if err != nil {
		t.Fatal(err)
	}
	if c.DifyConversationID != "dify-conv" || c.RouteID != 5 || c.State != StateHuman || c.Handoffs != 1 || c.MessagesIn != 1 || c.Status != "pending" {
		t.Errorf("conversation = %+v", c)
	}
	if err := db.ResetConversation(ctx, 42); err != nil {
		t.Fatal(err)
	}
	c, _ = db.Conversation(ctx, 1, 42)
	if c.DifyConversationID != "" {
		t.Errorf("reset left %q", c.DifyConversationID)
	}
	if err := db.ResetConversation(ctx, 99); !errors.Is(err, ErrNotFound) {
		t.Errorf("reset unknown: %v", err)
	}
	list, err := db.ListConversations(ctx, ConversationFilter{State: StateBot})
	if err != nil || len(list) != 0 {
		t.Errorf("bot conversations = %+v, %v", list, err)
	}
}

func testRoutes(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	team := int64(2)
	r := &Route{InboxID: 3, Name: "support", DifyKey: "app-1", Inputs: map[string]string{"n": "{contact.name}"},
		Keywords: []string{}, HandoffTeam: &team, Enabled: true}
	if err := db.AddRoute(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := db.AddRoute(ctx, &Route{InboxID: 3, DifyKey: "app-2"}); !errors.Is(err, ErrDuplicateInbox) {
		t.Errorf("second route on inbox 3: %v", err)
	}
	got, err := db.Route(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Mode != ModeAuto || got.Inputs["n"] != "{contact.name}" || got.Keywords == nil || len(got.Keywords) != 0 ||
		got.HandoffTeam == nil || *got.HandoffTeam != 2 || got.HandoffLabels != nil {
		t.Errorf("route = %+v", got)
	}
	if err := db.SetRouteEnabled(ctx, r.ID, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Route(ctx, r.ID); got.Enabled {
		t.Error("still enabled")
	}
	if err := db.RemoveRoute(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.RemoveRoute(ctx, r.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
}

func BenchmarkAppend(b *testing.B) {
	db, err := Open(context.Background(), filepath.Join(b.TempDir(), "bridge.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	payload := make([]byte, 3000)
	b.Run("Single", func(b *testing.B) {
		for b.Loop() {
			e := &Event{Status: StatusAccepted, Payload: payload}
			if err := db.Write(context.Background(), func(tx *Tx) error { return tx.InsertEvent(e) }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Concurrent", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				e := &Event{Status: StatusAccepted, Payload: payload}
				if err := db.Write(context.Background(), func(tx *Tx) error { return tx.InsertEvent(e) }); err != nil {
					b.Error(err)
				}
			}
		})
		c, w := db.Commits()
		b.ReportMetric(float64(w)/float64(c), "writes/commit")
	})
}

// TestStatusSnapshots: Chatwoot's payloads are snapshots delivered out of
// order, a retry resending an old one; a status is replaced only by one
// from a snapshot that is not older.
func testStatusSnapshots(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	t0 := time.Unix(1_800_000_000, 0)
	steps := []struct {
		status string
		at     time.Time
		set    bool // through SetStatus, as bridge records what it did itself
		want   string
	}{
		{"pending", t0, false, "pending"},
		{"open", t0.Add(2 * time.Second), true, "open"},
		{"pending", t0.Add(time.Second), false, "open"},          // built before bridge opened it
		{"pending", t0, false, "open"},                           // a redelivery of the first
		{"resolved", t0.Add(3 * time.Second), false, "resolved"}, // newer news
		{"pending", t0.Add(3 * time.Second), false, "pending"},   // same instant: the later delivery wins
		{"", t0.Add(time.Hour), false, "pending"},                // no status says nothing
		{"open", time.Time{}, false, "pending"},                  // a snapshot without a time cannot replace a dated one
	}
	for i, st := range steps {
		err := db.Write(ctx, func(tx *Tx) error {
			if st.set {
				return tx.SetStatus(1, 7, st.status, st.at)
			}
			return tx.TouchConversation(1, 7, 3, 12, st.status, st.at, false)
		})
		if err != nil {
			t.Fatal(err)
		}
		c, err := db.Conversation(ctx, 1, 7)
		if err != nil {
			t.Fatal(err)
		}
		if c.Status != st.want {
			t.Errorf("step %d (%s at %v): status %q, want %q", i, st.status, st.at, c.Status, st.want)
		}
	}
}

func testIntents(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	in := Intent{EventID: 5, Step: "answer", AccountID: 1, ConversationID: 9, Content: "Your order\\\nshipped. "}
	if err := db.Write(ctx, func(tx *Tx) error { return tx.AddIntent(in) }); err != nil {
		t.Fatal(err)
	}
	got, ok, err := db.Intent(ctx, 5, "answer")
	if err != nil || !ok || got.MessageID != 0 || got.Content != in.Content {
		t.Fatalf("intent = %+v %v %v", got, ok, err)
	}
	match := func(account, conv int64, content string, private bool) (Intent, bool) {
		var m Intent
		var ok bool
		if err := db.Write(ctx, func(tx *Tx) (err error) {
			m, ok, err = tx.MatchIntent(account, conv, ContentHash(content, private))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return m, ok
	}
	// Chatwoot's webhook turns a backslash before a newline into a newline.
	if m, ok := match(1, 9, "Your order\nshipped.", false); !ok || m.EventID != 5 || m.Step != "answer" {
		t.Errorf("echo not matched: %+v %v", m, ok)
	}
	for _, miss := range []struct {
		account, conv int64
		content       string
		private       bool
	}{{1, 9, "Your order\nshipped.", true}, {1, 8, "Your order\nshipped.", false}, {2, 9, "Your order\nshipped.", false}, {1, 9, "Your order", false}} {
		if _, ok := match(miss.account, miss.conv, miss.content, miss.private); ok {
			t.Errorf("matched %+v", miss)
		}
	}
	if err := db.Write(ctx, func(tx *Tx) error { return tx.ResolveIntent(5, "answer", 1234) }); err != nil {
		t.Fatal(err)
	}
	if _, ok := match(1, 9, "Your order\nshipped.", false); ok {
		t.Error("a resolved intent matched again")
	}
	got, _, _ = db.Intent(ctx, 5, "answer")
	if got.MessageID != 1234 {
		t.Errorf("resolved intent = %+v", got)
	}
	// A new intent of the same step (after a forced replay cleared the
	// step) replaces the old one and is open again.
	if err := db.Write(ctx, func(tx *Tx) error {
		return tx.AddIntent(Intent{EventID: 5, Step: "answer", AccountID: 1, ConversationID: 9, Content: "other"})
	}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ = db.Intent(ctx, 5, "answer"); got.Content != "other" || got.MessageID != 0 {
		t.Errorf("replaced intent = %+v", got)
	}
	if _, ok := match(1, 9, "other", false); !ok {
		t.Error("the new intent does not match its echo")
	}
}

func testRichMessageTables(t *testing.T, b backend) {
	ctx := t.Context()
	db := b.open(t)
	r := &Route{InboxID: 4, DifyKey: "app-x", Enabled: true, Options: RouteOptions{Transfer: "upload", Format: "whatsapp", VoiceFallback: "handoff"}}
	if err := db.AddRoute(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, err := db.Route(ctx, r.ID)
	if err != nil || got.Options != r.Options {
		t.Fatalf("options %+v %v", got.Options, err)
	}
	var ev Event
	err = db.Write(ctx, func(tx *Tx) error {
		ev = Event{Event: "message_created", Kind: KindMessage, Status: StatusAccepted, MessageID: 900}
		if err := tx.InsertEvent(&ev); err != nil {
			return err
		}
		if id, ok, err := tx.OpenMessageEvent(900); err != nil || !ok || id != ev.ID {
			return fmt.Errorf("open event %d %v %v", id, ok, err)
		}
		if _, ok, err := tx.OpenMessageEvent(901); err != nil || ok {
			return fmt.Errorf("no event for 901: %v %v", ok, err)
		}
		if err := tx.SetTranscript(900, "hello"); err != nil {
			return err
		}
		if err := tx.SavePlan(ev.ID, []byte(`[{"step":"answer"}]`)); err != nil {
			return err
		}
		if err := tx.RecordPosted(5001, ev.ID, "answer_2"); err != nil {
			return err
		}
		return tx.RecordAnswer(Answer{AccountID: 1, ConversationID: 2, EventID: ev.ID, RouteID: r.ID, DifyMessageID: "m1", DifyUser: "u"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if text, ok, err := db.Transcript(ctx, 900); err != nil || !ok || text != "hello" {
		t.Errorf("transcript %q %v %v", text, ok, err)
	}
	if plan, ok, err := db.Plan(ctx, ev.ID); err != nil || !ok || string(plan) != `[{"step":"answer"}]` {
		t.Errorf("plan %s %v %v", plan, ok, err)
	}
	if id, step, ok, err := db.PostedBy(ctx, 5001); err != nil || !ok || id != ev.ID || step != "answer_2" {
		t.Errorf("posted by %d %q %v %v", id, step, ok, err)
	}
	if a, ok, err := db.LastAnswer(ctx, 1, 2); err != nil || !ok || a.DifyMessageID != "m1" || a.RouteID != r.ID {
		t.Errorf("answer %+v %v %v", a, ok, err)
	}
	if _, ok, err := db.LastAnswer(ctx, 1, 3); err != nil || ok {
		t.Errorf("no answer: %v %v", ok, err)
	}
}
