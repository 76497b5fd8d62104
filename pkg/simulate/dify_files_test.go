package simulate

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func multipartBody(t *testing.T, user, name, ctype string, content []byte) (string, *bytes.Buffer) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	_ = mw.WriteField("user", user)
	h := make(map[string][]string)
	h["Content-Disposition"] = []string{`form-data; name="file"; filename="` + name + `"`}
	h["Content-Type"] = []string{ctype}
	w, err := mw.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(content)
	_ = mw.Close()
	return mw.FormDataContentType(), &b
}

func difyPost(t *testing.T, srv *httptest.Server, path, key, ctype string, body io.Reader) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+path, body)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", ctype)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestDifyAudioUploadAndFeedback: /audio-to-text refuses WhatsApp's
// audio/ogg with 415 and hears a recording of an accepted type; uploads are
// 201 with a file id; feedback needs the message's own user.
func TestDifyAudioUploadAndFeedback(t *testing.T) {
	const key = "app-simfiles0000000000001"
	d := NewDify(DifyApp{Key: key, Mode: ModeChat, SpeechToText: true})
	srv := httptest.NewServer(d)
	defer srv.Close()
	defer d.Close()
	speech := []byte(audioMagic + "where is my order\n" + strings.Repeat("x", 100))
	ct, body := multipartBody(t, "u1", "note.ogg", "audio/ogg", speech)
	if st, out := difyPost(t, srv, "/v1/audio-to-text", key, ct, body); st != 415 || out["code"] != "unsupported_audio_type" {
		t.Errorf("ogg: %d %v", st, out)
	}
	ct, body = multipartBody(t, "u1", "note.m4a", "audio/m4a", speech)
	if st, out := difyPost(t, srv, "/v1/audio-to-text", key, ct, body); st != 200 || out["text"] != "where is my order" {
		t.Errorf("m4a: %d %v", st, out)
	}
	ct, body = multipartBody(t, "u1", "photo.png", "image/png", []byte("PNG"))
	st, out := difyPost(t, srv, "/v1/files/upload", key, ct, body)
	if st != 201 || out["id"] == "" || out["extension"] != "png" || out["size"] != float64(3) {
		t.Errorf("upload: %d %v", st, out)
	}
	if ups := d.Uploads(); len(ups) != 1 || ups[0].User != "u1" {
		t.Errorf("uploads %+v", ups)
	}
	// An answer, so there is a message to rate.
	st, out = difyPost(t, srv, "/v1/chat-messages", key, "application/json",
		strings.NewReader(`{"query":"hi","inputs":{},"user":"u1","response_mode":"blocking"}`))
	if st != 200 {
		t.Fatalf("chat: %d %v", st, out)
	}
	msg := out["message_id"].(string)
	if st, _ := difyPost(t, srv, "/v1/messages/"+msg+"/feedbacks", key, "application/json",
		strings.NewReader(`{"rating":"like","user":"someone-else"}`)); st != 404 {
		t.Errorf("feedback by another user: %d", st)
	}
	if st, out := difyPost(t, srv, "/v1/messages/"+msg+"/feedbacks", key, "application/json",
		strings.NewReader(`{"rating":"dislike","user":"u1","content":"wrong"}`)); st != 200 || out["result"] != "success" {
		t.Errorf("feedback: %d %v", st, out)
	}
	if fb := d.Feedbacks(); len(fb) != 1 || fb[0].Rating != "dislike" || fb[0].Content != "wrong" {
		t.Errorf("feedbacks %+v", fb)
	}
}
