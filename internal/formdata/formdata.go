// Package formdata builds multipart/form-data bodies that stream their
// files: the body is a reader that yields the fields, then each file's
// bytes as the request is sent, so no file is ever held in memory.
package formdata

import (
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
	"strings"
)

// Field is a plain form field.
type Field struct{ Name, Value string }

// File is a file part.
type File struct {
	Field       string // form field name, e.g. "file" or "attachments[]"
	Name        string // file name
	ContentType string // "" means application/octet-stream
	Body        io.Reader
	Size        int64 // -1 when unknown
}

// Body is a multipart body ready to send.
type Body struct {
	ContentType string    // multipart/form-data; boundary=...
	Reader      io.Reader // the whole body, read once
	// Length is the exact size of the body, or -1 when a file's size is
	// unknown (the request is then sent chunked).
	Length int64
}

var nameEscaper = strings.NewReplacer("\\", "\\\\", `"`, "\\\"", "\r", "", "\n", "")

// New lays out fields, then files, in that order.
func New(fields []Field, files []File) (*Body, error) {
	var frame strings.Builder
	mw := multipart.NewWriter(&frame)
	for _, f := range fields {
		if err := mw.WriteField(f.Name, f.Value); err != nil {
			return nil, fmt.Errorf("form field %s: %w", f.Name, err)
		}
	}
	var parts []io.Reader
	length := int64(0)
	for _, f := range files {
		h := make(textproto.MIMEHeader)
		name := f.Name
		if name == "" {
			name = "file"
		}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="%s"; filename="%s"`, nameEscaper.Replace(f.Field), nameEscaper.Replace(name)))
		ct := f.ContentType
		if ct == "" {
			ct = "application/octet-stream"
		}
		h.Set("Content-Type", ct)
		if _, err := mw.CreatePart(h); err != nil {
			return nil, fmt.Errorf("form file %s: %w", name, err)
		}
		head := frame.String()
		frame.Reset()
		parts = append(parts, strings.NewReader(head), f.Body)
		if length >= 0 && f.Size >= 0 {
			length += int64(len(head)) + f.Size
		} else {
			length = -1
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	tail := frame.String()
	parts = append(parts, strings.NewReader(tail))
	if length >= 0 {
		length += int64(len(tail))
	}
	return &Body{ContentType: mw.FormDataContentType(), Reader: io.MultiReader(parts...), Length: length}, nil
}
