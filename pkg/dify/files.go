package dify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/bridge-dev/bridge/internal/formdata"
)

// Dify file types (api/core/file/enums.py FileType).
const (
	FileImage    = "image"
	FileDocument = "document"
	FileAudio    = "audio"
	FileVideo    = "video"
	FileCustom   = "custom"
)

// Transfer methods of a file passed with a chat message.
const (
	TransferRemoteURL = "remote_url"
	TransferLocalFile = "local_file"
)

// documentExtensions are the extensions Dify reads as documents
// (api/constants/__init__.py DOCUMENT_EXTENSIONS, with the unstructured
// extras). A file of another extension goes as "custom", which the app
// must allow by extension.
var documentExtensions = map[string]bool{
	"txt": true, "markdown": true, "md": true, "mdx": true, "pdf": true, "html": true, "htm": true,
	"xlsx": true, "xls": true, "vtt": true, "properties": true, "doc": true, "docx": true, "csv": true,
	"eml": true, "msg": true, "pptx": true, "xml": true, "epub": true, "ppt": true,
}

// IsDocument reports whether Dify treats a file with this extension (no dot) as a document.
func IsDocument(ext string) bool {
	return documentExtensions[strings.ToLower(strings.TrimPrefix(ext, "."))]
}

// UploadedFile is the answer to POST /files/upload (api/fields/file_fields.py).
type UploadedFile struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	Extension string `json:"extension"`
	MimeType  string `json:"mime_type"`
}

// FilePart is a file streamed as the one part of a multipart request.
type FilePart struct {
	Name        string    // file name, with its extension: Dify derives the extension from it
	ContentType string    // the part's Content-Type; Dify checks audio by it
	Body        io.Reader // read once, as the request is sent
	// Size is the body's length, -1 if unknown. When known the request has a
	// Content-Length; otherwise it is sent chunked.
	Size int64
}

// Upload streams a file to POST /files/upload (multipart: one part "file" and the form field
// "user"; api/controllers/service_api/app/file.py) and returns Dify's record of it, whose ID
// goes into a chat message as upload_file_id with transfer_method local_file. Errors: 413
// file_too_large, 415 unsupported_file_type, 400 file_extension_blocked (*APIError).
func (c *Client) Upload(ctx context.Context, user string, f FilePart) (*UploadedFile, error) {
	resp, err := c.doMultipart(ctx, "/files/upload", user, f)
	if err != nil {
		return nil, fmt.Errorf("dify upload %s: %w", f.Name, err)
	}
	defer resp.Body.Close()
	var out UploadedFile
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(&out); err != nil {
		return nil, fmt.Errorf("dify upload %s: decode answer: %w", f.Name, err)
	}
	if out.ID == "" {
		return nil, fmt.Errorf("dify upload %s: the answer has no file id", f.Name)
	}
	return &out, nil
}

// AudioToText streams a recording to POST /audio-to-text and returns the text. Dify accepts it
// only when the app has speech to text on, and only by the part's Content-Type: audio/mp3,
// audio/mp4, audio/mpeg, audio/mpga, audio/m4a, audio/wav, audio/webm, audio/amr, up to 30 MB
// (api/services/audio_service.py ALLOWED_EXTENSIONS, FILE_SIZE). Anything else is 415
// unsupported_audio_type, among them WhatsApp's audio/ogg (Opus) voice notes.
func (c *Client) AudioToText(ctx context.Context, user string, f FilePart) (string, error) {
	resp, err := c.doMultipart(ctx, "/audio-to-text", user, f)
	if err != nil {
		return "", fmt.Errorf("dify audio to text: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		Text flexString `json:"text"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody)).Decode(&out); err != nil {
		return "", fmt.Errorf("dify audio to text: decode answer: %w", err)
	}
	return string(out.Text), nil
}

// AudioTypes are the Content-Types POST /audio-to-text accepts (see AudioToText).
var AudioTypes = []string{"audio/mp3", "audio/mp4", "audio/mpeg", "audio/mpga", "audio/m4a", "audio/wav", "audio/webm", "audio/amr"}

// AudioAccepted reports whether Dify's speech to text takes audio of this Content-Type.
func AudioAccepted(contentType string) bool {
	ct := strings.ToLower(strings.TrimSpace(contentType))
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = strings.TrimSpace(ct[:i])
	}
	for _, t := range AudioTypes {
		if ct == t {
			return true
		}
	}
	return false
}

// Rating values of Feedback.
const (
	RatingLike    = "like"
	RatingDislike = "dislike"
)

// Feedback sends the end user's rating of one answer (POST /messages/{id}/feedbacks with
// rating, content and user; api/controllers/service_api/app/message.py). The message must
// belong to user, otherwise Dify answers 404 "Message Not Exists.".
func (c *Client) Feedback(ctx context.Context, messageID, user, rating, content string) error {
	if messageID == "" {
		return errors.New("dify feedback: message id is required")
	}
	body := map[string]any{"rating": rating, "user": user, "content": content}
	resp, err := c.do(ctx, http.MethodPost, "/messages/"+url.PathEscape(messageID)+"/feedbacks", body, true)
	if err != nil {
		return fmt.Errorf("dify feedback on message %s: %w", messageID, err)
	}
	drain(resp)
	return nil
}

// doMultipart POSTs one file part plus the "user" field; the file streams as the request is
// sent, so it is never held in memory.
func (c *Client) doMultipart(ctx context.Context, path, user string, f FilePart) (*http.Response, error) {
	if strings.ContainsFunc(c.key, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return nil, errors.New("api key contains spaces or control characters")
	}
	body, err := formdata.New([]formdata.Field{{Name: "user", Value: user}},
		[]formdata.File{{Field: "file", Name: f.Name, ContentType: f.ContentType, Body: f.Body, Size: f.Size}})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url(path), body.Reader)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.ContentLength = body.Length
	req.Header.Set("Content-Type", body.ContentType)
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody)) // a cut body still has a status
		return nil, parseErrorBody(resp.StatusCode, b)
	}
	return resp, nil
}
