package formdata

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"strings"
	"testing"
)

func TestBodyParsesAndHasExactLength(t *testing.T) {
	b, err := New([]Field{{"content", "Here you go"}, {"private", "false"}},
		[]File{{Field: "attachments[]", Name: `a"b.png`, ContentType: "image/png", Body: strings.NewReader("PNG"), Size: 3},
			{Field: "attachments[]", Name: "c.pdf", Body: strings.NewReader("%PDF"), Size: 4}})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(b.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(raw)) != b.Length {
		t.Fatalf("length %d, body %d", b.Length, len(raw))
	}
	_, params, _ := mime.ParseMediaType(b.ContentType)
	form, err := multipart.NewReader(bytes.NewReader(raw), params["boundary"]).ReadForm(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if form.Value["content"][0] != "Here you go" || len(form.File["attachments[]"]) != 2 {
		t.Fatalf("form %+v", form)
	}
	f := form.File["attachments[]"][0]
	if f.Filename != `a"b.png` || f.Header.Get("Content-Type") != "image/png" || f.Size != 3 {
		t.Fatalf("file %+v", f)
	}
	if form.File["attachments[]"][1].Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatal("default content type")
	}
}

func TestUnknownSizeMeansNoLength(t *testing.T) {
	b, err := New(nil, []File{{Field: "file", Name: "x", Body: strings.NewReader("x"), Size: -1}})
	if err != nil || b.Length != -1 {
		t.Fatalf("%v %d", err, b.Length)
	}
}
