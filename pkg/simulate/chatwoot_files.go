package simulate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// Attachment is something a customer sends with a message. Files (image,
// audio, video, file) are served by the fake with the content type and
// size given, through Chatwoot's redirect to its storage service; the other
// kinds (location, contact, fallback, share, story_mention...) carry only
// their fields, as Attachment#push_event_data renders them
// (app/models/attachment.rb).
type Attachment struct {
	// FileType is Chatwoot's file_type; "" renders the entry as null, as
	// Chatwoot does for an attachment whose file_type is nil.
	FileType    string
	Name        string // file name with its extension; made up when empty
	ContentType string // e.g. "image/png", "audio/ogg"
	// Data is the exact content; when nil, Size bytes are generated (a
	// 20 MB file costs the fake no memory).
	Data []byte
	Size int64
	// Speech is what an audio recording says: the fake Dify's speech to
	// text hears it, and TranscribeAfter transcribes it.
	Speech string
	// Transcript is an audio attachment's transcribed_text at creation
	// ("" until Chatwoot's transcription fills it, as on a real WhatsApp
	// voice note).
	Transcript string
	// Location, contact and fallback fields.
	Lat, Long float64
	Title     string
	External  string
}

type cwAttachment struct {
	id         int64
	att        Attachment
	token      string
	transcript string
	// Posted files are not kept: only their size and digest.
	posted bool
	sha    string
}

// audioMagic starts the content of a simulated recording: the fake Dify's
// speech to text reads the words after it.
const audioMagic = "SIMAUDIO\n"

// AttachmentContent returns the bytes the fake serves for a file
// attachment, generated as they are read.
func AttachmentContent(a Attachment) io.Reader {
	if a.Data != nil {
		return strings.NewReader(string(a.Data))
	}
	head := ""
	if a.Speech != "" {
		head = audioMagic + a.Speech + "\n"
	}
	size := a.Size
	if size <= 0 {
		size = 2048
	}
	if int64(len(head)) > size {
		size = int64(len(head))
	}
	return io.MultiReader(strings.NewReader(head), &pattern{left: size - int64(len(head))})
}

// pattern yields n predictable bytes without holding them.
type pattern struct{ left, off int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	for i := range b {
		b[i] = byte('a' + (p.off+int64(i))%26)
	}
	p.off += int64(len(b))
	p.left -= int64(len(b))
	return len(b), nil
}

func (a *Attachment) size() int64 {
	if a.Data != nil {
		return int64(len(a.Data))
	}
	n := a.Size
	if n <= 0 {
		n = 2048
	}
	if h := int64(len(audioMagic) + len(a.Speech) + 1); a.Speech != "" && h > n {
		n = h
	}
	return n
}

func isFileType(t string) bool {
	switch t {
	case "image", "audio", "video", "file", "share", "story_mention", "ig_reel", "ig_post", "ig_story":
		return true
	}
	return false
}

// fileTypeFor is Chatwoot's file_type for an uploaded file
// (Messages::MessageBuilder#file_type: image, audio, video or file).
func fileTypeFor(contentType string) string {
	for _, t := range []string{"image", "audio", "video"} {
		if strings.HasPrefix(contentType, t+"/") {
			return t
		}
	}
	return "file"
}

// SetFrontendURL sets FRONTEND_URL, under which attachments' data_url
// live (set it to the fake's own server URL).
func (c *Chatwoot) SetFrontendURL(u string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frontend = strings.TrimRight(u, "/")
}

// SetStorageURL makes blob redirects point at a separate storage service
// (serve StorageHandler there) instead of the fake itself, as an S3 or
// MinIO set-up does; target, when set, replaces the redirect's URL
// entirely (a test of where bridge follows it).
func (c *Chatwoot) SetStorageURL(base, target string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.storage, c.storageTarget = strings.TrimRight(base, "/"), target
}

// StorageHandler serves attachment content at /disk/<token>/<name>, as
// ActiveStorage's disk service or a bucket does.
func (c *Chatwoot) StorageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.URL.Path, "/rails/active_storage")
		if !strings.HasPrefix(p, "/disk/") {
			http.NotFound(w, r)
			return
		}
		c.serveContent(w, r, strings.SplitN(strings.TrimPrefix(p, "/disk/"), "/", 2)[0])
	})
}

// serveBlob is ActiveStorage's blob redirect: /rails/active_storage/blobs/
// redirect/<signed id>/<name> answers 302 to the storage service.
func (c *Chatwoot) serveBlob(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	seq := c.calls.push(Call{Method: r.Method, Path: r.URL.Path, At: c.opts.Now()})
	fault, hasFault := c.takeFaultLocked("file")
	storage, target := c.storage, c.storageTarget
	if storage == "" {
		// The disk service signs URLs for the host the request came to
		// (ActiveStorage::Current.url_options from the request).
		storage = "http://" + r.Host + "/rails/active_storage"
	}
	c.changed.broadcast()
	c.mu.Unlock()
	status := http.StatusFound
	defer func() {
		c.mu.Lock()
		if call := c.calls.at(seq); call != nil {
			call.Status = status
		}
		c.changed.broadcast()
		c.mu.Unlock()
	}()
	if hasFault {
		if !sleep(r.Context(), fault.Delay) || fault.Drop {
			status = 0
			dropConnection(w)
			return
		}
		if fault.Status > 0 {
			status = fault.Status
			http.Error(w, http.StatusText(fault.Status), fault.Status)
			return
		}
	}
	p := strings.TrimPrefix(r.URL.Path, "/rails/active_storage/")
	switch {
	case strings.HasPrefix(p, "blobs/redirect/"):
		rest := strings.SplitN(strings.TrimPrefix(p, "blobs/redirect/"), "/", 2)
		name := ""
		if len(rest) == 2 {
			name = rest[1]
		}
		dest := storage + "/disk/" + rest[0] + "/" + url.PathEscape(name)
		if target != "" {
			dest = target
		}
		http.Redirect(w, r, dest, http.StatusFound)
	case strings.HasPrefix(p, "disk/"):
		status = http.StatusOK
		c.serveContent(w, r, strings.SplitN(strings.TrimPrefix(p, "disk/"), "/", 2)[0])
	default:
		status = http.StatusNotFound
		http.NotFound(w, r)
	}
}

func (c *Chatwoot) serveContent(w http.ResponseWriter, r *http.Request, token string) {
	c.mu.Lock()
	a := c.files[token]
	c.mu.Unlock()
	if a == nil || a.posted {
		// The fake keeps no copy of what was posted to it.
		http.NotFound(w, r)
		return
	}
	ct := a.att.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.FormatInt(a.att.size(), 10))
	w.Header().Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": a.att.Name}))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = io.Copy(w, AttachmentContent(a.att)) // a client that went away is not the server's problem
}

// newAttachmentLocked stores an attachment of message m.
func (c *Chatwoot) newAttachmentLocked(m *cwMsg, a Attachment) *cwAttachment {
	c.nextAttachment++
	if isFileType(a.FileType) && a.Name == "" {
		a.Name = fmt.Sprintf("%s-%d%s", a.FileType, c.nextAttachment, extFor(a.ContentType))
	}
	ca := &cwAttachment{id: c.nextAttachment, att: a, token: randToken(32), transcript: a.Transcript}
	if isFileType(a.FileType) {
		if c.files == nil {
			c.files = map[string]*cwAttachment{}
		}
		c.files[ca.token] = ca
	}
	m.atts = append(m.atts, ca)
	return ca
}

func extFor(ct string) string {
	switch {
	case strings.HasPrefix(ct, "image/png"):
		return ".png"
	case strings.HasPrefix(ct, "image/"):
		return ".jpg"
	case strings.HasPrefix(ct, "audio/ogg"):
		return ".ogg"
	case strings.HasPrefix(ct, "audio/"):
		return ".m4a"
	case strings.HasPrefix(ct, "video/"):
		return ".mp4"
	case ct == "application/pdf":
		return ".pdf"
	}
	return ".bin"
}

// attachmentJSON is Attachment#push_event_data: nil for an attachment with
// no file_type; location, fallback and contact with their own fields; audio
// with an inline redirect URL and transcribed_text ("" until transcribed).
func (c *Chatwoot) attachmentJSON(m *cwMsg, a *cwAttachment) any {
	if a.att.FileType == "" {
		return nil
	}
	base := obj{{"id", a.id}, {"message_id", m.id}, {"file_type", a.att.FileType}, {"account_id", c.opts.AccountID}}
	switch a.att.FileType {
	case "location":
		return append(base, field{"coordinates_lat", a.att.Lat}, field{"coordinates_long", a.att.Long},
			field{"fallback_title", nullable(a.att.Title)}, field{"data_url", nullable(a.att.External)})
	case "fallback":
		return append(base, field{"fallback_title", nullable(a.att.Title)}, field{"data_url", nullable(a.att.External)})
	case "contact":
		return append(base, field{"fallback_title", nullable(a.att.Title)}, field{"meta", obj{}})
	}
	ext := strings.TrimPrefix(path.Ext(a.att.Name), ".")
	dataURL := c.frontend + "/rails/active_storage/blobs/redirect/" + a.token + "/" + url.PathEscape(a.att.Name)
	thumb := ""
	if a.att.FileType == "image" {
		thumb = dataURL + "?thumb=250"
	}
	var width, height any
	if a.att.FileType == "image" {
		width, height = 800, 600
	}
	if a.att.FileType == "audio" {
		dataURL += "?disposition=inline"
	}
	o := append(base, field{"extension", nullable(ext)}, field{"content_type", a.att.ContentType}, field{"data_url", dataURL},
		field{"thumb_url", thumb}, field{"file_size", a.att.size()}, field{"width", width}, field{"height", height})
	if a.att.FileType == "audio" {
		o = append(o, field{"transcribed_text", a.transcript})
	}
	return o
}

func (c *Chatwoot) attachmentsJSON(m *cwMsg) []any {
	out := make([]any, 0, len(m.atts))
	for _, a := range m.atts {
		out = append(out, c.attachmentJSON(m, a))
	}
	return out
}

// CustomerSends is CustomerSays with attachments: an incoming message with
// files (and locations, contacts...), delivered as message_created.
// Audio attachments with Speech are transcribed after
// ChatwootOptions.TranscribeAfter, when set.
func (c *Chatwoot) CustomerSends(ctx context.Context, convID int64, text string, atts ...Attachment) (Delivery, error) {
	return c.customerMessage(ctx, convID, text, atts)
}

// Transcribe fills the transcribed_text of the message's audio attachment
// and delivers message_updated, as Chatwoot's audio transcription does
// (enterprise/app/services/messages/audio_transcription_service.rb:
// attachment meta, then message.reload.send_update_event).
func (c *Chatwoot) Transcribe(ctx context.Context, messageID int64, text string) (Delivery, error) {
	body, convID, err := c.transcribe(messageID, text)
	if err != nil {
		return Delivery{}, err
	}
	return c.post(ctx, c.newDelivery(body, "message_updated", convID, messageID))
}

func (c *Chatwoot) transcribe(messageID int64, text string) ([]byte, int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conv := range c.convs {
		for _, m := range conv.msgs {
			if m.id != messageID {
				continue
			}
			for _, a := range m.atts {
				if a.att.FileType == "audio" {
					a.transcript = text
					c.changed.broadcast()
					return railsJSON.marshal(c.messageEventLocked(conv, m, "message_updated")), conv.id, nil
				}
			}
			return nil, 0, fmt.Errorf("transcribe message %d: it has no audio", messageID)
		}
	}
	return nil, 0, fmt.Errorf("transcribe message %d: no such message", messageID)
}

// transcribeLater transcribes a message's recordings in the background,
// as Chatwoot's job does after the message is created.
func (c *Chatwoot) transcribeLater(m *cwMsg) {
	after := c.opts.TranscribeAfter
	if after <= 0 {
		return
	}
	speech := ""
	for _, a := range m.atts {
		if a.att.FileType == "audio" && a.att.Speech != "" && a.transcript == "" {
			speech = a.att.Speech
		}
	}
	if speech == "" {
		return
	}
	c.goDeliver(func() {
		sleep(context.Background(), after)
		body, convID, err := c.transcribe(m.id, speech)
		if err == nil {
			c.echo(c.newDelivery(body, "message_updated", convID, m.id), false)
		}
	})
}

// SendCSAT posts the CSAT survey, a template message with content_type
// input_csat (MessageTemplates::Template::CsatSurvey, sent when a
// conversation of an inbox with CSAT on is resolved), and delivers its
// message_created. It returns the survey message's id.
func (c *Chatwoot) SendCSAT(ctx context.Context, convID int64) (int64, error) {
	c.mu.Lock()
	conv := c.convs[convID]
	if conv == nil {
		c.mu.Unlock()
		return 0, fmt.Errorf("csat survey in conversation %d: %w", convID, errNoConversation)
	}
	m := &cwMsg{mtype: 3, content: "Please rate the conversation", contentType: "input_csat", delivered: true}
	c.addMessageLocked(conv, m)
	body := railsJSON.marshal(c.messageEventLocked(conv, m, "message_created"))
	c.mu.Unlock()
	_, err := c.post(ctx, c.newDelivery(body, "message_created", convID, m.id))
	return m.id, err
}

// CustomerRates answers the conversation's CSAT survey: the survey message
// gets content_attributes.submitted_values.csat_survey_response {rating,
// feedback_message} and message_updated is delivered (the public survey
// page and the widget both update the message;
// spec/controllers/public/api/v1/inboxes/messages_controller_spec.rb).
func (c *Chatwoot) CustomerRates(ctx context.Context, convID int64, rating int, comment string) (Delivery, error) {
	c.mu.Lock()
	conv := c.convs[convID]
	if conv == nil {
		c.mu.Unlock()
		return Delivery{}, fmt.Errorf("rate conversation %d: %w", convID, errNoConversation)
	}
	var survey *cwMsg
	for _, m := range conv.msgs {
		if m.contentType == "input_csat" {
			survey = m
		}
	}
	if survey == nil {
		c.mu.Unlock()
		return Delivery{}, fmt.Errorf("rate conversation %d: no csat survey was sent", convID)
	}
	survey.attrs["submitted_values"] = map[string]any{"csat_survey_response": map[string]any{
		"rating": rating, "feedback_message": comment}}
	c.changed.broadcast()
	body := railsJSON.marshal(c.messageEventLocked(conv, survey, "message_updated"))
	c.mu.Unlock()
	return c.post(ctx, c.newDelivery(body, "message_updated", convID, survey.id))
}

// SentFile is a file of a message as the fake stored it.
type SentFile struct {
	FileType    string
	Name        string
	ContentType string
	Size        int64
	SHA256      string // hex; of posted files only
}

func (a *cwAttachment) export() SentFile {
	return SentFile{FileType: a.att.FileType, Name: a.att.Name, ContentType: a.att.ContentType, Size: a.att.size(), SHA256: a.sha}
}

// readPostedFile stores one attachments[] part of a multipart post: its
// size and digest, read as it streams.
func (c *Chatwoot) readPostedFile(name, contentType string, r io.Reader) (Attachment, string, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return Attachment{}, "", err
	}
	return Attachment{FileType: fileTypeFor(contentType), Name: name, ContentType: contentType, Size: n}, hex.EncodeToString(h.Sum(nil)), nil
}

// lengthLimit is the longest text a channel's provider takes, and the
// external_error its refusal leaves on the message. The texts follow the
// providers' errors as Chatwoot stores them (the Graph API's "(#100) ...",
// Telegram's description, Twilio's 21617 message); the fake's are close,
// not byte for byte.
func lengthLimit(channel string) (int, string) {
	switch channel {
	case ChannelWhatsapp:
		return 4096, "(#100) Invalid parameter: text['body'] must be at most 4096 characters"
	case ChannelFacebook:
		return 2000, "100 - (#100) Length of param message[text] must be less than or equal to 2000"
	case ChannelInstagram:
		return 1000, "100 - (#100) Length of param message[text] must be less than or equal to 1000"
	case ChannelTelegram:
		return 4096, "Bad Request: message is too long"
	case ChannelTwilio:
		return 1600, "The concatenated message body exceeds the 1600 character limit"
	case ChannelLine:
		return 5000, "The request body has 1 error(s): Length must be between 0 and 5000"
	}
	return 0, ""
}
