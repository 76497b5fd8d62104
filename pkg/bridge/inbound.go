package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/dify"
	"github.com/bridge-dev/bridge/pkg/fetch"
	"github.com/bridge-dev/bridge/pkg/store"
)

// StageAttachments is the trace stage of what the customer sent besides text.
const StageAttachments = "files"

// Transfer modes of attachments (attachments.transfer, a route's --transfer).
const (
	TransferAuto      = "auto"
	TransferRemoteURL = "remote_url"
	TransferUpload    = "upload"
)

// inPart is one customer message taking part in a question: the event's
// own, then those merged into it within worker.debounce.
type inPart struct {
	eventID   int64
	messageID int64
	text      string
	atts      []chatwoot.Attachment
	received  time.Time
	channel   string
}

// question is what is sent to Dify for a turn, and what the trace says of
// how the customer's attachments got there.
type question struct {
	query string
	files []dify.File
	// remote are the files passed by URL that an upload could replace when
	// Dify refuses the URL (attachments.transfer auto).
	remote []remoteFile
	// voiceFailed is why a voice note could not be understood ("" if none
	// failed); nothing else is true when only voice notes came and all of
	// them failed.
	voiceFailed string
	nothingElse bool
	channel     string
	// texts are the parts' texts and notes, in order, to rebuild the query
	// after files change.
	texts []string
	notes []string
	// spoken are the voice notes' transcriptions, checked for handoff
	// keywords like written text.
	spoken []string
}

type remoteFile struct {
	index int // in files
	att   chatwoot.Attachment
	typ   string
	name  string
}

// parts gathers the messages of a question: the event's and those merged
// into it, in order, each with its text and attachments.
func (b *Bridge) parts(ctx context.Context, e *store.Event) []inPart {
	ids := []int64{e.ID}
	if v, ok := b.merged.Load(e.ID); ok {
		ids = append(ids, v.([]int64)...)
	}
	var out []inPart
	for _, id := range ids {
		row := *e
		if id != e.ID {
			var err error
			if row, err = b.o.Store.Event(ctx, id); err != nil {
				b.log.Warn("read merged event", eventAttrs(e, keyErr, err, "merged", id)...)
				continue
			}
		}
		ev, err := chatwoot.ParseEvent(row.Payload)
		if err != nil {
			// A hand-edited row: its text is all there is.
			out = append(out, inPart{eventID: id, messageID: row.MessageID, text: row.Text, received: row.ReceivedAt})
			continue
		}
		out = append(out, inPart{eventID: id, messageID: row.MessageID, text: ev.Content, atts: ev.Attachments,
			received: row.ReceivedAt, channel: channelOf(ev)})
	}
	return out
}

// channelOf names the conversation's channel for length limits and
// formats; an Instagram conversation of a Facebook page inbox is told apart
// by its additional_attributes.type.
func channelOf(ev *chatwoot.Event) string {
	if ev.Conversation.Channel == "Channel::FacebookPage" && ev.Conversation.Type == "instagram_direct_message" {
		return "Channel::Instagram"
	}
	return ev.Conversation.Channel
}

// transferFor is the route's transfer mode, or the configured one.
func (b *Bridge) transferFor(r *store.Route) string {
	if r.Options.Transfer != "" {
		return r.Options.Transfer
	}
	if b.o.Transfer != "" {
		return b.o.Transfer
	}
	return TransferAuto
}

// prepare turns the customer's messages into one question: their texts,
// voice notes as text, files as Dify files (by URL or uploaded), and a
// short line for whatever could not be passed, so the app can say so.
func (b *Bridge) prepare(ctx context.Context, e *store.Event, route *store.Route, user string) (*question, error) {
	parts := b.parts(ctx, e)
	q := &question{}
	var atts int
	for _, p := range parts {
		atts += len(p.atts)
		if p.channel != "" {
			q.channel = p.channel
		}
	}
	if atts == 0 {
		for _, p := range parts {
			if strings.TrimSpace(p.text) != "" {
				q.texts = append(q.texts, p.text)
			}
		}
		q.query = strings.Join(q.texts, "\n")
		return q, nil
	}
	client, err := b.difyFor(route)
	if err != nil {
		return nil, err
	}
	params := b.appParameters(ctx, route, client)
	mode := b.transferFor(route)
	var (
		summary  []string
		images   int
		usable   bool // something besides failed voice notes reaches the app
		voiceBad []string
	)
	for _, p := range parts {
		if strings.TrimSpace(p.text) != "" {
			q.texts = append(q.texts, p.text)
			usable = true
		}
		for _, a := range p.atts {
			switch a.FileType {
			case "audio":
				text, how, why := b.transcribe(ctx, e, route, client, params, &p, a, user)
				if text != "" {
					q.texts = append(q.texts, text)
					q.spoken = append(q.spoken, text)
					summary = append(summary, "voice note transcribed by "+how)
					usable = true
					continue
				}
				if params != nil && params.FileUpload.Accepts(dify.FileAudio, a.Extension, dify.TransferLocalFile) {
					// The app takes audio itself: let it listen.
					if f, note := b.passFile(ctx, e, route, client, params, q, a, dify.FileAudio, mode, &images, user); note == "" {
						q.files = append(q.files, f)
						summary = append(summary, "voice note passed as audio ("+why+")")
						usable = true
						continue
					}
				}
				voiceBad = append(voiceBad, why)
				q.notes = append(q.notes, "[voice note that could not be transcribed]")
			case "image", "video", "file":
				typ := difyType(a)
				f, note := b.passFile(ctx, e, route, client, params, q, a, typ, mode, &images, user)
				if note != "" {
					q.notes = append(q.notes, note)
					summary = append(summary, strings.Trim(note, "[]"))
					usable = true // the app can say what it could not read
					continue
				}
				q.files = append(q.files, f)
				summary = append(summary, fmt.Sprintf("%s %q passed by %s", typ, fileName(a), transferWord(f.TransferMethod)))
				usable = true
			default:
				line := describeOther(a)
				q.notes = append(q.notes, line)
				summary = append(summary, strings.Trim(line, "[]"))
				usable = true
			}
		}
	}
	if len(voiceBad) > 0 {
		q.voiceFailed = strings.Join(voiceBad, "; ")
		q.nothingElse = !usable
	}
	q.rebuild()
	b.hop(ctx, e, store.Hop{Stage: StageAttachments, Outcome: fmt.Sprintf("%d attachment(s)", atts), Detail: strings.Join(summary, "; ")})
	return q, nil
}

// rebuild makes the query from the texts and notes; a question of files
// alone says what came, since Dify refuses an empty query.
func (q *question) rebuild() {
	lines := append(append([]string{}, q.texts...), q.notes...)
	if len(q.texts) == 0 && len(q.files) > 0 {
		kinds := make([]string, 0, len(q.files))
		for _, f := range q.files {
			kinds = append(kinds, f.Type)
		}
		lines = append([]string{"[the customer sent: " + strings.Join(kinds, ", ") + "]"}, lines...)
	}
	q.query = strings.Join(lines, "\n")
}

// difyType maps a Chatwoot attachment to the Dify file type: documents are
// files with an extension Dify reads as one, other files are custom.
func difyType(a chatwoot.Attachment) string {
	switch a.FileType {
	case "image":
		return dify.FileImage
	case "video":
		return dify.FileVideo
	case "audio":
		return dify.FileAudio
	}
	if dify.IsDocument(extOf(a)) {
		return dify.FileDocument
	}
	return dify.FileCustom
}

func extOf(a chatwoot.Attachment) string {
	if a.Extension != "" {
		return strings.ToLower(strings.TrimPrefix(a.Extension, "."))
	}
	return strings.TrimPrefix(strings.ToLower(path.Ext(fileName(a))), ".")
}

// fileName is the attachment's name: Chatwoot's blob URLs end with it.
func fileName(a chatwoot.Attachment) string {
	if u, err := url.Parse(a.DataURL); err == nil {
		if n, err := url.PathUnescape(path.Base(u.Path)); err == nil && n != "." && n != "/" && n != "" {
			return n
		}
	}
	if a.Extension != "" {
		return "attachment." + a.Extension
	}
	return "attachment"
}

func transferWord(method string) string {
	if method == dify.TransferLocalFile {
		return "upload"
	}
	return "URL"
}

// describeOther is the line in the query for an attachment that is not a
// file: a location, a contact card, a shared post...
func describeOther(a chatwoot.Attachment) string {
	switch a.FileType {
	case "location":
		s := "[location: " + strconv.FormatFloat(a.Lat, 'f', -1, 64) + ", " + strconv.FormatFloat(a.Long, 'f', -1, 64)
		if a.FallbackTitle != "" {
			s += " (" + a.FallbackTitle + ")"
		}
		return s + "]"
	case "contact":
		return "[contact card: " + or(a.FallbackTitle, "no details") + "]"
	case "":
		return "[an attachment of a kind Chatwoot did not name]"
	}
	what := strings.ReplaceAll(a.FileType, "_", " ")
	if t := or(a.FallbackTitle, a.DataURL); t != "" {
		return "[" + what + ": " + t + "]"
	}
	return "[" + what + "]"
}

func or(s, d string) string {
	if strings.TrimSpace(s) == "" {
		return d
	}
	return s
}

// passFile decides how one file reaches the app and does it. It returns the
// Dify file, or the line naming what could not be passed and why.
func (b *Bridge) passFile(ctx context.Context, e *store.Event, route *store.Route, client *dify.Client, params *dify.Parameters,
	q *question, a chatwoot.Attachment, typ, mode string, images *int, user string) (dify.File, string) {
	name := fileName(a)
	notPassed := func(why string) (dify.File, string) {
		return dify.File{}, fmt.Sprintf("[%s %q not passed on: %s]", kindWord(typ), name, why)
	}
	if a.DataURL == "" {
		return notPassed("Chatwoot gave no URL for it")
	}
	if params == nil {
		return notPassed("the app's file settings could not be read")
	}
	fu := &params.FileUpload
	method := dify.TransferRemoteURL
	switch mode {
	case TransferUpload:
		method = dify.TransferLocalFile
	case TransferAuto:
		if private, err := fetch.HostPrivate(ctx, a.DataURL, b.o.Resolve); err != nil || private {
			// Dify could not fetch it (or its address is unknown): upload.
			method = dify.TransferLocalFile
		}
	}
	ext := extOf(a)
	if !fu.Accepts(typ, ext, method) {
		other := dify.TransferLocalFile
		if method == other {
			other = dify.TransferRemoteURL
		}
		if mode != TransferAuto || !fu.Accepts(typ, ext, other) {
			if fu.Accepts(typ, ext, other) {
				return notPassed(fmt.Sprintf("the app takes %s files only by %s, and attachments.transfer is %s", typ, transferWord(other), mode))
			}
			return notPassed("the app does not accept " + kindWord(typ) + " files")
		}
		method = other
	}
	if typ == dify.FileImage {
		if fu.ImageEnabled && fu.ImageLimit > 0 && *images >= fu.ImageLimit {
			return notPassed(fmt.Sprintf("the app takes at most %d images per message", fu.ImageLimit))
		}
	}
	if fu.Limit > 0 && len(q.files) >= fu.Limit {
		return notPassed(fmt.Sprintf("the app takes at most %d files per message", fu.Limit))
	}
	if limit := params.Limits.For(typ); limit > 0 && a.FileSize > limit {
		return notPassed(fmt.Sprintf("%s, over Dify's %s limit for %s files", fetch.Bytes(a.FileSize), fetch.Bytes(limit), typ))
	}
	if method == dify.TransferLocalFile && a.FileSize > b.o.MaxFileBytes {
		return notPassed(fmt.Sprintf("%s, over attachments.max_mb (%s)", fetch.Bytes(a.FileSize), fetch.Bytes(b.o.MaxFileBytes)))
	}
	if typ == dify.FileImage {
		*images++
	}
	if method == dify.TransferRemoteURL {
		q.remote = append(q.remote, remoteFile{index: len(q.files), att: a, typ: typ, name: name})
		return dify.File{Type: typ, TransferMethod: method, URL: a.DataURL}, ""
	}
	id, err := b.upload(ctx, e, client, a, name, user)
	if err != nil {
		return notPassed(errText(err))
	}
	return dify.File{Type: typ, TransferMethod: method, UploadFileID: id}, ""
}

func kindWord(typ string) string {
	if typ == dify.FileCustom {
		return "file"
	}
	return typ
}

// upload streams an attachment from Chatwoot into Dify's file upload; the
// file passes through bridge without being stored.
func (b *Bridge) upload(ctx context.Context, e *store.Event, client *dify.Client, a chatwoot.Attachment, name, user string) (string, error) {
	f, err := b.chatwootFetcher()
	if err != nil {
		return "", err
	}
	start := time.Now()
	d, err := f.Open(ctx, b.chatwootURL(a.DataURL))
	if err != nil {
		return "", fmt.Errorf("download from chatwoot: %w", err)
	}
	defer d.Close()
	ct := or(a.ContentType, d.ContentType)
	up, err := client.Upload(ctx, user, dify.FilePart{Name: name, ContentType: ct, Body: d.Body, Size: d.Size})
	if err != nil {
		return "", fmt.Errorf("upload to dify: %w", err)
	}
	b.hop(ctx, e, store.Hop{Stage: StageAttachments, Outcome: "uploaded", Duration: time.Since(start),
		Detail: fmt.Sprintf("%q (%s, %s) streamed from chatwoot to dify file %s", name, ct, fetch.Bytes(up.Size), up.ID)})
	return up.ID, nil
}

// uploadInstead replaces the files passed by URL with uploads, after Dify
// refused a URL (attachments.transfer auto). A file that cannot be
// uploaded is named in the query instead.
func (b *Bridge) uploadInstead(ctx context.Context, e *store.Event, client *dify.Client, q *question, user string) {
	keep := q.files[:0:0]
	byIndex := map[int]remoteFile{}
	for _, r := range q.remote {
		byIndex[r.index] = r
	}
	for i, f := range q.files {
		r, ok := byIndex[i]
		if !ok {
			keep = append(keep, f)
			continue
		}
		id, err := b.upload(ctx, e, client, r.att, r.name, user)
		if err != nil {
			q.notes = append(q.notes, fmt.Sprintf("[%s %q not passed on: %s]", kindWord(r.typ), r.name, errText(err)))
			continue
		}
		keep = append(keep, dify.File{Type: f.Type, TransferMethod: dify.TransferLocalFile, UploadFileID: id})
	}
	q.files, q.remote = keep, nil
	q.rebuild()
}

// refusedRemote reports whether Dify refused a request because of a file
// passed by URL: a 400 about the file (its SSRF proxy blocking a private
// address, a HEAD that failed, a validation of the fetched file).
func refusedRemote(err error) bool {
	var ae *dify.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.InStream {
		return false
	}
	m := strings.ToLower(ae.Message)
	return (ae.Code == "invalid_param" || ae.Code == "bad_request") && !strings.HasPrefix(m, "too many requests") &&
		(strings.Contains(m, "file") || strings.Contains(m, "url") || strings.Contains(m, "ssrf"))
}

// appParameters reads the app's /parameters, cached for a minute: file
// settings and speech to text change rarely, and a stale answer only costs
// one refused file.
func (b *Bridge) appParameters(ctx context.Context, route *store.Route, client *dify.Client) *dify.Parameters {
	key := b.RouteURL(route) + "\x00" + strconv.FormatInt(route.ID, 10)
	b.paramsMu.Lock()
	c, ok := b.params[key]
	b.paramsMu.Unlock()
	if ok && b.o.Now().Sub(c.at) < paramsTTL {
		return c.p
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := client.Parameters(ctx)
	if err != nil {
		b.log.Warn("read the dify app's parameters", keyRoute, route.ID, keyErr, err)
		if ok {
			return c.p
		}
		return nil
	}
	b.paramsMu.Lock()
	b.params[key] = cachedParams{p: p, at: b.o.Now()}
	b.paramsMu.Unlock()
	return p
}

const paramsTTL = time.Minute

type cachedParams struct {
	p  *dify.Parameters
	at time.Time
}

// chatwootFetcher downloads from chatwoot.base_url only; redirects (to
// S3, GCS, MinIO...) may reach private addresses only when Chatwoot itself
// is on one.
func (b *Bridge) chatwootFetcher() (*fetch.Fetcher, error) {
	b.fetchOnce.Do(func() {
		base := b.o.Chatwoot.BaseURL()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		private, err := fetch.HostPrivate(ctx, base, b.o.Resolve)
		if err != nil {
			b.log.Warn("chatwoot.base_url's address is unknown; its storage redirects may reach public addresses only", keyErr, err)
		}
		b.cwFetch, b.cwFetchErr = fetch.New(fetch.Policy{Origin: base, AllowPrivate: private && err == nil,
			MaxBytes: b.o.MaxFileBytes, Timeout: b.o.DownloadTimeout, Resolve: b.o.Resolve, Dial: b.o.Dial})
	})
	return b.cwFetch, b.cwFetchErr
}

// difyFetcher downloads an answer's files: URLs Dify gave (relative ones
// under the route's Dify), to private addresses only when that Dify is on
// one.
func (b *Bridge) difyFetcher(route *store.Route) (*fetch.Fetcher, error) {
	base := b.RouteURL(route)
	b.paramsMu.Lock()
	f, ok := b.difyFetch[base]
	b.paramsMu.Unlock()
	if ok {
		return f, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	private, err := fetch.HostPrivate(ctx, base, b.o.Resolve)
	f, ferr := fetch.New(fetch.Policy{AllowPrivate: private && err == nil, MaxBytes: b.o.MaxFileBytes,
		Timeout: b.o.DownloadTimeout, Resolve: b.o.Resolve, Dial: b.o.Dial})
	if ferr != nil {
		return nil, ferr
	}
	b.paramsMu.Lock()
	b.difyFetch[base] = f
	b.paramsMu.Unlock()
	return f, nil
}

// chatwootURL points an ActiveStorage URL at chatwoot.base_url. A data_url
// is built under Chatwoot's FRONTEND_URL, often a public name while bridge
// reaches Chatwoot by an internal one; the path is the same on both. Any
// other URL is left as it is (and the download rules then refuse it unless
// it is under chatwoot.base_url).
func (b *Bridge) chatwootURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || !strings.HasPrefix(u.Path, "/rails/active_storage/") {
		return raw
	}
	base, err := url.Parse(b.o.Chatwoot.BaseURL())
	if err != nil || base.Host == "" {
		return raw
	}
	u.Scheme, u.Host, u.User = base.Scheme, base.Host, nil
	u.Path = strings.TrimRight(base.Path, "/") + u.Path
	u.RawPath = ""
	return u.String()
}

// transcriptWaiters wakes events waiting for a voice note's transcription.
type transcriptWaiters struct {
	mu sync.Mutex
	m  map[int64][]chan struct{}
}

func (w *transcriptWaiters) wait(messageID int64) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	if w.m == nil {
		w.m = map[int64][]chan struct{}{}
	}
	w.m[messageID] = append(w.m[messageID], ch)
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		list := w.m[messageID]
		for i, c := range list {
			if c == ch {
				w.m[messageID] = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(w.m[messageID]) == 0 {
			delete(w.m, messageID)
		}
	}
}

func (w *transcriptWaiters) wake(messageID int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range w.m[messageID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// transcriptPoll catches a transcription journaled by another process.
const transcriptPoll = 250 * time.Millisecond

// transcribe gets the text of a voice note: Chatwoot's transcription if it
// has one or sends one in time, else Dify's speech to text if the app has
// it. It returns the text and who made it, or "" and why there is none.
func (b *Bridge) transcribe(ctx context.Context, e *store.Event, route *store.Route, client *dify.Client, params *dify.Parameters,
	p *inPart, a chatwoot.Attachment, user string) (text, how, why string) {
	if t := strings.TrimSpace(a.TranscribedText); t != "" {
		return t, "chatwoot", ""
	}
	lookup := func() string {
		t, ok, err := b.o.Store.Transcript(ctx, p.messageID)
		if err != nil || !ok {
			return ""
		}
		return strings.TrimSpace(t)
	}
	if t := lookup(); t != "" {
		return t, "chatwoot", ""
	}
	var reasons []string
	if b.o.VoiceWait > 0 {
		deadline := p.received.Add(b.o.VoiceWait)
		if left := deadline.Sub(b.o.Now()); left > 0 {
			b.hop(ctx, e, store.Hop{Stage: StageAttachments, Outcome: "waiting",
				Detail: fmt.Sprintf("voice note of message %d: waiting up to %s for chatwoot's transcription (voice.transcription_wait)", p.messageID, left.Round(time.Millisecond))})
			start := time.Now()
			woke, stop := b.transcripts.wait(p.messageID)
			timer := time.NewTimer(left)
			tick := time.NewTicker(transcriptPoll)
			t := ""
		wait:
			for {
				select {
				case <-ctx.Done():
					break wait
				case <-timer.C:
					t = lookup()
					break wait
				case <-woke:
				case <-tick.C:
				}
				if t = lookup(); t != "" {
					break
				}
			}
			stop()
			timer.Stop()
			tick.Stop()
			if t != "" {
				b.hop(ctx, e, store.Hop{Stage: StageAttachments, Outcome: "transcribed", Duration: time.Since(start),
					Detail: fmt.Sprintf("chatwoot's transcription of message %d arrived (%d chars)", p.messageID, len([]rune(t)))})
				return t, "chatwoot", ""
			}
		}
		reasons = append(reasons, fmt.Sprintf("no transcription from chatwoot within voice.transcription_wait (%s)", b.o.VoiceWait))
	} else {
		reasons = append(reasons, "chatwoot's transcription is not awaited (voice.transcription_wait is 0s)")
	}
	if ctx.Err() != nil {
		return "", "", "interrupted"
	}
	if params == nil || !params.SpeechToText {
		return "", "", strings.Join(append(reasons, "the app has no speech to text"), "; ")
	}
	t, err := b.speechToText(ctx, e, client, a, user)
	if err == nil && strings.TrimSpace(t) != "" {
		return strings.TrimSpace(t), "dify speech to text", ""
	}
	var ae *dify.APIError
	switch {
	case err == nil:
		reasons = append(reasons, "dify's speech to text heard nothing")
	case errors.As(err, &ae) && ae.Status == http.StatusUnsupportedMediaType:
		reasons = append(reasons, fmt.Sprintf("dify's speech to text refused %s (415 %s: it takes mp3, mp4, mpeg, mpga, m4a, wav, webm and amr only)",
			or(a.ContentType, "this audio"), ae.Code))
	default:
		reasons = append(reasons, "dify's speech to text failed: "+errText(err))
	}
	return "", "", strings.Join(reasons, "; ")
}

// speechToText streams a voice note from Chatwoot to Dify's audio-to-text.
func (b *Bridge) speechToText(ctx context.Context, e *store.Event, client *dify.Client, a chatwoot.Attachment, user string) (string, error) {
	f, err := b.chatwootFetcher()
	if err != nil {
		return "", err
	}
	start := time.Now()
	d, err := f.Open(ctx, b.chatwootURL(a.DataURL))
	if err != nil {
		return "", fmt.Errorf("download from chatwoot: %w", err)
	}
	defer d.Close()
	ct := or(a.ContentType, d.ContentType)
	text, err := client.AudioToText(ctx, user, dify.FilePart{Name: fileName(a), ContentType: ct, Body: d.Body, Size: d.Size})
	outcome, detail := "transcribed", fmt.Sprintf("dify speech to text of %s (%s): %d chars", ct, fetch.Bytes(max(d.Size, a.FileSize)), len([]rune(text)))
	if err != nil {
		outcome, detail = "speech to text failed", errText(err)
	}
	b.hop(ctx, e, store.Hop{Stage: StageAttachments, Outcome: outcome, Detail: detail, Duration: time.Since(start)})
	return text, err
}
