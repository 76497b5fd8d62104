package simulate

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func BenchmarkCustomerSays(b *testing.B) {
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer hooks.Close()
	c := NewChatwoot(ChatwootOptions{BotToken: botToken, WebhookURL: hooks.URL, WebhookSecret: "s3cr3t"})
	defer c.Close()
	c.AddInbox(1, "Website", "https://bridge.example/webhooks/chatwoot")
	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.CustomerSays(b.Context(), conv, "Where is my order?"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPostMessage(b *testing.B) {
	c := NewChatwoot(ChatwootOptions{BotToken: botToken, NoEcho: true})
	defer c.Close()
	srv := httptest.NewServer(c)
	defer srv.Close()
	conv := c.NewConversation(1, Contact{Name: "Jane"}, "pending")
	url := srv.URL + "/api/v1/accounts/1/conversations/" + itoa(conv) + "/messages"
	body := []byte(`{"content":"Here is your answer","message_type":"outgoing","private":false}`)
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequestWithContext(b.Context(), http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("api_access_token", botToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

func BenchmarkDifyStream(b *testing.B) {
	d := NewDify(DifyApp{Key: chatKey, Mode: ModeChat})
	defer d.Close()
	srv := httptest.NewServer(d)
	defer srv.Close()
	body := []byte(`{"query":"Where is my order number 42?","user":"u1","inputs":{},"response_mode":"streaming","conversation_id":""}`)
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequestWithContext(b.Context(), http.MethodPost, srv.URL+"/v1/chat-messages", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+chatKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
