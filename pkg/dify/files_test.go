package dify

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
)

func TestFileUploadAccepts(t *testing.T) {
	newer := FileUpload{Enabled: true, Types: []string{FileImage, FileDocument, FileCustom}, Extensions: []string{".ZIP"},
		Methods: []string{TransferLocalFile, TransferRemoteURL}, ImageEnabled: true, ImageMethods: []string{TransferLocalFile}}
	legacy := FileUpload{ImageEnabled: true, ImageMethods: []string{TransferRemoteURL}}
	off := FileUpload{}
	for _, tc := range []struct {
		name             string
		f                FileUpload
		typ, ext, method string
		want             bool
	}{
		{"image by upload", newer, FileImage, "png", TransferLocalFile, true},
		{"image by url, image block says upload only", newer, FileImage, "png", TransferRemoteURL, false},
		{"document", newer, FileDocument, "pdf", TransferRemoteURL, true},
		{"audio not allowed", newer, FileAudio, "ogg", TransferLocalFile, false},
		{"custom zip, any case and dot", newer, FileCustom, "zip", TransferLocalFile, true},
		{"custom exe", newer, FileCustom, ".exe", TransferLocalFile, false},
		{"legacy image by url", legacy, FileImage, "jpg", TransferRemoteURL, true},
		{"legacy image by upload", legacy, FileImage, "jpg", TransferLocalFile, false},
		{"legacy document", legacy, FileDocument, "pdf", TransferRemoteURL, false},
		{"off", off, FileImage, "png", TransferRemoteURL, false},
	} {
		if got := tc.f.Accepts(tc.typ, tc.ext, tc.method); got != tc.want {
			t.Errorf("%s: Accepts = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := strings.Join(newer.AcceptedTypes(), ", "); got != "image, document, custom (.ZIP)" {
		t.Errorf("AcceptedTypes = %q", got)
	}
}

func TestParametersFileUploadAndSpeech(t *testing.T) {
	_, c := newFake(t, map[string]http.HandlerFunc{"GET /v1/parameters": func(w http.ResponseWriter, r *http.Request) {
		write(w, `{"user_input_form": [], "speech_to_text": {"enabled": true},
			"file_upload": {"enabled": true, "allowed_file_types": ["image", "document"], "allowed_file_extensions": [],
			  "allowed_file_upload_methods": ["local_file"], "number_limits": "4",
			  "image": {"enabled": true, "number_limits": 2, "transfer_methods": ["local_file"]}},
			"system_parameters": {"image_file_size_limit": 10, "file_size_limit": 15, "audio_file_size_limit": 50, "video_file_size_limit": 100}}`)
	}})
	p, err := c.Parameters(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !p.SpeechToText || p.FileUpload.Limit != 4 || p.FileUpload.ImageLimit != 2 || !p.FileUploadImage ||
		p.FileUpload.Accepts(FileDocument, "pdf", TransferRemoteURL) || !p.FileUpload.Accepts(FileDocument, "pdf", TransferLocalFile) {
		t.Errorf("parameters = %+v", p)
	}
	if p.Limits.For(FileDocument) != 15<<20 || p.Limits.For(FileImage) != 10<<20 {
		t.Errorf("limits = %+v", p.Limits)
	}
}

// readUpload checks a multipart upload as Dify's file controllers read it:
// one part "file", a form field "user".
func readUpload(t *testing.T, r *http.Request) (user, name, ctype, sum string, size int64) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		t.Errorf("content type %q", r.Header.Get("Content-Type"))
		return
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Errorf("multipart: %v", err)
			return
		}
		switch p.FormName() {
		case "user":
			b, _ := io.ReadAll(p)
			user = string(b)
		case "file":
			h := sha256.New()
			size, _ = io.Copy(h, p)
			name, ctype, sum = p.FileName(), p.Header.Get("Content-Type"), hex.EncodeToString(h.Sum(nil))
		}
	}
}

func TestUploadStreamsWithLength(t *testing.T) {
	content := strings.Repeat("%PDF-1.7 data ", 1000)
	want := sha256.Sum256([]byte(content))
	var gotLen int64
	_, c := newFake(t, map[string]http.HandlerFunc{"POST /v1/files/upload": func(w http.ResponseWriter, r *http.Request) {
		gotLen = r.ContentLength
		user, name, ct, sum, size := readUpload(t, r)
		if user != "chatwoot-1-5" || name != `in"voice.pdf` || ct != "application/pdf" || sum != hex.EncodeToString(want[:]) || size != int64(len(content)) {
			t.Errorf("upload %q %q %q %s %d", user, name, ct, sum, size)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id": "5b0a7c1e-0000-4000-8000-000000000001", "name": "invoice.pdf", "size": 14000,
			"extension": "pdf", "mime_type": "application/pdf", "created_by": "x", "created_at": 1}`)
	}})
	up, err := c.Upload(t.Context(), "chatwoot-1-5", FilePart{Name: `in"voice.pdf`, ContentType: "application/pdf",
		Body: strings.NewReader(content), Size: int64(len(content))})
	if err != nil {
		t.Fatal(err)
	}
	if up.ID != "5b0a7c1e-0000-4000-8000-000000000001" || up.MimeType != "application/pdf" {
		t.Errorf("uploaded = %+v", up)
	}
	if gotLen <= int64(len(content)) {
		t.Errorf("Content-Length %d: the size was known and should be sent", gotLen)
	}
	// Unknown size: sent chunked.
	_, err = c.Upload(t.Context(), "chatwoot-1-5", FilePart{Name: `in"voice.pdf`, ContentType: "application/pdf",
		Body: strings.NewReader(content), Size: -1})
	if err != nil || gotLen != -1 {
		t.Errorf("chunked: %v, length %d", err, gotLen)
	}
}

func TestUploadErrors(t *testing.T) {
	_, c := newFake(t, map[string]http.HandlerFunc{"POST /v1/files/upload": serveError(413,
		`{"code": "file_too_large", "message": "File size exceeded. 15.00 MB > 15 MB", "status": 413}`)})
	_, err := c.Upload(t.Context(), "u", FilePart{Name: "big.pdf", Body: strings.NewReader("x"), Size: 1})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 413 || ae.Code != "file_too_large" {
		t.Fatalf("err = %v", err)
	}
}

func TestAudioToText(t *testing.T) {
	_, c := newFake(t, map[string]http.HandlerFunc{"POST /v1/audio-to-text": func(w http.ResponseWriter, r *http.Request) {
		user, _, ct, _, _ := readUpload(t, r)
		if user != "u" {
			t.Errorf("user %q", user)
		}
		if !AudioAccepted(ct) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(415)
			_, _ = io.WriteString(w, `{"code": "unsupported_audio_type", "message": "Audio type not allowed.", "status": 415}`)
			return
		}
		write(w, `{"text": "where is my order"}`)
	}})
	text, err := c.AudioToText(t.Context(), "u", FilePart{Name: "a.m4a", ContentType: "audio/m4a", Body: strings.NewReader("aud"), Size: 3})
	if err != nil || text != "where is my order" {
		t.Fatalf("%q %v", text, err)
	}
	_, err = c.AudioToText(t.Context(), "u", FilePart{Name: "a.ogg", ContentType: "audio/ogg", Body: strings.NewReader("aud"), Size: 3})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 415 || ae.Code != "unsupported_audio_type" {
		t.Fatalf("ogg: %v", err)
	}
	if AudioAccepted("audio/ogg; codecs=opus") || !AudioAccepted("Audio/MPEG") {
		t.Error("AudioAccepted")
	}
}

func TestFeedback(t *testing.T) {
	f, c := newFake(t, map[string]http.HandlerFunc{"POST /v1/messages/m-1/feedbacks": func(w http.ResponseWriter, r *http.Request) {
		write(w, `{"result": "success"}`)
	}})
	if err := c.Feedback(t.Context(), "m-1", "u", RatingDislike, "too slow"); err != nil {
		t.Fatal(err)
	}
	r := f.requests()
	if len(r) != 1 || r[0].Body["rating"] != "dislike" || r[0].Body["content"] != "too slow" || r[0].Body["user"] != "u" {
		t.Errorf("requests = %+v", r)
	}
}

func TestDocumentExtensions(t *testing.T) {
	if !IsDocument("PDF") || !IsDocument(".docx") || IsDocument("zip") || IsDocument("") {
		t.Error("IsDocument")
	}
}
