package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// fillJournal gives db a bit of everything a journal holds, and returns
// the id of the event it leaves working.
func fillJournal(t *testing.T, db *DB, events int) int64 {
	t.Helper()
	ctx := t.Context()
	for inbox := int64(1); inbox <= 3; inbox++ {
		if err := db.AddRoute(ctx, &Route{InboxID: inbox, DifyKey: "app-x", Enabled: true, Keywords: []string{"human"}}); err != nil {
			t.Fatal(err)
		}
	}
	// Route 3 is removed: the journal still names it, its id is never reused.
	if err := db.RemoveRoute(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := db.SetRouteLifecycle(ctx, 1, `{"return":"idle"}`); err != nil {
		t.Fatal(err)
	}
	var working int64
	err := db.Write(ctx, func(tx *Tx) error {
		for i := range events {
			conv := int64(i%7 + 1)
			e := &Event{Event: "message_created", Kind: KindMessage, AccountID: 1, ConversationID: conv, MessageID: int64(1000 + i),
				RouteID: 3, Status: StatusAnswered, Text: fmt.Sprintf("question %d", i), Payload: []byte(`{"id":1}`),
				ReceivedAt: time.UnixMilli(1_800_000_000_000 + int64(i))}
			if i == events-1 {
				e.Status = StatusAccepted
			}
			if err := tx.InsertEvent(e); err != nil {
				return err
			}
			if err := tx.AddHop(Hop{EventID: e.ID, Stage: "decision", Outcome: "accepted", Duration: time.Millisecond}); err != nil {
				return err
			}
			if err := tx.TouchConversation(1, conv, 1, conv, "pending", time.Time{}, true); err != nil {
				return err
			}
			if err := tx.AddIntent(Intent{EventID: e.ID, Step: "answer", AccountID: 1, ConversationID: conv, Private: i%2 == 0, Content: "a"}); err != nil {
				return err
			}
			if err := tx.RecordPosted(int64(5000+i), e.ID, "answer"); err != nil {
				return err
			}
			if err := tx.SetTranscript(e.MessageID, "spoken"); err != nil {
				return err
			}
			if err := tx.SavePlan(e.ID, []byte(`[{"text":"a"}]`)); err != nil {
				return err
			}
			if err := tx.RecordAnswer(Answer{AccountID: 1, ConversationID: conv, EventID: e.ID, RouteID: 3, DifyMessageID: "m", DifyUser: "u"}); err != nil {
				return err
			}
			if err := tx.AddOwnership(Ownership{At: e.ReceivedAt, AccountID: 1, ConversationID: conv, RouteID: 3, Kind: OwnHandoff, Owner: StateHuman, Cause: "customer_asked"}); err != nil {
				return err
			}
			if err := tx.NoteHuman(1, conv, e.ReceivedAt); err != nil {
				return err
			}
			working = e.ID
		}
		return tx.Claim(working)
	})
	if err != nil {
		t.Fatal(err)
	}
	return working
}

func TestCopy(t *testing.T) {
	for _, b := range []backend{sqliteBackend, postgresBackend} {
		t.Run("sqlite to "+b.name, func(t *testing.T) {
			ctx := t.Context()
			src := sqliteBackend.open(t)
			working := fillJournal(t, src, 120)
			dstURL := b.database(t)
			dst, err := Open(ctx, dstURL)
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()

			// Interrupted after two batches, then run again: it goes on.
			cctx, cancel := context.WithCancel(ctx)
			batches := 0
			_, err = Copy(cctx, src, dst, CopyOptions{Batch: 25, Progress: func(CopyProgress) {
				if batches++; batches == 2 {
					cancel()
				}
			}})
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted copy: %v", err)
			}
			var progress []CopyProgress
			checks, err := Copy(ctx, src, dst, CopyOptions{Batch: 25, Progress: func(p CopyProgress) { progress = append(progress, p) }})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]int64{"routes": 2, "conversations": 7, "events": 120, "hops": 120, "posted": 120, "intents": 120,
				"transcripts": 120, "outbox": 120, "answers": 7, "route_lifecycle": 1, "ownership": 120, "conversation_lifecycle": 7}
			for _, c := range checks {
				if !c.Same || c.Source != want[c.Table] || c.Dest != want[c.Table] {
					t.Errorf("%s: %+v, want %d rows on both sides", c.Table, c, want[c.Table])
				}
				if c.Table == "routes" && c.Copied != 0 {
					t.Errorf("routes copied again after the interruption: %+v", c)
				}
			}
			if len(progress) == 0 || progress[len(progress)-1].Done != progress[len(progress)-1].Total {
				t.Errorf("progress %+v", progress)
			}
			// Idempotent: a third run copies nothing and changes nothing.
			checks, err = Copy(ctx, src, dst, CopyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range checks {
				if c.Copied != 0 || !c.Same {
					t.Errorf("third run: %+v", c)
				}
			}
			// The event the source's serve left working waits for the
			// destination's, and the rows read the same.
			if e, err := dst.Event(ctx, working); err != nil || e.Status != StatusAccepted || e.Text != "question 119" {
				t.Errorf("copied working event: %+v, %v", e, err)
			}
			in, ok, err := dst.Intent(ctx, working-1, "answer")
			if err != nil || !ok || !in.Private {
				t.Errorf("copied intent: %+v %v %v", in, ok, err)
			}
			if r, err := dst.Route(ctx, 1); err != nil || len(r.Keywords) != 1 {
				t.Errorf("copied route: %+v, %v", r, err)
			}
			// New ids come after the copied ones, removed route 3 included.
			r := &Route{InboxID: 9, DifyKey: "app-y"}
			if err := dst.AddRoute(ctx, r); err != nil || r.ID != 4 {
				t.Errorf("new route id %d, %v; want 4", r.ID, err)
			}
			e := &Event{Status: StatusIgnored}
			if err := dst.Write(ctx, func(tx *Tx) error { return tx.InsertEvent(e) }); err != nil || e.ID != 121 {
				t.Errorf("new event id %d, %v; want 121", e.ID, err)
			}

			// The source changed behind the copy (its serve still ran):
			// the table is copied again.
			if err := src.Write(ctx, func(tx *Tx) error { return tx.UpdateEvent(3, EventUpdate{Status: StatusFailed}) }); err != nil {
				t.Fatal(err)
			}
			if _, err := dst.Reader().ExecContext(ctx, "DELETE FROM events WHERE id = 121"); err != nil {
				t.Fatal(err)
			}
			if _, err := Copy(ctx, src, dst, CopyOptions{}); err != nil {
				t.Fatal(err)
			}
			if e, _ := dst.Event(ctx, 3); e.Status != StatusFailed {
				t.Errorf("changed event copied as %s, want failed", e.Status)
			}
		})
	}
}

// TestCopyRefusesAForeignJournal: a destination a serve already wrote to
// is not overwritten.
func TestCopyRefusesAForeignJournal(t *testing.T) {
	src := sqliteBackend.open(t)
	fillJournal(t, src, 10)
	dst, err := Open(t.Context(), filepath.Join(t.TempDir(), "other.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.Write(t.Context(), func(tx *Tx) error { return tx.InsertEvent(&Event{Status: StatusIgnored, MessageID: 77}) }); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(t.Context(), src, dst, CopyOptions{}); !errors.Is(err, ErrForeignJournal) {
		t.Fatalf("copy onto another journal: %v, want ErrForeignJournal", err)
	}
}
