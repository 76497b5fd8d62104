package simulate

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestVoiceNoteMatchesTheCorpus: the fake's audio attachment has the keys
// of Attachment#push_event_data as the upstream example shows them
// (testdata/corpus/upstream-2026-11), its data_url serves the file through
// the blob redirect, and its transcription arrives as message_updated.
func TestVoiceNoteMatchesTheCorpus(t *testing.T) {
	c, srv, _ := newTestChatwoot(t, ChatwootOptions{})
	c.SetFrontendURL(srv.URL)
	c.AddInboxChannel(7, "WhatsApp", "", ChannelWhatsapp)
	conv := c.NewConversation(7, Contact{Name: "Maria"}, "pending")
	if _, err := c.CustomerSends(t.Context(), conv, "", Attachment{FileType: "audio", Name: "audio.ogg",
		ContentType: "audio/ogg", Size: 14237, Speech: "where is my order"}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../../testdata/corpus/upstream-2026-11/cw_code_message_created_whatsapp_voice_note.json")
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	ds := c.Deliveries()
	var got map[string]any
	if err := json.Unmarshal(ds[len(ds)-1].Body, &got); err != nil {
		t.Fatal(err)
	}
	ga, wa := obj2(t, got, "attachments", "0"), obj2(t, want, "attachments", "0")
	if extra, missing := keyDrift(ga, wa); len(extra)+len(missing) > 0 {
		t.Errorf("attachment keys: extra %v, missing %v", extra, missing)
	}
	if ga["transcribed_text"] != "" || ga["content_type"] != "audio/ogg" || ga["file_size"] != float64(14237) {
		t.Errorf("attachment %v", ga)
	}
	resp, err := srv.Client().Get(ga["data_url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "audio/ogg" || len(body) != 14237 ||
		!strings.HasPrefix(string(body), audioMagic+"where is my order\n") || resp.Request.URL.Path == "" ||
		!strings.Contains(resp.Request.URL.Path, "/rails/active_storage/disk/") {
		t.Errorf("download: %d %s %d bytes via %s", resp.StatusCode, resp.Header.Get("Content-Type"), len(body), resp.Request.URL)
	}
	id := int64(got["id"].(float64))
	if _, err := c.Transcribe(t.Context(), id, "where is my order"); err != nil {
		t.Fatal(err)
	}
	ds = c.Deliveries()
	var upd map[string]any
	if err := json.Unmarshal(ds[len(ds)-1].Body, &upd); err != nil {
		t.Fatal(err)
	}
	if upd["event"] != "message_updated" || obj2(t, upd, "attachments", "0")["transcribed_text"] != "where is my order" {
		t.Errorf("update %v", upd["attachments"])
	}
}

// TestLongTextIsRefusedByTheProvider: a message over the channel's limit
// fails like a provider refusal: status failed, external_error, and
// message_updated.
func TestLongTextIsRefusedByTheProvider(t *testing.T) {
	c, srv, _ := newTestChatwoot(t, ChatwootOptions{EchoDelay: -1})
	c.AddInboxChannel(7, "WhatsApp", "", ChannelWhatsapp)
	conv := c.NewConversation(7, Contact{Name: "Maria"}, "pending")
	if _, err := c.CustomerSays(t.Context(), conv, "hi"); err != nil {
		t.Fatal(err)
	}
	if st, b := cwDo(t, srv, "POST", convPath(conv, "/messages"), botToken, map[string]any{"content": strings.Repeat("x", 4097)}); st != 200 {
		t.Fatalf("post: %d %s", st, b)
	}
	refused := func() bool {
		for _, d := range c.Deliveries() {
			if d.Event == "message_updated" && strings.Contains(string(d.Body), "must be at most 4096 characters") {
				return true
			}
		}
		return false
	}
	if err := c.WaitFor(t.Context(), refused); err != nil {
		t.Fatal("no message_updated with the refusal")
	}
	msgs := c.Messages(conv)
	if m := msgs[len(msgs)-1]; m.Status != "failed" || m.Delivered || m.ContentAttributes["external_error"] == nil {
		t.Errorf("message %+v", m)
	}
}
