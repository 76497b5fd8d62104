package simulate

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// messageUpdates returns the message_updated payloads delivered for msgID.
func messageUpdates(t *testing.T, c *Chatwoot, msgID int64) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, d := range c.Deliveries() {
		if d.Event == "message_updated" && d.MessageID == msgID {
			out = append(out, decodeJSON(t, d.Body))
		}
	}
	return out
}

// TestChatwootChannelDelivery: on external channels a post that carries a
// source_id never reaches the customer (Base::SendOnChannelService#invalid_message?);
// a post without one does, and the channel's sender then writes the
// provider's id and fires message_updated.
func TestChatwootChannelDelivery(t *testing.T) {
	wamidRe := regexp.MustCompile(`^wamid\.[A-Za-z0-9+/=]+$`)
	tests := []struct {
		name     string
		channel  string
		sourceID string // posted source_id, "" = none
		private  bool
		saw      bool
		updated  *regexp.Regexp // source_id after the send, nil = no message_updated
		status   string         // status after the send
	}{
		{"ApiPlain", ChannelAPI, "", false, true, nil, "sent"},
		{"ApiWithSourceID", ChannelAPI, "bridge:evt-1:answer", false, true, nil, "sent"},
		{"WebWidgetWithSourceID", ChannelWebWidget, "bridge:evt-1:answer", false, true, nil, "sent"},
		{"WhatsappPlain", ChannelWhatsapp, "", false, true, wamidRe, "sent"},
		{"WhatsappWithSourceID", ChannelWhatsapp, "bridge:evt-1:answer", false, false, nil, "sent"},
		{"WhatsappPrivateNote", ChannelWhatsapp, "", true, false, nil, "sent"},
		{"TelegramPlain", ChannelTelegram, "", false, true, regexp.MustCompile(`^[0-9]+$`), "sent"},
		{"TelegramWithSourceID", ChannelTelegram, "bridge:1", false, false, nil, "sent"},
		{"FacebookPlain", ChannelFacebook, "", false, true, regexp.MustCompile(`^m_`), "sent"},
		{"FacebookWithSourceID", ChannelFacebook, "bridge:1", false, false, nil, "sent"},
		{"InstagramWithSourceID", ChannelInstagram, "bridge:1", false, false, nil, "sent"},
		{"SMSWithSourceID", ChannelSMS, "bridge:1", false, false, nil, "sent"},
		{"TwilioPlain", ChannelTwilio, "", false, true, regexp.MustCompile(`^SM[0-9a-f]{32}$`), "sent"},
		{"TwilioWithSourceID", ChannelTwilio, "bridge:1", false, false, nil, "sent"},
		{"EmailPlain", ChannelEmail, "", false, true, regexp.MustCompile(`@`), "sent"},
		{"EmailWithSourceID", ChannelEmail, "bridge:1", false, false, nil, "sent"},
		{"LinePlain", ChannelLine, "", false, true, regexp.MustCompile(`^$`), "delivered"},
		{"LineWithSourceID", ChannelLine, "bridge:1", false, false, nil, "sent"},
		{"TwitterPlain", ChannelTwitter, "", false, true, nil, "sent"},
		{"TwitterWithSourceID", ChannelTwitter, "bridge:1", false, false, nil, "sent"},
		{"TiktokWithSourceID", ChannelTiktok, "bridge:1", false, false, nil, "sent"},
		{"UnknownChannel", "Channel::Voice", "", false, false, nil, "sent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, srv, _ := newTestChatwoot(t, ChatwootOptions{})
			c.AddInboxChannel(4, "Support", "", tc.channel)
			conv := c.NewConversation(4, Contact{Name: "Jane"}, "pending")
			if _, err := c.CustomerSays(t.Context(), conv, "hello"); err != nil {
				t.Fatal(err)
			}
			body := map[string]any{"content": "Here is your answer", "private": tc.private}
			if tc.sourceID != "" {
				body["source_id"] = tc.sourceID
			}
			status, b := cwDo(t, srv, http.MethodPost, convPath(conv, "/messages"), botToken, body)
			if status != 200 {
				t.Fatalf("post: %d %s", status, b)
			}
			id := int64(decodeJSON(t, b)["id"].(float64))
			c.Close() // the send job and every echo have run

			saw := c.CustomerSaw(conv)
			if got := len(saw) == 1 && saw[0].ID == id; got != tc.saw {
				t.Fatalf("customer saw %+v, want the answer: %v", saw, tc.saw)
			}
			msgs := c.Messages(conv)
			m := msgs[len(msgs)-1]
			if m.ID != id || m.Delivered != tc.saw || m.Status != tc.status {
				t.Fatalf("message %+v, want delivered %v status %s", m, tc.saw, tc.status)
			}
			ups := messageUpdates(t, c, id)
			if tc.updated == nil {
				if len(ups) != 0 || m.SourceID != tc.sourceID {
					t.Fatalf("%d message_updated, source_id %q: the channel must leave the message alone", len(ups), m.SourceID)
				}
				return
			}
			if len(ups) != 1 {
				t.Fatalf("%d message_updated, want 1", len(ups))
			}
			src, _ := ups[0]["source_id"].(string)
			if !tc.updated.MatchString(src) || src != m.SourceID {
				t.Fatalf("message_updated source_id %q, stored %q, want %v", src, m.SourceID, tc.updated)
			}
			if ups[0]["id"] != float64(id) || obj2(t, ups[0], "conversation")["channel"] != tc.channel {
				t.Fatalf("message_updated %v", ups[0])
			}
		})
	}
}

// TestChatwootWhatsappWindow: outside the 24 h window WhatsApp falls back to
// a template, and with none given the message fails
// (Whatsapp::SendOnWhatsappService#send_template_message).
func TestChatwootWhatsappWindow(t *testing.T) {
	var clockMu sync.Mutex
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return now
	}
	advance := func(d time.Duration) {
		clockMu.Lock()
		defer clockMu.Unlock()
		now = now.Add(d)
	}
	c, srv, _ := newTestChatwoot(t, ChatwootOptions{Now: clock})
	c.AddInboxChannel(4, "WhatsApp", "", ChannelWhatsapp)
	conv := c.NewConversation(4, Contact{Name: "Jane"}, "pending")

	post := func() int64 {
		status, b := cwDo(t, srv, http.MethodPost, convPath(conv, "/messages"), botToken, map[string]any{"content": "hi"})
		if status != 200 {
			t.Fatalf("post: %d %s", status, b)
		}
		return int64(decodeJSON(t, b)["id"].(float64))
	}
	waitUpdate := func(id int64) map[string]any {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := c.WaitFor(ctx, func() bool { return len(messageUpdates(t, c, id)) == 1 }); err != nil {
			t.Fatalf("no message_updated for %d: %v", id, err)
		}
		return messageUpdates(t, c, id)[0]
	}

	first := post() // the customer never wrote: no window
	up := waitUpdate(first)
	if up["content_attributes"].(map[string]any)["external_error"] != whatsappWindowError || obj2(t, up, "conversation")["can_reply"] != false {
		t.Fatalf("message_updated %v", up)
	}
	if saw := c.CustomerSaw(conv); len(saw) != 0 {
		t.Fatalf("customer saw %+v", saw)
	}

	if _, err := c.CustomerSays(t.Context(), conv, "hello"); err != nil {
		t.Fatal(err)
	}
	second := post()
	if up := waitUpdate(second); up["source_id"] == nil || obj2(t, up, "conversation")["can_reply"] != true {
		t.Fatalf("inside the window: %v", up)
	}
	advance(24*time.Hour + time.Second)
	third := post()
	waitUpdate(third)
	got := map[int64]Message{}
	for _, m := range c.Messages(conv) {
		got[m.ID] = m
	}
	if got[first].Status != "failed" || got[second].Status != "sent" || got[third].Status != "failed" {
		t.Fatalf("statuses %s %s %s, want failed sent failed", got[first].Status, got[second].Status, got[third].Status)
	}
	if saw := c.CustomerSaw(conv); len(saw) != 1 || saw[0].ID != second {
		t.Fatalf("customer saw %+v, want only %d", saw, second)
	}
}

// TestChatwootChannelPayloads: the channel shapes what the payloads say,
// checked against the real WhatsApp capture.
func TestChatwootChannelPayloads(t *testing.T) {
	c, srv, _ := newTestChatwoot(t, ChatwootOptions{})
	c.AddInboxChannel(17, "WhatsApp", "https://bridge.example/webhooks/chatwoot", ChannelWhatsapp)
	conv := c.NewConversation(17, Contact{Name: "Ariel"}, "pending")

	d, err := c.CustomerSays(t.Context(), conv, "hola")
	if err != nil {
		t.Fatal(err)
	}
	got := decodeJSON(t, d.Body)
	want := decodeJSON(t, mustRead(t, "../../testdata/corpus/chatwoot/captured_message_created_incoming_contact_whatsapp.json"))
	compareShape(t, got, want, append(messageShapePaths, []string{"sender"}, []string{"conversation", "messages", "0", "sender"}))
	cv := obj2(t, got, "conversation")
	phone, _ := got["sender"].(map[string]any)["phone_number"].(string)
	ci := obj2(t, got, "conversation", "contact_inbox")
	if cv["channel"] != "Channel::Whatsapp" || cv["can_reply"] != true || !strings.HasPrefix(phone, "+") ||
		ci["source_id"] != strings.TrimPrefix(phone, "+") || !strings.HasPrefix(got["source_id"].(string), "wamid.") {
		t.Fatalf("channel %v can_reply %v phone %q contact_inbox.source_id %v source_id %v",
			cv["channel"], cv["can_reply"], phone, ci["source_id"], got["source_id"])
	}
	if len(cv["additional_attributes"].(map[string]any)) != 0 {
		t.Errorf("additional_attributes %v, want {} as in the capture", cv["additional_attributes"])
	}

	t.Run("IncomingViaAPIRefused", func(t *testing.T) {
		status, b := cwDo(t, srv, http.MethodPost, convPath(conv, "/messages"), botToken, map[string]any{"content": "x", "message_type": "incoming"})
		if status != 422 || string(b) != `{"error":"Incoming messages are only allowed in Api inboxes"}` {
			t.Fatalf("got %d %s", status, b)
		}
	})
	t.Run("Inbox", func(t *testing.T) {
		status, b := cwDo(t, srv, http.MethodGet, "/api/v1/accounts/1/inboxes/17", userToken, nil)
		in := decodeJSON(t, b)
		if _, api := in["webhook_url"]; status != 200 || in["channel_type"] != "Channel::Whatsapp" || api || in["provider"] != "whatsapp_cloud" {
			t.Fatalf("got %d %s", status, b)
		}
	})
	others := []struct {
		channel  string
		sourceID *regexp.Regexp
		attr     string // a key of additional_attributes, "" = none
	}{
		{ChannelAPI, regexp.MustCompile(`^[0-9a-f-]{36}$`), ""},
		{ChannelWebWidget, regexp.MustCompile(`^[0-9a-f-]{36}$`), "browser"},
		{ChannelEmail, regexp.MustCompile(`^customer\d+@example\.com$`), "mail_subject"},
		{ChannelTelegram, regexp.MustCompile(`^[0-9]+$`), "chat_id"},
		{ChannelTwilio, regexp.MustCompile(`^\+1555[0-9]{7}$`), "from_country"},
		{ChannelLine, regexp.MustCompile(`^U[0-9a-f]{32}$`), "social_line_user_id"},
		{ChannelTwitter, regexp.MustCompile(`^[0-9]+$`), "type"},
	}
	for i, tc := range others {
		t.Run(tc.channel, func(t *testing.T) {
			inbox := int64(20 + i)
			c.AddInboxChannel(inbox, tc.channel, "", tc.channel)
			conv := c.NewConversation(inbox, Contact{}, "pending")
			d, err := c.CustomerSays(t.Context(), conv, "hi")
			if err != nil {
				t.Fatal(err)
			}
			got := decodeJSON(t, d.Body)
			cv := obj2(t, got, "conversation")
			src, _ := obj2(t, got, "conversation", "contact_inbox")["source_id"].(string)
			attrs := cv["additional_attributes"].(map[string]any)
			if cv["channel"] != tc.channel || !tc.sourceID.MatchString(src) {
				t.Fatalf("channel %v contact_inbox.source_id %q", cv["channel"], src)
			}
			if _, ok := attrs[tc.attr]; tc.attr != "" && !ok {
				t.Fatalf("additional_attributes %v lack %s", attrs, tc.attr)
			}
			if external := tc.channel != ChannelAPI && tc.channel != ChannelWebWidget; external != (got["source_id"] != nil) {
				t.Fatalf("incoming source_id %v on %s", got["source_id"], tc.channel)
			}
		})
	}
}
