package store

import (
	"strings"
	"testing"
	"time"
)

func testOwnershipJournal(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	err := db.Write(ctx, func(tx *Tx) error {
		if err := tx.AddOwnership(Ownership{At: t0, AccountID: 1, ConversationID: 5, RouteID: 1, Kind: OwnHandoff, Owner: StateHuman, Cause: "customer_asked"}); err != nil {
			return err
		}
		return tx.AddOwnership(Ownership{At: t0.Add(time.Hour), AccountID: 1, ConversationID: 5, RouteID: 1, Kind: OwnReturn, Owner: StateBot, Cause: "idle 30m0s"})
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.OwnershipOf(ctx, 1, 5, 10)
	if err != nil || len(got) != 2 || got[0].Kind != OwnHandoff || got[1].Cause != "idle 30m0s" || !got[1].At.Equal(t0.Add(time.Hour)) {
		t.Fatalf("journal %+v %v", got, err)
	}
	if last, _ := db.OwnershipOf(ctx, 1, 5, 1); len(last) != 1 || last[0].Kind != OwnReturn {
		t.Fatalf("limit keeps the newest: %+v", last)
	}
}

func testConvLifecycle(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	err := db.Write(ctx, func(tx *Tx) error {
		if err := tx.NoteHuman(1, 5, t0.Add(time.Minute)); err != nil {
			return err
		}
		if err := tx.NoteHuman(1, 5, t0); err != nil { // older: ignored
			return err
		}
		if err := tx.SetHandoffCause(1, 5, "ai_requested"); err != nil {
			return err
		}
		return tx.SetEpisodeSummary(1, 5, "customer wants a refund")
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := db.ConvLifecycleOf(ctx, 1, 5)
	if err != nil || !c.LastHumanAt.Equal(t0.Add(time.Minute)) || c.HandoffCause != "ai_requested" || c.Summary != "customer wants a refund" {
		t.Fatalf("%+v %v", c, err)
	}
	if c, err := db.ConvLifecycleOf(ctx, 1, 6); err != nil || !c.LastHumanAt.IsZero() {
		t.Fatalf("unknown conversation: %+v %v", c, err)
	}
}

func testIdleHuman(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return t0 }
	err := db.Write(ctx, func(tx *Tx) error {
		for _, c := range []int64{1, 2, 3} {
			if err := tx.TouchConversation(1, c, 4, 0, "open", t0, true); err != nil {
				return err
			}
			if err := tx.SetConversationState(1, c, StateHuman, "handoff"); err != nil {
				return err
			}
		}
		return tx.NoteHuman(1, 2, t0.Add(20*time.Minute)) // an agent wrote in 2 later
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Write(ctx, func(tx *Tx) error { return tx.SetConversationState(1, 3, StateBot, "given back") }); err != nil {
		t.Fatal(err)
	}
	got, err := db.IdleHuman(ctx, 4, t0.Add(10*time.Minute))
	if err != nil || len(got) != 1 || got[0].ConversationID != 1 {
		t.Fatalf("idle %+v %v", got, err)
	}
	if got, _ := db.IdleHuman(ctx, 9, t0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("another inbox: %+v", got)
	}
}

func testRouteLifecycleSettings(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	r := &Route{InboxID: 3, DifyKey: "app-x", Enabled: true}
	if err := db.AddRoute(ctx, r); err != nil {
		t.Fatal(err)
	}
	if s, err := db.RouteLifecycle(ctx, r.ID); err != nil || s != "" {
		t.Fatalf("none yet: %q %v", s, err)
	}
	if err := db.SetRouteLifecycle(ctx, r.ID, `{"return":"never"}`); err != nil {
		t.Fatal(err)
	}
	if err := db.SetRouteLifecycle(ctx, r.ID, `{"return":"giveback"}`); err != nil {
		t.Fatal(err)
	}
	if s, _ := db.RouteLifecycle(ctx, r.ID); s != `{"return":"giveback"}` {
		t.Fatalf("got %q", s)
	}
	all, err := db.RouteLifecycles(ctx)
	if err != nil || len(all) != 1 || all[r.ID] == "" {
		t.Fatalf("%v %v", all, err)
	}
	if err := db.SetRouteLifecycle(ctx, 99, "{}"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown route: %v", err)
	}
}

func testStats(t *testing.T, b backend) {
	db := b.open(t)
	ctx := t.Context()
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) int64 { return t0.Add(d).UnixMilli() }
	err := db.Write(ctx, func(tx *Tx) error {
		// ev journals a finished message; one that finished later than it
		// came posted its answer, as Chatwoot message 100+id, at fin.
		ev := func(id, route, conv int64, status string, rec, fin time.Duration) error {
			posted := int64(0)
			if fin > rec {
				posted = 100 + id
				if err := tx.RecordPosted(posted, id, "answer"); err != nil {
					return err
				}
				if _, err := tx.Exec("UPDATE posted SET at = ? WHERE message_id = ?", at(fin), posted); err != nil {
					return err
				}
			}
			_, err := tx.Exec(`INSERT INTO events (id, received_at, event, kind, account_id, conversation_id, route_id, status, updated_at, finished_at, posted_message_id)
				VALUES (?, ?, 'message_created', 'message', 1, ?, ?, ?, ?, ?, ?)`, id, at(rec), conv, route, status, at(fin), at(fin), posted)
			return err
		}
		// Route 1: conversations 10 and 11; four answers of 1, 2, 3 and 10 s.
		for i, lat := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 10 * time.Second} {
			conv := int64(10 + i%2)
			if err := ev(int64(i+1), 1, conv, StatusAnswered, time.Duration(i)*time.Minute, time.Duration(i)*time.Minute+lat); err != nil {
				return err
			}
			if err := tx.AddHop(Hop{EventID: int64(i + 1), Stage: "dify", Outcome: "answer", Detail: "12 chars, 3 events, 100 tokens"}); err != nil {
				return err
			}
		}
		if err := ev(5, 1, 11, StatusHandedOff, 5*time.Minute, 5*time.Minute); err != nil {
			return err
		}
		// An answer the AI followed with its handoff marker: posted after
		// 5 s, handed off a while later.
		if err := ev(8, 1, 12, StatusHandedOff, 6*time.Minute-5*time.Second, 6*time.Minute); err != nil {
			return err
		}
		if _, err := tx.Exec("UPDATE events SET finished_at = ? WHERE id = 8", at(6*time.Minute+time.Minute)); err != nil {
			return err
		}
		// Route 2: one conversation, before the window too.
		if err := ev(6, 2, 20, StatusAnswered, time.Hour, time.Hour+time.Second); err != nil {
			return err
		}
		if err := ev(7, 2, 21, StatusAnswered, -48*time.Hour, -48*time.Hour+time.Second); err != nil {
			return err
		}
		own := []Ownership{
			{At: t0.Add(5 * time.Minute), ConversationID: 11, RouteID: 1, Kind: OwnHandoff, Owner: StateHuman, Cause: "customer_asked"},
			{At: t0.Add(6 * time.Minute), ConversationID: 12, RouteID: 1, Kind: OwnHandoff, Owner: StateHuman, Cause: "ai_failed"},
			{At: t0.Add(7 * time.Minute), ConversationID: 13, RouteID: 1, Kind: OwnHandoff, Owner: StateHuman, Cause: "customer_asked"},
			{At: t0.Add(8 * time.Minute), ConversationID: 11, RouteID: 1, Kind: OwnReturn, Owner: StateBot, Cause: "status pending"},
			{At: t0.Add(9 * time.Minute), ConversationID: 10, RouteID: 1, Kind: OwnResolved, Owner: StateBot},
			{At: t0.Add(10 * time.Minute), ConversationID: 12, RouteID: 1, Kind: OwnResolved, Owner: StateHuman},
			{At: t0.Add(3 * time.Hour), ConversationID: 10, RouteID: 1, Kind: OwnReopened, Owner: StateBot},
			{At: t0.Add(30 * time.Hour), ConversationID: 12, RouteID: 1, Kind: OwnReopened, Owner: StateHuman}, // after 24 h
			{At: t0.Add(time.Hour), ConversationID: 20, RouteID: 2, Kind: OwnTakeover, Owner: StateHuman, Cause: "agent replied"},
		}
		for _, o := range own {
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
	got, err := db.Stats(ctx, t0.Add(-time.Hour), t0.Add(48*time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("routes %+v", got)
	}
	r1, r2 := got[0], got[1]
	if r1.Handled != 3 || r1.Answered != 5 || r1.Tokens != 400 || r1.LatencyP50 != 3 || r1.LatencyP95 != 10 {
		t.Errorf("route 1 turns: %+v", r1)
	}
	if r1.HandedOff() != 3 || r1.Handoffs["customer_asked"] != 2 || r1.Handoffs["ai_failed"] != 1 ||
		r1.ReturnedTotal() != 1 || r1.Resolved != 2 || r1.ResolvedByBot != 1 || r1.Reopened24h != 1 {
		t.Errorf("route 1 outcomes: %+v", r1)
	}
	if r2.Handled != 1 || r2.Takeovers != 1 || r2.Answered != 1 {
		t.Errorf("route 2: %+v", r2)
	}
	only2, err := db.Stats(ctx, t0.Add(-72*time.Hour), t0.Add(48*time.Hour), 2)
	if err != nil || len(only2) != 1 || only2[0].RouteID != 2 || only2[0].Handled != 2 {
		t.Fatalf("route filter: %+v %v", only2, err)
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if percentile(xs, 0.5) != 3 || percentile(xs, 0.95) != 5 || percentile(nil, 0.5) != 0 || percentile([]float64{7}, 0.95) != 7 {
		t.Fatal("nearest-rank percentile")
	}
	if xs[0] != 5 {
		t.Fatal("percentile sorted its input")
	}
}
