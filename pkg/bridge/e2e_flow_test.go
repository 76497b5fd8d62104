package bridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

func TestEndToEndOrderPerConversation(t *testing.T) {
	e := newEnv(t, envOptions{})
	// Slow Dify so the three messages queue up behind each other.
	e.dify.SetLatency(30 * time.Millisecond)
	a := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	b := e.cw.NewConversation(1, simulate.Contact{ID: 2, Name: "B"}, "pending")
	var ids []int64
	for i := 1; i <= 3; i++ {
		ids = append(ids, e.say(a, fmt.Sprintf("question %d", i)).EventID)
	}
	other := e.say(b, "meanwhile")
	for _, id := range append(ids, other.EventID) {
		if ev := e.waitFinal(id); ev.Status != store.StatusAnswered {
			t.Fatalf("event %d = %s %s", id, ev.Status, ev.LastError)
		}
	}
	got := e.botReplies(a)
	want := []string{"Answer to: question 1", "Answer to: question 2", "Answer to: question 3"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("replies = %q, want %q", got, want)
	}
	// One at a time per conversation: each Dify call of conversation a
	// started after the previous one's answer was posted.
	var aReqs []simulate.DifyRequest
	for _, r := range e.dify.Requests() {
		if r.User == "chatwoot-1-1" {
			aReqs = append(aReqs, r)
		}
	}
	if len(aReqs) != 3 {
		t.Fatalf("requests of a = %d", len(aReqs))
	}
	for i := 1; i < 3; i++ {
		prev := e.event(ids[i-1])
		if aReqs[i].At.Before(prev.FinishedAt.Add(-time.Millisecond)) {
			t.Errorf("request %d started at %v before event %d finished at %v", i+1, aReqs[i].At, ids[i-1], prev.FinishedAt)
		}
	}
	// Conversation b did not wait for all of a.
	if eb, ea := e.event(other.EventID), e.event(ids[2]); !eb.FinishedAt.Before(ea.FinishedAt) {
		t.Errorf("conversation b finished at %v, after a's last at %v: not parallel", eb.FinishedAt, ea.FinishedAt)
	}
}

func TestEndToEndKeywordHandoff(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.Handoff.TeamID = 4; o.Handoff.Labels = []string{"bot-handoff"} }})
	e.cw.AddTeam(4, "Support")
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	ev := e.waitFinal(e.say(conv, "I want to talk to a REAL person please").EventID)
	if ev.Status != store.StatusHandedOff || !strings.Contains(ev.Reason, `customer asked for a human: "I want to talk`) {
		t.Fatalf("event = %s %q", ev.Status, ev.Reason)
	}
	if n := len(e.dify.Requests()); n != 0 {
		t.Errorf("dify called %d times on a keyword handoff", n)
	}
	if got := e.botReplies(conv); len(got) != 1 || got[0] != "Let me connect you with a member of our team." {
		t.Errorf("replies = %q", got)
	}
	if got := e.notes(conv); len(got) != 1 || !strings.Contains(got[0], "customer asked for a human") {
		t.Errorf("notes = %q", got)
	}
	if s := e.cw.Status(conv); s != "open" {
		t.Errorf("status = %q", s)
	}
	if e.cw.Team(conv) != 4 {
		t.Errorf("team = %d", e.cw.Team(conv))
	}
	if l := e.cw.Labels(conv); len(l) != 1 || l[0] != "bot-handoff" {
		t.Errorf("labels = %v", l)
	}
	// From then on the conversation's messages are ignored.
	a := e.say(conv, "hello?")
	if a.Status != "ignored" || a.Reason != "conversation_status:open" {
		t.Errorf("after handoff: %+v", a)
	}
	c, _ := e.db.Conversation(t.Context(), 1, conv)
	if c.State != store.StateHuman {
		t.Errorf("state = %s", c.State)
	}
}

func TestEndToEndLabelsNeedUserToken(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.ChatwootUser = nil; o.Handoff.Labels = []string{"x"} }})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	id := e.say(conv, "agent please").EventID
	if ev := e.waitFinal(id); ev.Status != store.StatusHandedOff {
		t.Fatalf("status = %s", ev.Status)
	}
	hops, _ := e.db.Hops(t.Context(), id)
	found := false
	for _, h := range hops {
		if h.Outcome == "labels skipped" && strings.Contains(h.Detail, "user_token") {
			found = true
		}
	}
	if !found {
		t.Errorf("trace does not say why labels were skipped: %+v", hops)
	}
	if !strings.Contains(e.logs.String(), "labels skipped") {
		t.Error("log does not say why labels were skipped")
	}
}

func TestEndToEndMarkerHandoff(t *testing.T) {
	e := newEnv(t, envOptions{})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	ev := e.waitFinal(e.say(conv, "this is complicated").EventID)
	if ev.Status != store.StatusHandedOff || ev.Reason != "AI requested handoff" {
		t.Fatalf("event = %s %q", ev.Status, ev.Reason)
	}
	got := e.botReplies(conv)
	if len(got) != 2 || got[0] != "This needs a specialist." || got[1] != "Let me connect you with a member of our team." {
		t.Errorf("replies = %q (marker must be stripped, rest posted, then the handoff message)", got)
	}
	for _, r := range got {
		if strings.Contains(r, "[[") {
			t.Errorf("marker leaked: %q", r)
		}
	}
	if e.cw.Status(conv) != "open" {
		t.Errorf("status = %s", e.cw.Status(conv))
	}
}

func TestEndToEndFailureHandoff(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.dify.Fail(testDifyKey, simulate.DifyFault{Status: 500}, simulate.DifyFault{Status: 500}, simulate.DifyFault{Status: 500})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	id := e.say(conv, "hello").EventID
	ev := e.waitFinal(id)
	if ev.Status != store.StatusHandedOff || !strings.HasPrefix(ev.Reason, "AI failed: ") {
		t.Fatalf("event = %s %q", ev.Status, ev.Reason)
	}
	if n := len(e.dify.Requests()); n != 3 {
		t.Errorf("dify calls = %d, want 1 + 2 retries", n)
	}
	if got := e.notes(conv); len(got) != 1 || !strings.Contains(got[0], "AI failed: dify chat: dify 500") {
		t.Errorf("notes = %q", got)
	}
	// Every retry is in the trace with its error and timing.
	hops, _ := e.db.Hops(t.Context(), id)
	retries := 0
	for _, h := range hops {
		if h.Stage == StageDify && strings.HasPrefix(h.Outcome, "error") {
			retries++
			if !strings.Contains(h.Detail, "attempt") || h.Duration <= 0 {
				t.Errorf("retry hop lacks attempt or timing: %+v", h)
			}
		}
	}
	if retries != 3 {
		t.Errorf("error hops = %d", retries)
	}
}

func TestEndToEndDifyRecovers(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.dify.Fail(testDifyKey, simulate.DifyFault{Status: 500})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	ev := e.waitFinal(e.say(conv, "hello").EventID)
	if ev.Status != store.StatusAnswered {
		t.Fatalf("event = %s %q", ev.Status, ev.LastError)
	}
	if got := e.botReplies(conv); len(got) != 1 || got[0] != "Answer to: hello" {
		t.Errorf("replies = %q", got)
	}
}

func TestWebhookAuthAndBadInput(t *testing.T) {
	e := newEnv(t, envOptions{secret: true, token: "tok-SECRET-5"})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	body := readFile(t, "../../testdata/corpus/chatwoot/captured_message_created_incoming_contact_webwidget.json")
	url := e.srv.URL + "/webhooks/chatwoot"
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	sign := func(ts string, b []byte) string {
		n, _ := strconv.ParseInt(ts, 10, 64)
		return chatwoot.Sign(testSecret, n, b)
	}
	old := strconv.FormatInt(time.Now().Add(-6*time.Minute).Unix(), 10)
	cases := []struct {
		name   string
		url    string
		body   []byte
		hdr    map[string]string
		status int
		reason string
	}{
		{"no token", url, body, nil, 401, "missing ?token="},
		{"wrong token", url + "?token=nope", body, nil, 401, "wrong ?token="},
		{"no signature", url + "?token=tok-SECRET-5", body, nil, 401, "signature"},
		{"bad signature", url + "?token=tok-SECRET-5", body, map[string]string{"X-Chatwoot-Timestamp": ts, "X-Chatwoot-Signature": sign(ts, []byte("other"))}, 401, "does not match"},
		{"stale", url + "?token=tok-SECRET-5", body, map[string]string{"X-Chatwoot-Timestamp": old, "X-Chatwoot-Signature": sign(old, body)}, 401, "5 minute"},
		{"malformed json", url + "?token=tok-SECRET-5", []byte(`{"event":`), map[string]string{"X-Chatwoot-Timestamp": ts, "X-Chatwoot-Signature": sign(ts, []byte(`{"event":`))}, 400, "malformed json"},
		{"missing conversation", url + "?token=tok-SECRET-5", []byte(`{"event":"message_created","id":5,"message_type":"incoming","account":{"id":1},"inbox":{"id":1}}`),
			map[string]string{"X-Chatwoot-Timestamp": ts, "X-Chatwoot-Signature": sign(ts, []byte(`{"event":"message_created","id":5,"message_type":"incoming","account":{"id":1},"inbox":{"id":1}}`))}, 400, "conversation.id"},
		{"too big", url + "?token=tok-SECRET-5", bytes.Repeat([]byte("x"), MaxBody+10), nil, 413, "body over"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := post(t, c.url, c.body, c.hdr)
			if r.code != c.status || !strings.Contains(r.body, c.reason) {
				t.Fatalf("got %d %s, want %d containing %q", r.code, r.body, c.status, c.reason)
			}
			var a Ack
			if err := json.Unmarshal([]byte(r.body), &a); err != nil || a.EventID == 0 {
				t.Fatalf("rejection not journaled: %s", r.body)
			}
			ev := e.event(a.EventID)
			if ev.Status != store.StatusRejected || ev.HTTPStatus != c.status || !strings.Contains(ev.Reason, c.reason) {
				t.Errorf("journal = %+v", ev)
			}
			if len(ev.Payload) > rejectedPrefix {
				t.Errorf("stored %d bytes of a rejected body", len(ev.Payload))
			}
			if strings.Contains(string(ev.Payload)+ev.Reason, "SECRET") {
				t.Errorf("secret in journal: %q", ev.Reason)
			}
		})
	}
	// The server stays healthy and a correct delivery still works.
	if r := post(t, e.srv.URL+"/healthz", nil, nil); r.code != http.StatusMethodNotAllowed && r.code != 200 {
		t.Errorf("healthz = %d", r.code)
	}
	a := e.say(conv, "hello")
	if a.Status != "accepted" {
		t.Fatalf("good delivery: %+v", a)
	}
	e.waitFinal(a.EventID)
}

func TestJournalUnavailableAnswers500(t *testing.T) {
	// Chatwoot retries a 500 twice, 3 s apart; the retries need not take that long here.
	e := newEnv(t, envOptions{noRun: true, cwOpts: func(o *simulate.ChatwootOptions) { o.RetryDelay = time.Millisecond }})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 1, Name: "A"}, "pending")
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	d, err := e.cw.CustomerSays(t.Context(), conv, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != http.StatusInternalServerError || strings.Contains(string(d.Response), "accepted") {
		t.Errorf("got %d %s, want 500 and nothing acknowledged", d.Status, d.Response)
	}
}

// TestAnswersReachExternalChannels: on WhatsApp, Telegram, Facebook,
// Instagram, SMS and email inboxes Chatwoot sends the customer only
// outgoing messages without a source_id
// (Base::SendOnChannelService#invalid_message?); the simulated Chatwoot
// does the same. Every answer and handoff message must reach the customer
// there, and bridge's own echoes (delivered late and out of order) must
// never be taken for a human.
func TestAnswersReachExternalChannels(t *testing.T) {
	channels := []string{simulate.ChannelWhatsapp, simulate.ChannelTelegram, simulate.ChannelFacebook,
		simulate.ChannelInstagram, simulate.ChannelSMS, simulate.ChannelEmail, simulate.ChannelAPI, simulate.ChannelWebWidget}
	e := newEnv(t, envOptions{noRoute: true})
	ctx := t.Context()
	hook := e.srv.URL + "/webhooks/chatwoot"
	for i, ch := range channels {
		inbox := int64(10 + i)
		e.cw.AddInboxChannel(inbox, ch, hook, ch)
		if err := e.db.AddRoute(ctx, &store.Route{InboxID: inbox, DifyKey: testDifyKey, Mode: store.ModeAuto, Enabled: true}); err != nil {
			t.Fatal(err)
		}
	}
	for i, ch := range channels {
		t.Run(ch, func(t *testing.T) {
			conv := e.cw.NewConversation(int64(10+i), simulate.Contact{Name: "Customer"}, "pending")
			if ev := e.waitFinal(e.say(conv, "where is my order?").EventID); ev.Status != store.StatusAnswered {
				t.Fatalf("answer: %s %q", ev.Status, ev.LastError)
			}
			if ev := e.waitFinal(e.say(conv, "and when does it arrive?").EventID); ev.Status != store.StatusAnswered {
				t.Fatalf("follow-up: %s %q", ev.Status, ev.LastError)
			}
			if ev := e.waitFinal(e.say(conv, "let me talk to a human").EventID); ev.Status != store.StatusHandedOff {
				t.Fatalf("handoff: %s %q", ev.Status, ev.LastError)
			}
			var saw []string
			for _, m := range e.cw.CustomerSaw(conv) {
				saw = append(saw, m.Content)
			}
			want := []string{"Answer to: where is my order?", "Answer to: and when does it arrive?", "Let me connect you with a member of our team."}
			if len(saw) != len(want) {
				t.Fatalf("the customer saw %q, want %q", saw, want)
			}
			for j := range want {
				if !strings.HasPrefix(saw[j], want[j]) {
					t.Errorf("message %d: customer saw %q, want %q", j, saw[j], want[j])
				}
			}
			for _, m := range e.cw.Messages(conv) {
				if m.MessageType == "outgoing" && m.SenderType == "agent_bot" && strings.HasPrefix(m.SourceID, "bridge:") {
					t.Errorf("message %d was posted with source_id %q", m.ID, m.SourceID)
				}
			}
			// Every echo of bridge's own posts has arrived by now, late and
			// out of order: none of them was a takeover.
			e.wait("echoes journaled", func() bool {
				n := 0
				for _, d := range e.cw.Deliveries() {
					if d.ConversationID == conv && d.Event == "message_created" && strings.Contains(string(d.Body), `"agent_bot"`) && d.Status == 200 {
						n++
					}
				}
				return n >= 4 // two answers, the handoff message, the note
			})
			evs, _ := e.db.ListEvents(ctx, store.EventFilter{Status: store.StatusHandedOff, Limit: 100})
			for _, x := range evs {
				if x.ConversationID == conv && x.Kind == store.KindTakeover {
					t.Errorf("bridge's own post was taken for a takeover: event %d", x.ID)
				}
			}
		})
	}
}
