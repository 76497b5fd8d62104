package store

import (
	"testing"
	"time"
)

func testConversationTrace(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	// Conversation 5 of account 1 gets two acted-on events and an ignored
	// one; the same display id in account 2, and conversation 6, get events
	// that must not show.
	type ev struct {
		account, conv int64
		status        string
	}
	var ids []int64
	for _, x := range []ev{{1, 5, StatusAnswered}, {1, 5, StatusIgnored}, {2, 5, StatusAnswered}, {1, 6, StatusAnswered}, {1, 5, StatusHandedOff}} {
		err := db.Write(ctx, func(tx *Tx) error {
			e := &Event{Event: "message_created", Kind: KindMessage, AccountID: x.account, ConversationID: x.conv, Status: x.status}
			if err := tx.InsertEvent(e); err != nil {
				return err
			}
			ids = append(ids, e.ID)
			for i := range 2 {
				if err := tx.AddHop(Hop{EventID: e.ID, Stage: "s", Outcome: x.status, Detail: string(rune('a' + i)), Duration: 1500 * time.Microsecond}); err != nil {
					return err
				}
			}
			return tx.AddIntent(Intent{EventID: e.ID, Step: "answer", AccountID: x.account, ConversationID: x.conv, Content: "answer " + x.status})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Write(ctx, func(tx *Tx) error { return tx.ResolveIntent(ids[0], "answer", 1001) }); err != nil {
		t.Fatal(err)
	}

	got, err := db.ConversationTrace(ctx, 1, 5, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != ids[4] || got[1].ID != ids[0] {
		t.Fatalf("events = %v, want %d then %d (newest first, acted-on, this account only)", traceIDs(got), ids[4], ids[0])
	}
	for _, te := range got {
		if len(te.Hops) != 2 || te.Hops[0].Seq != 1 || te.Hops[1].Detail != "b" || te.Hops[0].Outcome != te.Status {
			t.Errorf("event %d hops = %+v", te.ID, te.Hops)
		}
		if te.Hops[0].Duration != 1500*time.Microsecond {
			t.Errorf("hop duration = %v, want 1.5ms", te.Hops[0].Duration)
		}
		if len(te.Posts) != 1 || te.Posts[0].Content != "answer "+te.Status {
			t.Errorf("event %d posts = %+v", te.ID, te.Posts)
		}
	}
	if got[1].Posts[0].MessageID != 1001 || got[0].Posts[0].MessageID != 0 {
		t.Errorf("post message ids = %d, %d; want 0 (in doubt) and 1001", got[0].Posts[0].MessageID, got[1].Posts[0].MessageID)
	}

	got, err = db.ConversationTrace(ctx, 1, 5, 1)
	if err != nil || len(got) != 1 || got[0].ID != ids[4] || len(got[0].Hops) != 2 {
		t.Errorf("limit 1: %v, %v", traceIDs(got), err)
	}
	got, err = db.ConversationTrace(ctx, 3, 5, 10)
	if err != nil || len(got) != 0 {
		t.Errorf("unknown account: %v, %v", traceIDs(got), err)
	}
}

func testConversationMessages(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	add := func(name, status string, conv int64) int64 {
		t.Helper()
		var id int64
		if err := db.Write(ctx, func(tx *Tx) error {
			e := &Event{Event: name, AccountID: 1, ConversationID: conv, Status: status, Payload: []byte(`{}`)}
			err := tx.InsertEvent(e)
			id = e.ID
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	first := add("message_created", StatusAnswered, 5)
	second := add("message_created", StatusIgnored, 5)
	add("message_created", StatusRejected, 5)
	add("conversation_status_changed", StatusIgnored, 5)
	add("message_created", StatusAnswered, 6)
	got, err := db.ConversationMessages(ctx, 1, 5, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != second || got[1].ID != first || string(got[0].Payload) != "{}" {
		t.Errorf("got %d events, want %d then %d with payloads", len(got), second, first)
	}
}

func traceIDs(ts []TracedEvent) []int64 {
	out := make([]int64, len(ts))
	for i := range ts {
		out[i] = ts[i].ID
	}
	return out
}
