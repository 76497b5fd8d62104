package store

import (
	"strings"
	"testing"
	"time"
)

// testIngestView: the reads a webhook's decision makes, in one round trip
// on PostgreSQL, say what the separate reads say.
func testIngestView(t *testing.T, b backend) {
	db := b.open(t)
	view := func(conv, msg int64) IngestView {
		t.Helper()
		var v IngestView
		if err := db.Write(t.Context(), func(tx *Tx) (err error) { v, err = tx.IngestView(1, conv, msg); return err }); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := view(40, 500); v.Known || v.Posted || v.Seen || v.Conv.State != StateBot || v.Conv.ConversationID != 40 {
		t.Fatalf("unknown conversation: %+v", v)
	}
	err := db.Write(t.Context(), func(tx *Tx) error {
		if err := tx.TouchConversation(1, 40, 3, 4, "pending", time.Time{}, true); err != nil {
			return err
		}
		if err := tx.InsertEvent(&Event{Status: StatusAccepted, Kind: KindMessage, AccountID: 1, ConversationID: 40, MessageID: 500}); err != nil {
			return err
		}
		return tx.RecordPosted(501, 0, "answer")
	})
	if err != nil {
		t.Fatal(err)
	}
	v := view(40, 500)
	if !v.Known || !v.Seen || v.Posted || v.Conv.InboxID != 3 || v.Conv.MessagesIn != 1 {
		t.Fatalf("message 500: %+v", v)
	}
	if v := view(40, 501); !v.Known || v.Seen || !v.Posted {
		t.Fatalf("bridge's own message 501: %+v", v)
	}
	if v := view(40, 0); !v.Known || v.Seen || v.Posted {
		t.Fatalf("no message: %+v", v)
	}
}

// testLaterFailureFailsWrite: a statement sent later that fails fails its
// write, whose other changes are undone, and names what failed.
func testLaterFailureFailsWrite(t *testing.T, b backend) {
	db := b.open(t)
	err := db.Write(t.Context(), func(tx *Tx) error {
		if err := tx.TouchConversation(1, 41, 3, 4, "pending", time.Time{}, true); err != nil {
			return err
		}
		// A unique key taken twice: the second fails when it runs.
		tx.Later("first record", "INSERT INTO posted (message_id, event_id, step, at) VALUES (?, ?, ?, ?)", 7, 0, "a", 0)
		tx.Later("break on purpose", "INSERT INTO posted (message_id, event_id, step, at) VALUES (?, ?, ?, ?)", 7, 0, "b", 0)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "break on purpose") || !IsStorage(err) {
		t.Fatalf("write = %v, want the failure of the statement sent later", err)
	}
	if _, err := db.Conversation(t.Context(), 1, 41); err == nil {
		t.Fatal("the write's other change was kept")
	}
	// The connection is fit for the next write.
	if err := db.Write(t.Context(), func(tx *Tx) error {
		return tx.TouchConversation(1, 41, 3, 4, "pending", time.Time{}, true)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Conversation(t.Context(), 1, 41); err != nil {
		t.Fatal(err)
	}
}

// testIngestViewSeesTheWebhookBefore: two webhooks of one new conversation
// decided at once by two processes (the same message delivered twice): the
// second waits for the first's lock, then sees its event, so the message is
// a duplicate and not acted on twice.
func testIngestViewSeesTheWebhookBefore(t *testing.T, b backend) {
	var seen IngestView
	lockRace(t, b.open(t),
		func(tx *Tx) error { _, err := tx.IngestView(1, 78, 900); return err },
		func(tx *Tx) error {
			if err := tx.InsertEvent(&Event{Status: StatusAccepted, Kind: KindMessage, AccountID: 1, ConversationID: 78, MessageID: 900}); err != nil {
				return err
			}
			return tx.TouchConversation(1, 78, 3, 4, "pending", time.Time{}, true)
		},
		func(tx *Tx) (err error) { seen, err = tx.IngestView(1, 78, 900); return err })
	if !seen.Known || !seen.Seen || seen.Conv.MessagesIn != 1 {
		t.Errorf("the second write read %+v, not what the first committed", seen)
	}
}

// testWriters: the dispatcher lets as many workers write at once as the
// store can: SQLite's one writer, PostgreSQL's pool.
func testWriters(t *testing.T, b backend) {
	want, wantPool := 1, 1
	if b.name == "postgres" {
		want, wantPool = defaultPool, 4
	}
	if got := b.open(t).Writers(); got != want {
		t.Errorf("Writers() = %d, want %d", got, want)
	}
	if got := b.open(t, WithPool(4)).Writers(); got != wantPool {
		t.Errorf("Writers() with a pool of 4 = %d, want %d", got, wantPool)
	}
}

// testConnectionLostMidWrite: the server ends a write's connection between
// two of its round trips. Nothing of the attempt lands, the connection is
// dropped rather than handed to the next write, and the write is tried
// again on a fresh one.
func testConnectionLostMidWrite(t *testing.T, b backend) {
	db := b.open(t)
	attempts := 0
	err := db.Write(t.Context(), func(tx *Tx) error {
		attempts++
		var pid int
		if err := tx.QueryRow("SELECT pg_backend_pid()").Scan(&pid); err != nil {
			return err
		}
		if err := tx.TouchConversation(1, 42, 3, 4, "pending", time.Time{}, true); err != nil {
			return err
		}
		if attempts == 1 {
			var ok bool
			if err := db.Reader().QueryRow("SELECT pg_terminate_backend(?)", pid).Scan(&ok); err != nil || !ok {
				t.Errorf("terminate backend %d: %v %v", pid, ok, err)
			}
		}
		_, err := tx.Exec("UPDATE conversations SET messages_in = messages_in + 1 WHERE account_id = 1 AND conversation_id = 42")
		return err
	})
	if err != nil {
		t.Fatalf("write = %v after %d attempts", err, attempts)
	}
	if attempts != 2 {
		t.Errorf("%d attempts, want 2", attempts)
	}
	c, err := db.Conversation(t.Context(), 1, 42)
	if err != nil || c.MessagesIn != 2 {
		t.Fatalf("conversation = %+v, %v; want the second attempt's changes alone (2 messages)", c, err)
	}
	// Every connection left in the pool works, at the first try.
	retries := db.Retries()
	defer func() {
		if n := db.Retries() - retries; n != 0 {
			t.Errorf("%d writes were tried again: the broken connection went back to the pool", n)
		}
	}()
	for range 20 {
		if err := db.Write(t.Context(), func(tx *Tx) error {
			_, err := tx.Exec("UPDATE conversations SET answers = answers + 1 WHERE account_id = 1 AND conversation_id = 42")
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// testRecordPostLockOrder: the worker whose post returned and the webhook
// echoing that post record the same two rows at about the same moment.
// RecordPost takes the posted row first, so whichever comes second waits
// there, holding nothing the first needs. (When the echo resolved the
// intent first, the two could deadlock.)
func testRecordPostLockOrder(t *testing.T, b backend) {
	db := b.open(t)
	e := &Event{Status: StatusWorking, Kind: KindMessage, AccountID: 1, ConversationID: 50, MessageID: 800}
	if err := db.Write(t.Context(), func(tx *Tx) error {
		if err := tx.InsertEvent(e); err != nil {
			return err
		}
		return tx.AddIntent(Intent{EventID: e.ID, Step: "answer", AccountID: 1, ConversationID: 50, Content: "hi"})
	}); err != nil {
		t.Fatal(err)
	}
	retries := db.Retries()
	holding, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- db.Write(t.Context(), func(tx *Tx) error {
			if err := tx.RecordPost(900, e.ID, "answer"); err != nil {
				return err
			}
			if _, err := tx.Exec("SELECT 1"); err != nil { // sends them
				return err
			}
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	pid, second := make(chan int, 1), make(chan error, 1)
	go func() {
		second <- db.Write(t.Context(), func(tx *Tx) error {
			var p int
			if err := tx.QueryRow("SELECT pg_backend_pid()").Scan(&p); err != nil {
				return err
			}
			select {
			case pid <- p:
			default:
			}
			if err := tx.RecordPost(900, e.ID, "answer"); err != nil {
				return err
			}
			_, err := tx.Exec("SELECT 1")
			return err
		})
	}()
	p := <-pid
	var waitingOn string
	waitUntil(t, "the second write waits for the first", func() bool {
		err := db.Reader().QueryRow(`SELECT query FROM pg_stat_activity WHERE pid = ? AND wait_event_type = 'Lock'`, p).Scan(&waitingOn)
		return err == nil
	})
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(waitingOn, "INSERT INTO posted") {
		t.Errorf("the second write waited on %q, want the posted row (taken first)", waitingOn)
	}
	if n := db.Retries() - retries; n != 0 {
		t.Errorf("%d writes were tried again", n)
	}
	in, ok, err := db.Intent(t.Context(), e.ID, "answer")
	if err != nil || !ok || in.MessageID != 900 {
		t.Errorf("intent = %+v %v %v, want resolved with message 900", in, ok, err)
	}
}
