package simulate

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"
)

// optionalKeys are keys that real captures of different Chatwoot versions
// disagree on (corpus NOTES.md, Chatwoot 4 and 5): assignee_type, blocked
// and last_activity_at are missing in older captures, and the 2023 capture
// also lacks conversation.updated_at.
var optionalKeys = []string{"assignee_type", "blocked", "last_activity_at", "updated_at"}

// keyDrift returns the keys one side has and the other lacks, ignoring
// optional keys.
func keyDrift(got, want map[string]any) (extra, missing []string) {
	for k := range got {
		if _, ok := want[k]; !ok && !slices.Contains(optionalKeys, k) {
			extra = append(extra, k)
		}
	}
	for k := range want {
		if _, ok := got[k]; !ok && !slices.Contains(optionalKeys, k) {
			missing = append(missing, k)
		}
	}
	slices.Sort(extra)
	slices.Sort(missing)
	return extra, missing
}

func obj2(t *testing.T, m map[string]any, path ...string) map[string]any {
	t.Helper()
	var cur any = m
	for _, p := range path {
		switch x := cur.(type) {
		case map[string]any:
			cur = x[p]
		case []any:
			i, _ := strconv.Atoi(p)
			if i >= len(x) {
				t.Fatalf("%v: index %d out of range", path, i)
			}
			cur = x[i]
		}
	}
	out, ok := cur.(map[string]any)
	if !ok {
		t.Fatalf("%v is %T, not an object", path, cur)
	}
	return out
}

// compareShape checks that got has the keys of the real capture at every
// level bridge reads, so the fake cannot wander from reality.
func compareShape(t *testing.T, got, want map[string]any, paths [][]string) {
	t.Helper()
	for _, p := range paths {
		g, w := obj2(t, got, p...), obj2(t, want, p...)
		if extra, missing := keyDrift(g, w); len(extra)+len(missing) > 0 {
			t.Errorf("at %v: keys not in the capture %v, keys missing %v", p, extra, missing)
		}
	}
}

var messageShapePaths = [][]string{
	{},
	{"account"},
	{"inbox"},
	{"conversation"},
	{"conversation", "contact_inbox"},
	{"conversation", "meta"},
	{"conversation", "meta", "sender"},
	{"conversation", "messages", "0"},
	{"conversation", "messages", "0", "conversation"},
}

func TestWebhookDrift(t *testing.T) {
	c, _, _ := newTestChatwoot(t, ChatwootOptions{})
	c.AddInbox(1, "Website", "https://bridge.example/webhooks/chatwoot")
	conv := c.NewConversation(1, Contact{ID: 163, Name: "billowing-night-17"}, "pending")

	t.Run("IncomingContact", func(t *testing.T) {
		d, err := c.CustomerSays(t.Context(), conv, "你好 <b> & co")
		if err != nil {
			t.Fatal(err)
		}
		got := decodeJSON(t, d.Body)
		for _, f := range []string{
			"../../testdata/corpus/chatwoot/captured_message_created_incoming_contact_webwidget.json",
			"../../testdata/corpus/chatwoot/captured_message_created_incoming_contact_whatsapp.json",
		} {
			want := decodeJSON(t, mustRead(t, f))
			compareShape(t, got, want, append(messageShapePaths, []string{"sender"}, []string{"conversation", "messages", "0", "sender"}))
		}
		if _, hasType := got["sender"].(map[string]any)["type"]; hasType {
			t.Error("a contact sender must not carry a type key")
		}
		if obj2(t, got, "conversation", "meta", "sender")["type"] != "contact" {
			t.Error("conversation.meta.sender.type must be contact")
		}
		// Value types bridge relies on.
		conv := got["conversation"].(map[string]any)
		m0 := obj2(t, got, "conversation", "messages", "0")
		if _, ok := got["created_at"].(string); !ok || got["message_type"] != "incoming" || got["event"] != "message_created" ||
			conv["id"] != float64(1) || conv["channel"] != "Channel::Api" || m0["message_type"] != float64(0) {
			t.Errorf("values: created_at %v message_type %v conversation.id %v messages[0].message_type %v",
				got["created_at"], got["message_type"], conv["id"], m0["message_type"])
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z", got["created_at"].(string)); err != nil {
			t.Errorf("created_at: %v", err)
		}
		if got["id"] != float64(1001) || d.MessageID != 1001 {
			t.Errorf("first message id %v / %d, want 1001", got["id"], d.MessageID)
		}
		// The top-level key order of the capture, event last.
		wantOrder := `{"account":`
		if string(d.Body[:len(wantOrder)]) != wantOrder || string(d.Body[len(d.Body)-len(`"event":"message_created"}`):]) != `"event":"message_created"}` {
			t.Errorf("key order: %s ... %s", d.Body[:20], d.Body[len(d.Body)-30:])
		}
		// Rails escapes <, > and &.
		if !bytes.Contains(d.Body, []byte(`\u003cb\u003e \u0026 co`)) {
			t.Errorf("body does not escape HTML characters as Rails does: %s", d.Body[:200])
		}
	})
	t.Run("PhoneReplySenderNull", func(t *testing.T) {
		d, err := c.PhoneSays(t.Context(), conv, "sent from the phone")
		if err != nil {
			t.Fatal(err)
		}
		got := decodeJSON(t, d.Body)
		want := decodeJSON(t, mustRead(t, "../../testdata/corpus/chatwoot/captured_message_created_template_sender_null_webwidget.json"))
		compareShape(t, got, want, messageShapePaths)
		if v, ok := got["sender"]; !ok || v != nil || got["message_type"] != "outgoing" {
			t.Errorf("sender %v (present %v), message_type %v", v, ok, got["message_type"])
		}
		if _, ok := obj2(t, got, "conversation", "messages", "0")["sender"]; ok {
			t.Error("messages[0] of a senderless message must have no sender key")
		}
	})
	t.Run("AgentReply", func(t *testing.T) {
		d, err := c.AgentSays(t.Context(), conv, "I'll take it from here", false)
		if err != nil {
			t.Fatal(err)
		}
		got := decodeJSON(t, d.Body)
		want := map[string]any{"id": float64(3), "name": "Agent Smith", "email": "smith@example.com", "type": "user"}
		if !equalJSON(got["sender"], want) || got["message_type"] != "outgoing" {
			t.Errorf("sender %v message_type %v", got["sender"], got["message_type"])
		}
		m0 := obj2(t, got, "conversation", "messages", "0")
		if m0["sender_type"] != "User" || obj2(t, got, "conversation", "messages", "0", "sender")["type"] != "user" {
			t.Errorf("messages[0] = %v", m0)
		}
	})
	t.Run("StatusChanged", func(t *testing.T) {
		d, err := c.SetStatus(t.Context(), conv, "open")
		if err != nil {
			t.Fatal(err)
		}
		got := decodeJSON(t, d.Body)
		for _, f := range []string{
			"../../testdata/corpus/chatwoot/captured_conversation_status_changed_pending_webwidget.json",
			"../../testdata/corpus/chatwoot/captured_conversation_status_changed_agentbot_whatsapp.json",
		} {
			want := decodeJSON(t, mustRead(t, f))
			compareShape(t, got, want, [][]string{{}, {"contact_inbox"}, {"meta"}, {"meta", "sender"}, {"messages", "0"}})
		}
		if got["status"] != "open" || got["event"] != "conversation_status_changed" {
			t.Errorf("status %v event %v", got["status"], got["event"])
		}
		if c.Status(conv) != "open" {
			t.Errorf("Status = %q", c.Status(conv))
		}
	})
}

func TestWebhookSignature(t *testing.T) {
	const secret = "w3bh00ks3cr3t24charsXYZ"
	c, _, rc := newTestChatwoot(t, ChatwootOptions{WebhookSecret: secret})
	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	d, err := c.CustomerSays(t.Context(), conv, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != 200 || string(d.Response) != `{"status":"accepted"}` {
		t.Fatalf("delivery %d %s", d.Status, d.Response)
	}
	verify := func(h hook) {
		t.Helper()
		ts := h.header.Get("X-Chatwoot-Timestamp")
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			t.Fatalf("timestamp %q", ts)
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "." + string(h.body)))
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if got := h.header.Get("X-Chatwoot-Signature"); got != want {
			t.Fatalf("signature %q, want %q", got, want)
		}
		if h.header.Get("Content-Type") != "application/json" {
			t.Fatalf("Content-Type %q", h.header.Get("Content-Type"))
		}
	}
	first := rc.next(t)
	verify(first)
	if id := first.header.Get("X-Chatwoot-Delivery"); id != d.ID || !isUUID(id) {
		t.Fatalf("delivery id %q, Delivery.ID %q", id, d.ID)
	}
	if string(first.body) != string(d.Body) {
		t.Fatal("Delivery.Body differs from what was sent")
	}

	again, err := c.Redeliver(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	second := rc.next(t)
	verify(second)
	if second.header.Get("X-Chatwoot-Delivery") != d.ID || again.ID != d.ID || string(second.body) != string(d.Body) || again.MessageID != d.MessageID {
		t.Fatalf("redelivery changed the delivery id or body")
	}

	t.Run("Unsigned", func(t *testing.T) {
		c.SetWebhook(c.webhookURL, "")
		if _, err := c.Deliver(t.Context(), []byte(`{"event":"message_created","id":5}`)); err != nil {
			t.Fatal(err)
		}
		h := rc.next(t)
		if h.header.Get("X-Chatwoot-Signature") != "" || h.header.Get("X-Chatwoot-Timestamp") != "" || h.header.Get("X-Chatwoot-Delivery") == "" {
			t.Fatalf("headers %v", h.header)
		}
	})
	t.Run("SignatureHelper", func(t *testing.T) {
		if got := Signature(secret, first.header.Get("X-Chatwoot-Timestamp"), first.body); got != first.header.Get("X-Chatwoot-Signature") {
			t.Fatalf("Signature() = %q", got)
		}
	})
}

func TestWebhookBotFailureOpensConversation(t *testing.T) {
	c, _, rc := newTestChatwoot(t, ChatwootOptions{})
	c.AddInbox(1, "Website", "https://bridge.example/webhooks/chatwoot")
	c.AddInbox(2, "No bot", "")
	rc.mu.Lock()
	rc.status = 401
	rc.mu.Unlock()

	plain := c.NewConversation(2, Contact{Name: "Ann"}, "pending")
	if d, err := c.CustomerSays(t.Context(), plain, "hi"); err != nil || d.Status != 401 {
		t.Fatalf("delivery %d, %v", d.Status, err)
	}
	if c.Status(plain) != "pending" {
		t.Fatalf("inbox without a bot: status %q, want pending", c.Status(plain))
	}

	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	if d, err := c.CustomerSays(t.Context(), conv, "hi"); err != nil || d.Status != 401 {
		t.Fatalf("delivery %d, %v", d.Status, err)
	}
	if c.Status(conv) != "open" {
		t.Fatalf("status %q, want open after a refused agent-bot delivery", c.Status(conv))
	}
	msgs := c.Messages(conv)
	if last := msgs[len(msgs)-1]; last.MessageType != "activity" || last.Content != botFailureNote {
		t.Fatalf("last message %+v", last)
	}
	c.Close() // the status change is delivered in the background
	var events []string
	for range rc.count() {
		events = append(events, rc.next(t).json(t)["event"].(string))
	}
	if !slices.Equal(events, []string{"message_created", "message_created", "conversation_status_changed"}) {
		t.Fatalf("webhooks %v", events)
	}
}

func TestJSONStyles(t *testing.T) {
	v := obj{{"b", "é<\U0001F600>"}, {"a", []any{1, nil, true, 1.5}}, {"m", map[string]any{"z": 1.0, "y": "x"}}}
	tests := []struct {
		name string
		enc  encoder
		want string
	}{
		{"Python", pythonJSON, `{"b": "\u00e9<\ud83d\ude00>", "a": [1, null, true, 1.5], "m": {"y": "x", "z": 1}}`},
		{"Rails", railsJSON, `{"b":"é\u003c😀\u003e","a":[1,null,true,1.5],"m":{"y":"x","z":1}}`},
		{"Stream", streamJSON, `{"b": "é<😀>", "a": [1, null, true, 1.5], "m": {"y": "x", "z": 1}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(tc.enc.marshal(v)); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestWebhookEchoSnapshot: an echo carries the conversation as it was when
// the event happened, even when it arrives after a later change; held
// echoes go out in the order a test picks, and a redelivery resends the
// very same bytes with the same X-Chatwoot-Delivery.
func TestWebhookEchoSnapshot(t *testing.T) {
	const secret = "w3bh00ks3cr3t24charsXYZ"
	c, srv, rc := newTestChatwoot(t, ChatwootOptions{WebhookSecret: secret})
	c.AddInbox(1, "Website", "https://bridge.example/webhooks/chatwoot")
	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	c.HoldEchoes()

	status, b := cwDo(t, srv, "POST", convPath(conv, "/messages"), botToken, map[string]any{"content": "Let me get a human"})
	if status != 200 {
		t.Fatalf("post: %d %s", status, b)
	}
	if status, b := cwDo(t, srv, "POST", convPath(conv, "/toggle_status"), botToken, map[string]any{"status": "open"}); status != 200 {
		t.Fatalf("toggle_status: %d %s", status, b)
	}
	if status, b := cwDo(t, srv, "POST", convPath(conv, "/messages"), userToken, map[string]any{"content": "handoff note", "private": true}); status != 200 {
		t.Fatalf("note: %d %s", status, b)
	}
	held := c.HeldEchoes()
	if len(held) != 3 || held[0].Event != "message_created" || held[1].Event != "conversation_status_changed" || held[2].Event != "message_created" {
		t.Fatalf("held %+v", held)
	}
	if n := rc.count(); n != 0 {
		t.Fatalf("%d webhooks went out while held", n)
	}

	sent, err := c.ReleaseEchoesReversed(t.Context())
	if err != nil || len(sent) != 3 {
		t.Fatalf("release: %d, %v", len(sent), err)
	}
	var arrived []hook
	for range 3 {
		arrived = append(arrived, rc.next(t))
	}
	wantOrder := []string{held[2].ID, held[1].ID, held[0].ID}
	for i, h := range arrived {
		if id := h.header.Get("X-Chatwoot-Delivery"); id != wantOrder[i] {
			t.Fatalf("arrival %d is %s, want %s", i, id, wantOrder[i])
		}
		if h.header.Get("X-Chatwoot-Signature") != Signature(secret, h.header.Get("X-Chatwoot-Timestamp"), h.body) {
			t.Fatalf("arrival %d is not signed", i)
		}
	}
	answer := arrived[2].json(t)
	if answer["event"] != "message_created" || obj2(t, answer, "conversation")["status"] != "pending" || c.Status(conv) != "open" {
		t.Fatalf("the answer's echo says %v, conversation is %s: want the pending snapshot", obj2(t, answer, "conversation")["status"], c.Status(conv))
	}
	if note := arrived[0].json(t); note["private"] != true || obj2(t, note, "conversation")["status"] != "open" {
		t.Fatalf("note echo %v", note)
	}

	again, err := c.Redeliver(t.Context(), sent[2])
	if err != nil {
		t.Fatal(err)
	}
	h := rc.next(t)
	if h.header.Get("X-Chatwoot-Delivery") != held[0].ID || string(h.body) != string(held[0].Body) || again.ID != held[0].ID {
		t.Fatal("the redelivery changed the delivery id or the bytes")
	}

	t.Run("ChosenOrder", func(t *testing.T) {
		cwDo(t, srv, "POST", convPath(conv, "/toggle_status"), botToken, map[string]any{"status": "pending"})
		cwDo(t, srv, "POST", convPath(conv, "/toggle_status"), botToken, map[string]any{"status": "resolved"})
		cwDo(t, srv, "POST", convPath(conv, "/toggle_status"), botToken, map[string]any{"status": "open"})
		held := c.HeldEchoes()
		if len(held) != 3 {
			t.Fatalf("held %d", len(held))
		}
		if _, err := c.ReleaseEchoes(t.Context(), "no-such-delivery"); err == nil || len(c.HeldEchoes()) != 3 {
			t.Fatal("an unknown id must send nothing")
		}
		if _, err := c.ReleaseEchoes(t.Context(), held[1].ID, held[2].ID, held[0].ID); err != nil {
			t.Fatal(err)
		}
		var statuses []string
		for range 3 {
			statuses = append(statuses, rc.next(t).json(t)["status"].(string))
		}
		if !slices.Equal(statuses, []string{"resolved", "open", "pending"}) {
			t.Fatalf("statuses arrived %v", statuses)
		}
	})
	t.Run("Resume", func(t *testing.T) {
		cwDo(t, srv, "POST", convPath(conv, "/messages"), botToken, map[string]any{"content": "one more"})
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := c.WaitFor(ctx, func() bool { return len(c.HeldEchoes()) == 1 }); err != nil {
			t.Fatal(err)
		}
		c.ResumeEchoes()
		if got := rc.next(t).json(t); got["content"] != "one more" {
			t.Fatalf("resumed %v", got)
		}
	})
}

// TestWebhookEchoesOutOfOrder: background echoes wait a random delay, so a
// burst of posts is echoed in some other order, every echo exactly once.
func TestWebhookEchoesOutOfOrder(t *testing.T) {
	c, srv, rc := newTestChatwoot(t, ChatwootOptions{EchoDelay: 100 * time.Millisecond})
	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	const n = 20
	for i := range n {
		if status, b := cwDo(t, srv, "POST", convPath(conv, "/messages"), botToken, map[string]any{"content": strconv.Itoa(i)}); status != 200 {
			t.Fatalf("post %d: %d %s", i, status, b)
		}
	}
	var got []int
	for range n {
		i, _ := strconv.Atoi(rc.next(t).json(t)["content"].(string))
		got = append(got, i)
	}
	if slices.IsSorted(got) {
		t.Fatalf("%d echoes arrived in posting order %v; chance of that is 1/%d!", n, got, n)
	}
	slices.Sort(got)
	for i, v := range got {
		if v != i {
			t.Fatalf("echoes %v: each post must be echoed once", got)
		}
	}
}

// TestWebhookAgentBotRetries: agent-bot deliveries answered 429 or 500 are
// retried, 3 attempts in all, with the same X-Chatwoot-Delivery; other
// failures are final at once. A final failure of a message event opens a
// pending conversation (lib/webhooks/trigger.rb, app/jobs/agent_bots/webhook_job.rb).
func TestWebhookAgentBotRetries(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // connections are refused from now on
	tests := []struct {
		name     string
		script   []int
		bot      bool
		keep     bool
		refused  bool
		attempts int
		status   int    // of the last attempt
		conv     string // status of the conversation afterwards
	}{
		{"429ThenOK", []int{429, 200}, true, false, false, 2, 200, "pending"},
		{"500Thrice", []int{500, 500, 500}, true, false, false, 3, 500, "open"},
		{"500TwiceThenOK", []int{500, 500, 200}, true, false, false, 3, 200, "pending"},
		{"503NotRetried", []int{503, 200}, true, false, false, 1, 503, "open"},
		{"502NotRetried", []int{502, 200}, true, false, false, 1, 502, "open"},
		{"401NotRetried", []int{401, 200}, true, false, false, 1, 401, "open"},
		{"Refused", nil, true, false, true, 1, 0, "open"},
		{"KeepPending", []int{503}, true, true, false, 1, 503, "pending"},
		{"NoBotNoRetry", []int{500, 200}, false, false, false, 1, 500, "pending"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _, rc := newTestChatwoot(t, ChatwootOptions{RetryDelay: time.Millisecond, KeepPendingOnBotFailure: tc.keep})
			bot := ""
			if tc.bot {
				bot = "https://bridge.example/webhooks/chatwoot"
			}
			c.AddInbox(1, "Website", bot)
			if tc.refused {
				c.SetWebhook(deadURL, "")
			}
			rc.mu.Lock()
			rc.script = tc.script
			rc.mu.Unlock()
			conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
			d, err := c.CustomerSays(t.Context(), conv, "hi")
			if (err != nil) != tc.refused {
				t.Fatalf("err %v", err)
			}
			if d.Attempts != tc.attempts || d.Status != tc.status {
				t.Fatalf("attempts %d status %d, want %d %d", d.Attempts, d.Status, tc.attempts, tc.status)
			}
			if !tc.refused {
				ids := map[string]bool{}
				for range tc.attempts {
					ids[rc.next(t).header.Get("X-Chatwoot-Delivery")] = true
				}
				if len(ids) != 1 || !ids[d.ID] {
					t.Fatalf("delivery ids %v, want only %s", ids, d.ID)
				}
			}
			if got := c.Status(conv); got != tc.conv {
				t.Fatalf("conversation %s, want %s", got, tc.conv)
			}
			msgs := c.Messages(conv)
			opened := msgs[len(msgs)-1].MessageType == "activity" && msgs[len(msgs)-1].Content == botFailureNote
			if opened != (tc.conv == "open") {
				t.Fatalf("activity message %v, messages %+v", opened, msgs)
			}
		})
	}
	t.Run("EchoRefusedOpens", func(t *testing.T) {
		// The echo of the bot's own answer is an agent-bot delivery too:
		// refusing it hands the conversation to a human.
		c, srv, rc := newTestChatwoot(t, ChatwootOptions{})
		c.AddInbox(1, "Website", "https://bridge.example/webhooks/chatwoot")
		conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
		rc.mu.Lock()
		rc.status = 503
		rc.mu.Unlock()
		cwDo(t, srv, "POST", convPath(conv, "/messages"), botToken, map[string]any{"content": "answer"})
		c.Close()
		ds := c.Deliveries()
		if len(ds) != 2 || ds[0].Event != "message_created" || ds[0].Attempts != 1 || ds[1].Event != "conversation_status_changed" {
			t.Fatalf("deliveries %+v", ds)
		}
		if c.Status(conv) != "open" {
			t.Fatalf("status %s", c.Status(conv))
		}
	})
	t.Run("DefaultDelay", func(t *testing.T) {
		if got := retryWait(0); got != 3*time.Second {
			t.Fatalf("default retry wait %v, want Chatwoot's 3s", got)
		}
		if got := retryWait(-1); got >= 0 {
			t.Fatalf("negative RetryDelay gives %v, want no retry", got)
		}
	})
}

// TestChatwootListMessages: bots get 401; users get meta and the latest 20
// messages rendered like _message.json.jbuilder, paged by id.
func TestChatwootListMessages(t *testing.T) {
	c, srv, _ := newTestChatwoot(t, ChatwootOptions{NoEcho: true})
	conv := c.NewConversation(1, Contact{Name: "Jane", Email: "jane@example.com"}, "pending")
	for i := range 24 {
		if _, err := c.CustomerSays(t.Context(), conv, "q"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	status, b := cwDo(t, srv, "POST", convPath(conv, "/messages"), botToken, map[string]any{"content": "answer", "source_id": "ext-1"})
	if status != 200 {
		t.Fatalf("post: %d %s", status, b)
	}
	cwDo(t, srv, "POST", convPath(conv, "/messages"), userToken, map[string]any{"content": "note", "private": true})

	status, b = cwDo(t, srv, "GET", convPath(conv, "/messages"), botToken, nil)
	if status != 401 || string(b) != `{"error":"Access to this endpoint is not authorized for bots"}` {
		t.Fatalf("bot token: %d %s", status, b)
	}

	list := func(query string) (map[string]any, []map[string]any) {
		t.Helper()
		status, b := cwDo(t, srv, "GET", convPath(conv, "/messages"+query), userToken, nil)
		if status != 200 {
			t.Fatalf("user token: %d %s", status, b)
		}
		resp := decodeJSON(t, b)
		var out []map[string]any
		for _, m := range resp["payload"].([]any) {
			out = append(out, m.(map[string]any))
		}
		return resp["meta"].(map[string]any), out
	}
	meta, msgs := list("")
	if len(msgs) != 20 || msgs[19]["content"] != "note" || msgs[0]["content"] != "q6" {
		t.Fatalf("%d messages, first %v last %v: want the latest 20", len(msgs), msgs[0]["content"], msgs[len(msgs)-1]["content"])
	}
	if meta["contact"].(map[string]any)["type"] != "contact" || meta["labels"] == nil {
		t.Fatalf("meta %v", meta)
	}
	answer := msgs[18]
	wantKeys := []string{"id", "content", "inbox_id", "conversation_id", "message_type", "content_type", "status",
		"content_attributes", "created_at", "private", "source_id", "sender"}
	for _, k := range wantKeys {
		if _, ok := answer[k]; !ok {
			t.Errorf("message lacks %s: %v", k, answer)
		}
	}
	if answer["message_type"] != float64(1) || answer["source_id"] != "ext-1" || answer["sender"].(map[string]any)["type"] != "agent_bot" {
		t.Fatalf("answer %v", answer)
	}
	if _, isNumber := answer["created_at"].(float64); !isNumber || msgs[0]["message_type"] != float64(0) ||
		msgs[0]["sender"].(map[string]any)["type"] != "contact" || msgs[19]["sender"].(map[string]any)["type"] != "user" {
		t.Fatalf("created_at %v, first %v, note %v", answer["created_at"], msgs[0], msgs[19])
	}

	first := int64(msgs[0]["id"].(float64))
	_, older := list("?before=" + strconv.FormatInt(first, 10))
	if len(older) != 6 || older[0]["content"] != "q0" || older[5]["content"] != "q5" {
		t.Fatalf("before: %d messages", len(older))
	}
	_, newer := list("?after=" + strconv.FormatInt(first, 10) + "&filter_internal_messages=true")
	if len(newer) != 18 || newer[17]["content"] != "answer" {
		t.Fatalf("after, without internal: %d messages, last %v", len(newer), newer[len(newer)-1]["content"])
	}
	answerID := int64(answer["id"].(float64))
	_, between := list("?after=" + strconv.FormatInt(first, 10) + "&before=" + strconv.FormatInt(answerID, 10))
	if len(between) != 18 || between[0]["content"] != "q6" || between[17]["content"] != "q23" {
		t.Fatalf("between: %d messages", len(between))
	}
}
