package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/store"
)

// webhookSeeds are the real-shaped webhook bodies of testdata/chatwoot and
// the captured ones of testdata/corpus/chatwoot.
func webhookSeeds(f *testing.F) [][]byte {
	f.Helper()
	var out [][]byte
	for _, dir := range []string{"../../testdata/chatwoot", "../../testdata/corpus/chatwoot"} {
		paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil {
			f.Fatal(err)
		}
		if len(paths) == 0 {
			f.Fatalf("no seeds in %s", dir)
		}
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			out = append(out, b)
		}
	}
	// Shapes the fixtures do not have.
	out = append(out,
		[]byte(`{"event":"message_created","id":5,"message_type":1,"source_id":"bridge:99999999999999999999:answer","account":{"id":1},"inbox":{"id":1},"conversation":{"id":1,"status":"pending"}}`),
		[]byte(`{"event":"message_created","id":6,"message_type":"incoming","content":"hi","account":{"id":1},"inbox":{"id":1},"conversation":{"id":2,"status":"x\"y"}}`),
		[]byte(`{"event":"conversation_status_changed","id":3,"status":"pending","messages":[{"account_id":1}],"inbox_id":1}`),
		[]byte(`{"event":"message_created","id":"7"}`),
		[]byte(`[]`),
	)
	return out
}

// fuzzInput builds Decide's input from one byte of flags: which route the
// inbox has, what bridge knows of the conversation, and the bot statuses.
func fuzzInput(ev *chatwoot.Event, flags uint8) Input {
	in := Input{Event: ev, Posted: flags&0x40 != 0, BotStatuses: []string{"pending"}}
	switch flags & 0x3 {
	case 1:
		in.Route = &store.Route{ID: 1, InboxID: ev.InboxID, Mode: store.ModeAuto, Enabled: true}
	case 2:
		in.Route = &store.Route{ID: 2, InboxID: ev.InboxID, Mode: store.ModeDraft, Enabled: true}
	case 3:
		in.Route = &store.Route{ID: 3, InboxID: ev.InboxID, Mode: store.ModeAuto, Enabled: false}
	}
	in.Conv.State = store.StateBot
	if flags&0x4 != 0 {
		in.Conv.State = store.StateHuman
	}
	in.Conv.Status = []string{"", "open", "pending", "resolved"}[flags>>3&0x3]
	if flags&0x20 != 0 {
		in.BotStatuses = []string{"pending", "open"}
	}
	return in
}

// FuzzWebhook checks webhook parsing and the decision on arbitrary bodies:
// no panic; a refusal is a *chatwoot.ParseError with a reason; a verdict
// either accepts with a kind or ignores with a known reason, whose metric
// label is bounded; an accepted message is an incoming customer message in
// a routed, enabled inbox, in a bot status, with something to answer; and a
// source id bridge would read as its own names an event id without
// overflow.
func FuzzWebhook(f *testing.F) {
	for _, b := range webhookSeeds(f) {
		for _, flags := range []uint8{0x01, 0x02, 0x03, 0x05, 0x11, 0x29, 0x41} {
			f.Add(b, flags)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, flags uint8) {
		ev, err := chatwoot.ParseEvent(body)
		if err != nil {
			var pe *chatwoot.ParseError
			if !errors.As(err, &pe) || pe.Reason == "" {
				t.Fatalf("refusal %v (%T) is not a ParseError with a reason", err, err)
			}
			if ev != nil {
				t.Fatal("an event together with an error")
			}
			return
		}
		if ev.Name == "" {
			t.Fatal("parsed an event without a name")
		}
		if ev.IsMessage() && (ev.AccountID == 0 || ev.InboxID == 0) {
			t.Fatalf("message event without account or inbox: %+v", ev)
		}
		in := fuzzInput(ev, flags)
		v := Decide(in)
		if v != Decide(in) {
			t.Fatal("Decide is not deterministic")
		}
		if v.Accept == (v.Reason != "") {
			t.Fatalf("verdict %+v: accepted with a reason, or ignored without one", v)
		}
		if !v.Accept {
			if v.Kind != "" {
				t.Fatalf("ignored with a kind: %+v", v)
			}
			if l := ignoredLabel(v.Reason); l == "other" {
				t.Fatalf("reason %q is not a known ignore reason", v.Reason)
			}
		}
		if v.Accept {
			if ev.Name != "message_created" || in.Route == nil || !in.Route.Enabled {
				t.Fatalf("accepted %s in an inbox with route %+v", ev.Name, in.Route)
			}
			switch v.Kind {
			case store.KindMessage:
				if ev.MessageType != "incoming" || ev.Private {
					t.Fatalf("accepted as a customer message: %+v", ev)
				}
				if ev.Sender != nil && ev.Sender.Type != chatwoot.SenderContact && ev.Sender.Type != "contact" {
					t.Fatalf("accepted a message of a %q", ev.Sender.Type)
				}
				if strings.TrimSpace(ev.Content) == "" && len(ev.Attachments) == 0 {
					t.Fatal("accepted an empty message")
				}
				status := ev.Conversation.Status
				draft := in.Route.Mode == store.ModeDraft
				if !slices.Contains(in.BotStatuses, status) && !(draft && (status == "open" || status == "pending")) {
					t.Fatalf("accepted in status %q", status)
				}
			case store.KindTakeover:
				if ev.MessageType == "incoming" || ev.Private || in.Posted || in.Route.Mode != store.ModeAuto {
					t.Fatalf("accepted as a takeover: %+v (route %+v)", ev, in.Route)
				}
			default:
				t.Fatalf("accepted with kind %q", v.Kind)
			}
		}
	})
}

// FuzzWebhookHandler posts arbitrary bodies through the webhook handler
// onto a real journal: the answer is always one of the statuses SPEC lists
// for junk or a journaled event (never a 500 on a healthy database), always
// a JSON ack, and every answer names the event it journaled.
func FuzzWebhookHandler(f *testing.F) {
	for _, b := range webhookSeeds(f) {
		f.Add(b)
	}
	f.Add(bytes.Repeat([]byte(" "), MaxBody+1))
	db, err := store.Open(f.Context(), filepath.Join(f.TempDir(), "bridge.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = db.Close() })
	for _, r := range []*store.Route{
		{InboxID: 1, Name: "auto", DifyKey: testDifyKey, Mode: store.ModeAuto, Enabled: true},
		{InboxID: 2, Name: "draft", DifyKey: testDifyKey, Mode: store.ModeDraft, Enabled: true},
		{InboxID: 3, Name: "off", DifyKey: testDifyKey, Mode: store.ModeAuto, Enabled: false},
	} {
		if err := db.AddRoute(f.Context(), r); err != nil {
			f.Fatal(err)
		}
	}
	core := New(Options{Store: db})
	h := core.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/webhooks/chatwoot", bytes.NewReader(body))
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, truncate(string(body), 200), rec.Body)
		}
		var a Ack
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
			t.Fatalf("answer %q is not a JSON ack: %v", rec.Body, err)
		}
		if a.EventID == 0 {
			t.Fatalf("answer %+v names no journaled event", a)
		}
		e, err := db.Event(t.Context(), a.EventID)
		if err != nil {
			t.Fatalf("event %d: %v", a.EventID, err)
		}
		want := map[string]string{"accepted": store.StatusAccepted, "ignored": store.StatusIgnored, "rejected": store.StatusRejected}[a.Status]
		if e.Status != want {
			t.Fatalf("answered %q, journaled %q", a.Status, e.Status)
		}
		if rec.Code != http.StatusOK && (a.Status != "rejected" || e.HTTPStatus != rec.Code) {
			t.Fatalf("answered %d %+v, journaled http %d", rec.Code, a, e.HTTPStatus)
		}
		if len(e.Payload) > MaxBody || (e.Status == store.StatusRejected && len(e.Payload) > rejectedPrefix) {
			t.Fatalf("journaled %d bytes of a %s body", len(e.Payload), e.Status)
		}
	})
}
