package bridge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/store"
)

func mustParse(t testing.TB, path string) *chatwoot.Event {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := chatwoot.ParseEvent(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return ev
}

// TestCorpusDecisions feeds every real Chatwoot body through the parser and
// the decision, with a route for the body's inbox.
func TestCorpusDecisions(t *testing.T) {
	want := map[string]string{
		"captured_conversation_status_changed_agentbot_whatsapp.json":  ReasonNotMessageCreated,
		"captured_conversation_status_changed_pending_webwidget.json":  ReasonNotMessageCreated,
		"captured_message_created_incoming_contact_webwidget.json":     "accept:message",
		"captured_message_created_incoming_contact_whatsapp.json":      "accept:message",
		"captured_message_created_template_sender_null_webwidget.json": ReasonOutgoing,
		"captured_webwidget_triggered_webwidget.json":                  ReasonNotMessageCreated,
		// The 2020 docs sample has string ids and no conversation.id: not a
		// shape any Chatwoot sends, refused with a reason.
		"docs_sample_message_created_legacy.json": "error:malformed json: field account.id",
		// REST responses are not webhooks.
		"rest_messages_create_response_contract_mock.json": "error:missing field: event",
		"rest_toggle_status_response_contract_mock.json":   "error:missing field: event",
	}
	files, err := filepath.Glob("../../testdata/corpus/chatwoot/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			exp, ok := want[name]
			if !ok {
				t.Fatalf("corpus file %s has no expected decision; add one", name)
			}
			body, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := chatwoot.ParseEvent(body)
			if after, isErr := strings.CutPrefix(exp, "error:"); isErr {
				if err == nil || !strings.HasPrefix(err.Error(), after) {
					t.Fatalf("parse error = %v, want prefix %q", err, after)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			route := &store.Route{ID: 1, InboxID: ev.InboxID, Enabled: true, Mode: store.ModeAuto}
			v := Decide(Input{Event: ev, Route: route, Conv: store.Conversation{State: store.StateBot}, BotStatuses: []string{"pending"}})
			got := v.Reason
			if v.Accept {
				got = "accept:" + v.Kind
			}
			if got != exp {
				t.Errorf("decision = %q, want %q", got, exp)
			}
			if v.Accept {
				// The same message without a route is ignored as no_route.
				v := Decide(Input{Event: ev, Conv: store.Conversation{State: store.StateBot}, BotStatuses: []string{"pending"}})
				if v.Reason != ReasonNoRoute {
					t.Errorf("without route: %q", v.Reason)
				}
				if ev.ContactID() == 0 || ev.AccountID == 0 || ev.Conversation.ID == 0 {
					t.Errorf("ids missing: contact %d account %d conversation %d", ev.ContactID(), ev.AccountID, ev.Conversation.ID)
				}
			}
		})
	}
}

func TestParseCorpusFields(t *testing.T) {
	ev := mustParse(t, "../../testdata/corpus/chatwoot/captured_message_created_incoming_contact_whatsapp.json")
	if ev.MessageID != 17547 || ev.Content != "hola" || ev.AccountID != 1 || ev.InboxID != 17 ||
		ev.Conversation.ID != 25 || ev.Conversation.Status != "pending" || ev.ContactID() != 89 ||
		ev.Sender == nil || ev.Sender.Type != "" || ev.Sender.Name != "Ariel Corte" {
		t.Errorf("parsed = %+v sender %+v", ev, ev.Sender)
	}
	st := mustParse(t, "../../testdata/corpus/chatwoot/captured_conversation_status_changed_pending_webwidget.json")
	if st.Conversation.ID != 150 || st.Conversation.Status != "pending" || st.AccountID != 1 || st.InboxID != 1 {
		t.Errorf("status event = %+v", st)
	}
}

func TestDecide(t *testing.T) {
	auto := &store.Route{ID: 1, InboxID: 1, Enabled: true, Mode: store.ModeAuto}
	draft := &store.Route{ID: 2, InboxID: 1, Enabled: true, Mode: store.ModeDraft}
	disabled := &store.Route{ID: 3, InboxID: 1, Enabled: false, Mode: store.ModeAuto}
	bot := store.Conversation{State: store.StateBot, Status: "pending"}
	human := store.Conversation{State: store.StateHuman, Status: "pending"}
	humanOpen := store.Conversation{State: store.StateHuman, Status: "open"}
	base := "../../testdata/corpus/chatwoot/captured_message_created_incoming_contact_webwidget.json"
	mod := func(f func(e *chatwoot.Event)) *chatwoot.Event {
		e := mustParse(t, base)
		f(e)
		return e
	}
	tests := []struct {
		name   string
		ev     *chatwoot.Event
		route  *store.Route
		conv   store.Conversation
		posted bool
		want   string
		back   bool
	}{
		{"accept", mod(func(*chatwoot.Event) {}), auto, bot, false, "accept:message", false},
		{"not_message_created", mod(func(e *chatwoot.Event) { e.Name = "message_updated" }), auto, bot, false, ReasonNotMessageCreated, false},
		{"outgoing template", mod(func(e *chatwoot.Event) { e.MessageType = "template"; e.Sender = nil }), auto, bot, false, ReasonOutgoing, false},
		{"own by sender type", mod(func(e *chatwoot.Event) {
			e.MessageType = "outgoing"
			e.Sender = &chatwoot.Sender{ID: 7, Type: "agent_bot"}
		}), auto, bot, false, ReasonOwnMessage, false},
		{"own by recorded id", mod(func(e *chatwoot.Event) {
			e.MessageType = "outgoing"
			e.Sender = &chatwoot.Sender{ID: 3, Type: "user"}
		}), auto, bot, true, ReasonOwnMessage, false},
		{"a source id proves nothing", mod(func(e *chatwoot.Event) {
			e.MessageType = "outgoing"
			e.Sender = &chatwoot.Sender{ID: 3, Type: "user"}
			e.SourceID = "bridge:12:answer"
		}), auto, bot, false, "accept:takeover", false},
		{"private incoming", mod(func(e *chatwoot.Event) { e.Private = true }), auto, bot, false, ReasonPrivate, false},
		{"private agent note", mod(func(e *chatwoot.Event) {
			e.MessageType = "outgoing"
			e.Private = true
			e.Sender = &chatwoot.Sender{ID: 3, Type: "user"}
		}), auto, bot, false, ReasonPrivate, false},
		{"not contact", mod(func(e *chatwoot.Event) { e.Sender = &chatwoot.Sender{ID: 3, Type: "captain_assistant"} }), auto, bot, false, ReasonNotContact, false},
		{"status open", mod(func(e *chatwoot.Event) { e.Conversation.Status = "open" }), auto, bot, false, "conversation_status:open", false},
		{"status resolved draft", mod(func(e *chatwoot.Event) { e.Conversation.Status = "resolved" }), draft, bot, false, "conversation_status:resolved", false},
		{"human owned", mod(func(*chatwoot.Event) {}), auto, human, false, ReasonHumanOwned, false},
		// A message_created saying pending is a snapshot: it may predate
		// the takeover (protocol notes, correction 3), so it never gives
		// the conversation back.
		{"message snapshot never returns to bot", mod(func(*chatwoot.Event) {}), auto, humanOpen, false, ReasonHumanOwned, false},
		{"stored newer status wins over a stale snapshot", mod(func(*chatwoot.Event) {}), auto,
			store.Conversation{State: store.StateBot, Status: "open", StatusAt: time.Now().Add(time.Hour)}, false, "conversation_status:open", false},
		{"newer snapshot wins over the stored status", mod(func(*chatwoot.Event) {}), auto,
			store.Conversation{State: store.StateBot, Status: "open", StatusAt: time.Unix(1, 0)}, false, "accept:message", false},
		{"empty", mod(func(e *chatwoot.Event) { e.Content = "  " }), auto, bot, false, ReasonEmpty, false},
		{"attachment only", mod(func(e *chatwoot.Event) {
			e.Content = ""
			e.Attachments = []chatwoot.Attachment{{ID: 1, FileType: "image"}}
		}), auto, bot, false, "accept:message", false},
		{"no route", mod(func(*chatwoot.Event) {}), nil, bot, false, ReasonNoRoute, false},
		{"disabled route", mod(func(*chatwoot.Event) {}), disabled, bot, false, ReasonDisabledRoute, false},
		{"takeover by agent", mod(func(e *chatwoot.Event) {
			e.MessageType = "outgoing"
			e.Sender = &chatwoot.Sender{ID: 3, Type: "user"}
		}), auto, bot, false, "accept:takeover", false},
		{"takeover by phone", mod(func(e *chatwoot.Event) { e.MessageType = "outgoing"; e.Sender = nil }), auto, bot, false, "accept:takeover", false},
		{"agent reply when already human", mod(func(e *chatwoot.Event) {
			e.MessageType = "outgoing"
			e.Sender = &chatwoot.Sender{ID: 3, Type: "user"}
		}), auto, human, false, ReasonOutgoing, false},
		{"agent reply in draft route", mod(func(e *chatwoot.Event) {
			e.MessageType = "outgoing"
			e.Sender = &chatwoot.Sender{ID: 3, Type: "user"}
		}), draft, bot, false, ReasonOutgoing, false},
		{"draft acts in open", mod(func(e *chatwoot.Event) { e.Conversation.Status = "open" }), draft, humanOpen, false, "accept:message", false},
		{"agent reply without route", mod(func(e *chatwoot.Event) {
			e.MessageType = "outgoing"
			e.Sender = &chatwoot.Sender{ID: 3, Type: "user"}
		}), nil, bot, false, ReasonOutgoing, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := Decide(Input{Event: tc.ev, Route: tc.route, Conv: tc.conv, Posted: tc.posted, BotStatuses: []string{"pending"}})
			got := v.Reason
			if v.Accept {
				got = "accept:" + v.Kind
			}
			if got != tc.want || v.ReturnToBot != tc.back {
				t.Errorf("got %q back=%v, want %q back=%v", got, v.ReturnToBot, tc.want, tc.back)
			}
		})
	}
	t.Run("status event returns conversation to the bot", func(t *testing.T) {
		ev := mustParse(t, "../../testdata/corpus/chatwoot/captured_conversation_status_changed_pending_webwidget.json")
		snap := ev.SnapshotAt()
		if snap.IsZero() {
			t.Fatal("the captured status change has no updated_at")
		}
		takenOver := humanOpen
		takenOver.StateAt, takenOver.StatusAt = snap.Add(-time.Minute), snap.Add(-time.Minute)
		v := Decide(Input{Event: ev, Route: auto, Conv: takenOver, BotStatuses: []string{"pending"}})
		if v.Accept || v.Reason != ReasonNotMessageCreated || !v.ReturnToBot {
			t.Errorf("verdict = %+v", v)
		}
		// A status change built before the takeover (a late job, or a
		// retry resending its snapshot) is old news.
		stale := humanOpen
		stale.StateAt = snap.Add(time.Minute)
		if v := Decide(Input{Event: ev, Route: auto, Conv: stale, BotStatuses: []string{"pending"}}); v.ReturnToBot {
			t.Error("a status change older than the takeover returned the conversation to the bot")
		}
		ev.Conversation.Status = "open"
		if v := Decide(Input{Event: ev, Route: auto, Conv: takenOver, BotStatuses: []string{"pending"}}); v.ReturnToBot {
			t.Error("a change into open returned the conversation to the bot")
		}
	})
}

func TestMatchKeyword(t *testing.T) {
	kws := []string{"human", "agent", "operator", "real person"}
	tests := []struct{ text, want string }{
		{"I want a HUMAN please", "human"},
		{"Can I talk to a real   person?", "real person"},
		{"human!", "human"},
		{"humanity is great", ""},
		{"my agentic workflow", ""},
		{"real personal data", ""},
		{"", ""},
	}
	for _, tc := range tests {
		if got := MatchKeyword(tc.text, kws); got != tc.want {
			t.Errorf("MatchKeyword(%q) = %q, want %q", tc.text, got, tc.want)
		}
	}
}

func TestStripMarker(t *testing.T) {
	tests := []struct {
		in, want string
		marked   bool
	}{
		{"Let me get someone. [[handoff]]", "Let me get someone.", true},
		{"[[HANDOFF]]", "", true},
		{"plain answer", "plain answer", false},
		{"a [[handoff]] b [[handoff]]", "a  b", true},
	}
	for _, tc := range tests {
		got, marked := stripMarker(tc.in, "[[handoff]]")
		if got != tc.want || marked != tc.marked {
			t.Errorf("stripMarker(%q) = %q, %v", tc.in, got, marked)
		}
	}
}

func BenchmarkParseDecide(b *testing.B) {
	body, err := os.ReadFile("../../testdata/corpus/chatwoot/captured_message_created_incoming_contact_webwidget.json")
	if err != nil {
		b.Fatal(err)
	}
	route := &store.Route{ID: 1, InboxID: 1, Enabled: true, Mode: store.ModeAuto}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		ev, err := chatwoot.ParseEvent(body)
		if err != nil {
			b.Fatal(err)
		}
		if v := Decide(Input{Event: ev, Route: route, Conv: store.Conversation{State: store.StateBot}, BotStatuses: []string{"pending"}}); !v.Accept {
			b.Fatal(v.Reason)
		}
	}
}

func TestDecideMessageUpdated(t *testing.T) {
	auto := &store.Route{ID: 1, InboxID: 1, Enabled: true, Mode: store.ModeAuto}
	draft := &store.Route{ID: 2, InboxID: 1, Enabled: true, Mode: store.ModeDraft}
	base := "../../testdata/corpus/chatwoot/captured_message_created_incoming_contact_webwidget.json"
	upd := func(f func(e *chatwoot.Event)) *chatwoot.Event {
		e := mustParse(t, base)
		e.Name = "message_updated"
		f(e)
		return e
	}
	refused := func(e *chatwoot.Event) {
		e.MessageType, e.Sender, e.ExternalError = "outgoing", &chatwoot.Sender{Type: chatwoot.SenderAgentBot}, "(#131047) window"
	}
	voice := func(e *chatwoot.Event) {
		e.Attachments = []chatwoot.Attachment{{FileType: "audio", TranscribedText: "hello there"}}
	}
	csat := func(e *chatwoot.Event) {
		e.MessageType, e.Sender, e.ContentType, e.CSAT = "template", nil, "input_csat", &chatwoot.CSATResponse{Rating: 5}
	}
	for _, tc := range []struct {
		name    string
		ev      *chatwoot.Event
		route   *store.Route
		posted  bool
		waiting bool
		csat    bool
		want    string
	}{
		{"refusal of bridge's post", upd(refused), auto, true, false, false, "accept:" + KindRefused},
		{"refusal of someone else's post", upd(refused), auto, false, false, false, ReasonNotMessageCreated},
		{"refusal of a draft route's note", upd(refused), draft, true, false, false, ReasonNotMessageCreated},
		{"refusal without a route", upd(refused), nil, true, false, false, ReasonNotMessageCreated},
		{"transcription awaited", upd(voice), auto, false, true, false, "accept:" + KindTranscript},
		{"transcription nobody waits for", upd(voice), auto, false, false, false, ReasonNotMessageCreated},
		{"waiting, but no text yet", upd(func(e *chatwoot.Event) { e.Attachments = []chatwoot.Attachment{{FileType: "audio"}} }), auto, false, true, false, ReasonNotMessageCreated},
		{"csat rating, feedback on", upd(csat), auto, false, false, true, "accept:" + KindFeedback},
		{"csat rating, feedback off", upd(csat), auto, false, false, false, ReasonNotMessageCreated},
		{"plain edit", upd(func(*chatwoot.Event) {}), auto, false, false, true, ReasonNotMessageCreated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Decide(Input{Event: tc.ev, Route: tc.route, Conv: store.Conversation{State: store.StateBot, Status: "pending"},
				Posted: tc.posted, Waiting: tc.waiting, CSATFeedback: tc.csat, BotStatuses: []string{"pending"}})
			got := v.Reason
			if v.Accept {
				got = "accept:" + v.Kind
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
