package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// useApp replaces the env's Dify app (same key) with app.
func (e *env) useApp(app simulate.DifyApp) {
	app.Key = testDifyKey
	if app.Name == "" {
		app.Name = "Support"
	}
	e.dify.AddApp(app)
}

func (e *env) sends(conv int64, text string, atts ...simulate.Attachment) Ack {
	e.t.Helper()
	d, err := e.cw.CustomerSends(e.t.Context(), conv, text, atts...)
	if err != nil {
		e.t.Fatal(err)
	}
	a := ackOf(e.t, d)
	if a.Status != "accepted" {
		e.t.Fatalf("ack = %+v", a)
	}
	return a
}

// trace is the event's hops as "stage outcome: detail" lines.
func (e *env) trace(id int64) string {
	e.t.Helper()
	hs, err := e.db.Hops(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	var b strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&b, "%s %s: %s\n", h.Stage, h.Outcome, h.Detail)
	}
	return b.String()
}

func (e *env) answered(id int64) store.Event {
	e.t.Helper()
	ev := e.waitFinal(id)
	if ev.Status != store.StatusAnswered {
		e.t.Fatalf("event %d: %s %q %q\n%s", id, ev.Status, ev.Reason, ev.LastError, e.trace(id))
	}
	return ev
}

func digest(r io.Reader) string {
	h := sha256.New()
	_, _ = io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil))
}

var imageApp = simulate.DifyApp{Mode: "chat", FileUpload: &simulate.DifyFileUpload{Types: []string{"image", "document"}}}

func TestImageFromLoopbackChatwootIsUploaded(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.useApp(imageApp)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")
	img := simulate.Attachment{FileType: "image", Name: "broken mug.png", ContentType: "image/png", Size: 300_000}
	id := e.sends(conv, "Is this covered?", img).EventID
	e.answered(id)
	reqs := e.dify.Requests()
	if len(reqs) != 1 || reqs[0].Query != "Is this covered?" || len(reqs[0].Files) != 1 {
		t.Fatalf("dify got %+v", reqs)
	}
	f := reqs[0].Files[0]
	if f.Type != "image" || f.Method != "local_file" || f.Name != "broken mug.png" || f.Size != 300_000 ||
		f.SHA256 != digest(simulate.AttachmentContent(img)) {
		t.Errorf("file = %+v", f)
	}
	if ups := e.dify.Uploads(); len(ups) != 1 || ups[0].User != "chatwoot-1-5" || ups[0].MimeType != "image/png" {
		t.Errorf("uploads = %+v", ups)
	}
	if got := e.botReplies(conv); len(got) != 1 || !strings.Contains(got[0], `(I received: image "broken mug.png")`) {
		t.Errorf("reply = %q", got)
	}
	if tr := e.trace(id); !strings.Contains(tr, "files uploaded") || !strings.Contains(tr, "passed by upload") {
		t.Errorf("trace:\n%s", tr)
	}
}

func TestRemoteURLTransfer(t *testing.T) {
	e := newEnv(t, envOptions{route: func(r *store.Route) { r.Options.Transfer = TransferRemoteURL }})
	e.useApp(imageApp)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")
	id := e.sends(conv, "", simulate.Attachment{FileType: "file", Name: "invoice.pdf", ContentType: "application/pdf", Size: 40_000}).EventID
	e.answered(id)
	reqs := e.dify.Requests()
	f := reqs[0].Files
	if len(f) != 1 || f[0].Method != "remote_url" || f[0].Type != "document" ||
		!strings.HasPrefix(f[0].URL, e.cwSrv.URL+"/rails/active_storage/blobs/redirect/") {
		t.Fatalf("files = %+v", f)
	}
	// Dify looked at the URL itself (a HEAD through Chatwoot's redirect).
	if f[0].Name != "invoice.pdf" || f[0].MimeType != "application/pdf" || f[0].Size != 40_000 {
		t.Errorf("dify's view of the remote file: %+v", f[0])
	}
	if reqs[0].Query != "[the customer sent: document]" || len(e.dify.Uploads()) != 0 {
		t.Errorf("query %q, uploads %d", reqs[0].Query, len(e.dify.Uploads()))
	}
}

// TestAutoUploadsWhenDifyRefusesTheURL: Chatwoot's FRONTEND_URL has a
// public name, so auto passes the URL; Dify's SSRF proxy refuses it (the
// name resolves to a private address on Dify's side): bridge uploads
// instead, downloading through chatwoot.base_url.
func TestAutoUploadsWhenDifyRefusesTheURL(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) {
		o.Resolve = func(_ context.Context, host string) ([]netip.Addr, error) {
			if host == "chatwoot.test" {
				return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
	}})
	e.useApp(imageApp)
	u, _ := url.Parse(e.cwSrv.URL)
	e.cw.SetFrontendURL("http://chatwoot.test:" + u.Port())
	e.dify.MapHost("chatwoot.test", "127.0.0.1")
	e.dify.BlockPrivateURLs(true)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")
	img := simulate.Attachment{FileType: "image", Name: "scratch.jpg", ContentType: "image/jpeg", Size: 5000}
	id := e.sends(conv, "see photo", img).EventID
	e.answered(id)
	reqs := e.dify.Requests()
	if len(reqs) != 2 || reqs[0].Files != nil || len(reqs[1].Files) != 1 || reqs[1].Files[0].Method != "local_file" ||
		reqs[1].Files[0].SHA256 != digest(simulate.AttachmentContent(img)) {
		t.Fatalf("dify requests = %+v", reqs)
	}
	if tr := e.trace(id); !strings.Contains(tr, "remote url refused") || !strings.Contains(tr, "blocked by SSRF protection") {
		t.Errorf("trace:\n%s", tr)
	}
}

func TestAttachmentsNobodyCanPassAreNamed(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.useApp(simulate.DifyApp{Mode: "chat", FileUpload: &simulate.DifyFileUpload{Types: []string{"image"}}})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")
	id := e.sends(conv, "here you go",
		simulate.Attachment{FileType: "location", Lat: 52.52, Long: 13.405, Title: "Berlin"},
		simulate.Attachment{FileType: "contact", Title: "+15551234567"},
		simulate.Attachment{FileType: "video", Name: "unboxing.mp4", ContentType: "video/mp4", Size: 1000},
		simulate.Attachment{FileType: "file", Name: "logs.zip", ContentType: "application/zip", Size: 1000},
		simulate.Attachment{},
	).EventID
	e.answered(id)
	q := e.dify.Requests()[0].Query
	for _, want := range []string{"here you go", "[location: 52.52, 13.405 (Berlin)]", "[contact card: +15551234567]",
		`[video "unboxing.mp4" not passed on: the app does not accept video files]`,
		`[file "logs.zip" not passed on: the app does not accept file files]`, "[an attachment of a kind Chatwoot did not name]"} {
		if !strings.Contains(q, want) {
			t.Errorf("query lacks %q:\n%s", want, q)
		}
	}
	if f := e.dify.Requests()[0].Files; len(f) != 0 {
		t.Errorf("files = %+v", f)
	}
	if tr := e.trace(id); !strings.Contains(tr, "files 5 attachment(s)") || !strings.Contains(tr, "location: 52.52") {
		t.Errorf("trace:\n%s", tr)
	}
}

func TestFilesOverTheLimitsAreNamedNotFetched(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.MaxFileBytes = 5 << 20 }})
	e.useApp(imageApp)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")
	id := e.sends(conv, "two files",
		simulate.Attachment{FileType: "file", Name: "scan.pdf", ContentType: "application/pdf", Size: 16 << 20},
		simulate.Attachment{FileType: "image", Name: "big.png", ContentType: "image/png", Size: 6 << 20},
	).EventID
	e.answered(id)
	q := e.dify.Requests()[0].Query
	for _, want := range []string{`[document "scan.pdf" not passed on: 16.0 MB, over Dify's 15.0 MB limit for document files]`,
		`[image "big.png" not passed on: 6.0 MB, over attachments.max_mb (5.0 MB)]`} {
		if !strings.Contains(q, want) {
			t.Errorf("query lacks %q:\n%s", want, q)
		}
	}
	for _, c := range e.cw.Calls() {
		if strings.HasPrefix(c.Path, "/rails/") {
			t.Errorf("a file over the limits was downloaded: %s", c.Path)
		}
	}
}

// TestDownloadRefusalsAreNamed: a storage redirect out of http(s), or a
// file Chatwoot no longer has: the file is named as not passed, with why,
// and the question still goes to the app. (The address, size and time
// rules are tested one by one in pkg/fetch.)
func TestDownloadRefusalsAreNamed(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.MaxFileBytes = 64 << 10 }})
	e.useApp(imageApp)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")
	// The storage redirect leaves http(s): refused whatever the address.
	e.cw.SetStorageURL("", "ftp://files.example/x.png")
	id := e.sends(conv, "photo", simulate.Attachment{FileType: "image", Name: "x.png", ContentType: "image/png", Size: 1000}).EventID
	e.answered(id)
	if q := e.dify.Requests()[0].Query; !strings.Contains(q, `[image "x.png" not passed on: download from chatwoot: download refused: redirect to a non-http(s) URL`) {
		t.Errorf("query:\n%s", q)
	}
	e.cw.SetStorageURL("", "")
	e.cw.Fail("file", simulate.ChatwootFault{Status: 404})
	id = e.sends(conv, "again", simulate.Attachment{FileType: "image", Name: "y.png", ContentType: "image/png", Size: 1000}).EventID
	e.answered(id)
	if q := e.dify.Requests()[1].Query; !strings.Contains(q, "http 404") {
		t.Errorf("query:\n%s", q)
	}
}

func TestSeveralAttachmentsAndDebouncedTextMakeOneQuestion(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.Debounce = 300 * time.Millisecond }})
	e.useApp(imageApp)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")
	first := e.sends(conv, "",
		simulate.Attachment{FileType: "image", Name: "front.jpg", ContentType: "image/jpeg", Size: 3000},
		simulate.Attachment{FileType: "image", Name: "back.jpg", ContentType: "image/jpeg", Size: 3000},
		simulate.Attachment{FileType: "file", Name: "receipt.pdf", ContentType: "application/pdf", Size: 3000}).EventID
	second := e.sends(conv, "is this damage covered?").EventID
	e.answered(first)
	if ev := e.waitFinal(second); ev.Status != store.StatusAnswered || ev.MergedInto != first {
		t.Errorf("second message: %s merged into %d", ev.Status, ev.MergedInto)
	}
	reqs := e.dify.Requests()
	if len(reqs) != 1 || len(reqs[0].Files) != 3 || reqs[0].Query != "is this damage covered?" {
		t.Fatalf("dify got %+v", reqs)
	}
	if got := e.botReplies(conv); len(got) != 1 {
		t.Errorf("replies %q", got)
	}
}

// ---- voice notes ----

func whatsappEnv(t *testing.T, eo envOptions) (*env, int64) {
	t.Helper()
	e := newEnv(t, eo)
	e.cw.AddInboxChannel(1, "WhatsApp", e.srv.URL+"/webhooks/chatwoot", simulate.ChannelWhatsapp)
	return e, e.cw.NewConversation(1, simulate.Contact{ID: 9, Name: "Maria"}, "pending")
}

var voiceNote = simulate.Attachment{FileType: "audio", Name: "audio.ogg", ContentType: "audio/ogg", Size: 14237,
	Speech: "Hi, where is my order 1234?"}

func TestVoiceNoteWaitsForChatwootTranscription(t *testing.T) {
	e, conv := whatsappEnv(t, envOptions{tune: func(o *Options) { o.VoiceWait = 10 * time.Second },
		cwOpts: func(o *simulate.ChatwootOptions) { o.TranscribeAfter = 200 * time.Millisecond }})
	id := e.sends(conv, "", voiceNote).EventID
	e.answered(id)
	if got := e.botReplies(conv); len(got) != 1 || got[0] != "Answer to: Hi, where is my order 1234?" {
		t.Fatalf("replies %q", got)
	}
	if len(e.dify.Transcriptions()) != 0 || len(e.dify.Requests()[0].Files) != 0 {
		t.Errorf("dify was asked to listen: %+v", e.dify.Transcriptions())
	}
	tr := e.trace(id)
	if !strings.Contains(tr, "files waiting") || !strings.Contains(tr, "chatwoot's transcription of message") {
		t.Errorf("trace:\n%s", tr)
	}
	// The message_updated that carried the transcription was accepted and
	// shares the voice note's fate.
	evs, err := e.db.ListEvents(t.Context(), store.EventFilter{Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, x := range evs {
		if x.Event == "message_updated" && x.Kind == KindTranscript {
			found = true
			x = e.waitFinal(x.ID)
			if x.Status != store.StatusAnswered || x.MergedInto != id {
				t.Errorf("transcript event %d: %s %q merged into %d", x.ID, x.Status, x.Reason, x.MergedInto)
			}
		}
	}
	if !found {
		t.Error("no transcript event")
	}
}

func TestVoiceNoteAlreadyTranscribed(t *testing.T) {
	e, conv := whatsappEnv(t, envOptions{})
	n := voiceNote
	n.Transcript = "Do you ship to Lisbon?"
	e.answered(e.sends(conv, "", n).EventID)
	if got := e.botReplies(conv); len(got) != 1 || got[0] != "Answer to: Do you ship to Lisbon?" {
		t.Fatalf("replies %q", got)
	}
}

func TestVoiceNoteByDifySpeechToText(t *testing.T) {
	e, conv := whatsappEnv(t, envOptions{})
	e.useApp(simulate.DifyApp{Mode: "chat", SpeechToText: true})
	n := voiceNote
	n.ContentType, n.Name = "audio/m4a", "note.m4a"
	id := e.sends(conv, "", n).EventID
	e.answered(id)
	if got := e.botReplies(conv); len(got) != 1 || got[0] != "Answer to: Hi, where is my order 1234?" {
		t.Fatalf("replies %q", got)
	}
	if ts := e.dify.Transcriptions(); len(ts) != 1 || ts[0].Status != 200 || ts[0].MimeType != "audio/m4a" || ts[0].Size != 14237 {
		t.Errorf("transcriptions %+v", ts)
	}
}

// TestVoiceNoteOggIsRefusedAndTheCustomerAskedToType: WhatsApp records
// audio/ogg (Opus), which Dify's speech to text refuses with 415.
func TestVoiceNoteOggIsRefusedAndTheCustomerAskedToType(t *testing.T) {
	e, conv := whatsappEnv(t, envOptions{tune: func(o *Options) {
		o.VoiceWait = 200 * time.Millisecond
		o.VoiceAskMessage = "Please type your question."
	}})
	e.useApp(simulate.DifyApp{Mode: "chat", SpeechToText: true})
	id := e.sends(conv, "", voiceNote).EventID
	ev := e.answered(id)
	if ev.Reason != reasonAskedToType || !ev.HasStep(StepVoiceAsk) {
		t.Errorf("event %q steps %q", ev.Reason, ev.Steps)
	}
	if ts := e.dify.Transcriptions(); len(ts) != 1 || ts[0].Status != 415 {
		t.Errorf("transcriptions %+v", ts)
	}
	if len(e.dify.Requests()) != 0 {
		t.Error("dify was asked a question nobody could hear")
	}
	e.wait("the customer sees the request to type", func() bool {
		saw := e.cw.CustomerSaw(conv)
		return len(saw) == 1 && saw[0].Content == "Please type your question."
	})
	tr := e.trace(id)
	for _, want := range []string{"within voice.transcription_wait (200ms)", "refused audio/ogg (415 unsupported_audio_type"} {
		if !strings.Contains(tr, want) {
			t.Errorf("trace lacks %q:\n%s", want, tr)
		}
	}
}

func TestVoiceNoteHandedOffWhenTheRouteSaysSo(t *testing.T) {
	e, conv := whatsappEnv(t, envOptions{route: func(r *store.Route) { r.Options.VoiceFallback = VoiceHandoff }})
	id := e.sends(conv, "", voiceNote).EventID
	ev := e.waitFinal(id)
	if ev.Status != store.StatusHandedOff || !strings.Contains(ev.Reason, "voice note could not be transcribed") ||
		!strings.Contains(ev.Reason, "the app has no speech to text") {
		t.Fatalf("event %s %q", ev.Status, ev.Reason)
	}
	if e.cw.Status(conv) != "open" {
		t.Errorf("status %s", e.cw.Status(conv))
	}
}

func TestVoiceNoteWithTextIsAnsweredFromTheText(t *testing.T) {
	e, conv := whatsappEnv(t, envOptions{})
	id := e.sends(conv, "my parcel never came", voiceNote).EventID
	e.answered(id)
	q := e.dify.Requests()[0].Query
	if q != "my parcel never came\n[voice note that could not be transcribed]" {
		t.Errorf("query %q", q)
	}
}

// ---- answers ----

func TestAnswerFilesArePostedAsAttachments(t *testing.T) {
	e := newEnv(t, envOptions{})
	pdf := simulate.DifyOutFile{Type: "document", Name: "invoice-1234.pdf", ContentType: "application/pdf", Size: 50_000}
	png := simulate.DifyOutFile{Type: "image", Name: "chart.png", ContentType: "image/png", Data: []byte("\x89PNG fake chart")}
	e.useApp(simulate.DifyApp{Mode: "chat", Respond: func(c simulate.DifyCall) simulate.DifyResponse {
		return simulate.DifyResponse{Text: "Here is your invoice.", Files: []simulate.DifyOutFile{pdf, png}}
	}})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")
	id := e.say(conv, "send me my invoice").EventID
	e.answered(id)
	var bot []simulate.Message
	for _, m := range e.cw.Messages(conv) {
		if m.SenderType == "agent_bot" {
			bot = append(bot, m)
		}
	}
	if len(bot) != 1 || bot[0].Content != "Here is your invoice." || len(bot[0].Attachments) != 2 {
		t.Fatalf("bot messages %+v", bot)
	}
	a := bot[0].Attachments
	if a[0].Name != "invoice-1234.pdf" || a[0].FileType != "file" || a[0].Size != 50_000 ||
		a[0].SHA256 != digest(io.LimitReader(simulate.AttachmentContent(simulate.Attachment{Size: 50_000}), 50_000)) {
		t.Errorf("pdf %+v", a[0])
	}
	if a[1].FileType != "image" || a[1].ContentType != "image/png" || a[1].SHA256 != digest(strings.NewReader("\x89PNG fake chart")) {
		t.Errorf("png %+v", a[1])
	}
	if !bot[0].Delivered {
		t.Error("not delivered")
	}
}

func TestCitationsAppended(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.Citations = "append" }})
	e.useApp(simulate.DifyApp{Mode: "chat", Respond: func(c simulate.DifyCall) simulate.DifyResponse {
		return simulate.DifyResponse{Text: "Returns are free within 30 days.", Citations: []simulate.DifyCitation{
			{DatasetName: "Manuals", DocumentName: "returns.pdf"}, {DatasetName: "Manuals", DocumentName: "returns.pdf"},
			{DatasetName: "FAQ", DocumentName: "shipping.md"}}}
	}})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")
	e.answered(e.say(conv, "returns?").EventID)
	want := "Returns are free within 30 days.\n\nSources:\n- returns.pdf (Manuals)\n- shipping.md (FAQ)"
	if got := e.botReplies(conv); len(got) != 1 || got[0] != want {
		t.Errorf("reply %q", got)
	}
}

func longAnswer() string {
	var b strings.Builder
	for i := range 14 {
		fmt.Fprintf(&b, "Paragraph %d. ", i+1)
		for j := range 60 {
			fmt.Fprintf(&b, "word%d ", j)
		}
		b.WriteString("See [the tracking page](https://track.example/order/1234) for details.\n\n")
		if i == 6 {
			b.WriteString("```\n" + strings.Repeat("code line that must stay whole\n", 30) + "```\n\n")
		}
	}
	return strings.TrimSpace(b.String())
}

func TestLongAnswerIsSplitForWhatsApp(t *testing.T) {
	e, conv := whatsappEnv(t, envOptions{})
	text := longAnswer()
	e.useApp(simulate.DifyApp{Mode: "chat", Reply: func([]simulate.Turn, string, map[string]any) string { return text }})
	id := e.say(conv, "tell me everything").EventID
	ev := e.answered(id)
	var parts []string
	e.wait("every part delivered", func() bool {
		parts = parts[:0]
		for _, m := range e.cw.CustomerSaw(conv) {
			parts = append(parts, m.Content)
		}
		return len(parts) >= 3
	})
	for i, p := range parts {
		if n := len([]rune(p)); n > 4096 {
			t.Errorf("part %d has %d characters", i+1, n)
		}
		if strings.Count(p, "```")%2 != 0 {
			t.Errorf("part %d cuts a code block", i+1)
		}
		if strings.Count(p, "](https://track.example/order/1234)") != strings.Count(p, "[the tracking page]") {
			t.Errorf("part %d cuts a link", i+1)
		}
	}
	if strings.Join(strings.Fields(strings.Join(parts, " ")), " ") != strings.Join(strings.Fields(text), " ") {
		t.Error("the parts do not add up to the answer")
	}
	for i := range parts {
		if !ev.HasStep(partStep(i)) {
			t.Errorf("step %s missing: %q", partStep(i), ev.Steps)
		}
	}
	for _, m := range e.cw.Messages(conv) {
		if m.ContentAttributes["external_error"] != nil {
			t.Errorf("message %d refused: %v", m.ID, m.ContentAttributes["external_error"])
		}
	}
}

func TestWhatsAppFormatOnAPIInbox(t *testing.T) {
	e := newEnv(t, envOptions{route: func(r *store.Route) { r.Options.Format = FormatWhatsApp }})
	e.useApp(simulate.DifyApp{Mode: "chat", Reply: func([]simulate.Turn, string, map[string]any) string {
		return "## Your order\n**Shipped** today, *arrives* ~~Monday~~ Tuesday. See [tracking](https://t.example/1).\n\n* keep the box"
	}})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")
	e.answered(e.say(conv, "status?").EventID)
	want := "*Your order*\n*Shipped* today, _arrives_ ~Monday~ Tuesday. See tracking (https://t.example/1).\n\n- keep the box"
	if got := e.botReplies(conv); len(got) != 1 || got[0] != want {
		t.Errorf("reply %q\nwant %q", got, want)
	}
}

// TestChannelRefusalHandsOff: WhatsApp refuses the answer (the 24 h window
// closed while Dify was thinking); Chatwoot reports it only as a
// message_updated with external_error. bridge records it on the answering
// event and hands the conversation to a human, once.
func TestChannelRefusalHandsOff(t *testing.T) {
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	e, conv := whatsappEnv(t, envOptions{cwOpts: func(o *simulate.ChatwootOptions) { o.Now = now }})
	e.dify.Hold()
	id := e.say(conv, "where is my order?").EventID
	if err := e.dify.WaitFor(t.Context(), func() bool { return e.dify.Held() == 1 }); err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(25 * time.Hour))
	e.dify.Release()
	e.answered(id)
	e.wait("the conversation handed to a human", func() bool { return e.cw.Status(conv) == "open" })
	var refused store.Event
	e.wait("the refusal handled", func() bool {
		evs, _ := e.db.ListEvents(t.Context(), store.EventFilter{Limit: 100})
		for _, x := range evs {
			if x.Kind == KindRefused && x.Status == store.StatusHandedOff {
				refused = x
				return true
			}
		}
		return false
	})
	if !strings.Contains(refused.Reason, "the channel refused the answer: Template not found") {
		t.Errorf("refusal event reason %q", refused.Reason)
	}
	if tr := e.trace(id); !strings.Contains(tr, "chatwoot refused by the channel: message") {
		t.Errorf("the answering event's trace lacks the refusal:\n%s", tr)
	}
	// The handoff message is refused too (same window): no second handoff.
	e.wait("every refusal journaled", func() bool {
		evs, _ := e.db.ListEvents(t.Context(), store.EventFilter{Limit: 100})
		n := 0
		for _, x := range evs {
			if x.Kind == KindRefused && x.Finished() {
				n++
			}
		}
		return n >= 2
	})
	handoffs := 0
	for _, n := range e.notes(conv) {
		if strings.HasPrefix(n, "Handoff:") {
			handoffs++
		}
	}
	if handoffs != 1 {
		t.Errorf("%d handoff notes: %q", handoffs, e.notes(conv))
	}
}

func TestCSATRatingsBecomeDifyFeedback(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.CSATFeedback = true }})
	ctx := t.Context()
	for _, tc := range []struct {
		rating  int
		comment string
		want    string
	}{{5, "quick and right", "like"}, {1, "wrong answer", "dislike"}, {3, "meh", ""}} {
		conv := e.cw.NewConversation(1, simulate.Contact{Name: "C"}, "pending")
		e.answered(e.say(conv, "hello").EventID)
		if _, err := e.cw.SendCSAT(ctx, conv); err != nil {
			t.Fatal(err)
		}
		before := len(e.dify.Feedbacks())
		d, err := e.cw.CustomerRates(ctx, conv, tc.rating, tc.comment)
		if err != nil {
			t.Fatal(err)
		}
		a := ackOf(t, d)
		if a.Status != "accepted" {
			t.Fatalf("rating %d: ack %+v", tc.rating, a)
		}
		ev := e.waitFinal(a.EventID)
		fb := e.dify.Feedbacks()[before:]
		if tc.want == "" {
			if len(fb) != 0 || ev.Status != store.StatusAnswered || !strings.Contains(ev.Reason, "neutral") {
				t.Errorf("rating 3: feedback %+v, event %s %q", fb, ev.Status, ev.Reason)
			}
			continue
		}
		if len(fb) != 1 || fb[0].Rating != tc.want || fb[0].Content != tc.comment || !strings.HasPrefix(fb[0].User, "chatwoot-1-") {
			t.Errorf("rating %d: feedback %+v (event %s %q)", tc.rating, fb, ev.Status, ev.Reason)
		}
	}
}

func TestCSATOffByDefault(t *testing.T) {
	e := newEnv(t, envOptions{})
	conv := e.cw.NewConversation(1, simulate.Contact{Name: "C"}, "pending")
	e.answered(e.say(conv, "hello").EventID)
	if _, err := e.cw.SendCSAT(t.Context(), conv); err != nil {
		t.Fatal(err)
	}
	d, err := e.cw.CustomerRates(t.Context(), conv, 5, "")
	if err != nil {
		t.Fatal(err)
	}
	if a := ackOf(t, d); a.Status != "ignored" || a.Reason != ReasonNotMessageCreated {
		t.Errorf("ack %+v", a)
	}
}

// TestRestartBetweenPartsPostsTheRest: bridge stops while the second part
// of a split answer is being posted. After the restart the first part is
// not posted again, the second is settled and the rest goes out, in order.
func TestRestartBetweenPartsPostsTheRest(t *testing.T) {
	e := newEnv(t, envOptions{noRun: true, tune: func(o *Options) { o.ShutdownGrace = 20 * time.Millisecond }})
	e.cw.AddInboxChannel(1, "WhatsApp", e.srv.URL+"/webhooks/chatwoot", simulate.ChannelWhatsapp)
	text := longAnswer()
	e.useApp(simulate.DifyApp{Mode: "chat", Reply: func([]simulate.Turn, string, map[string]any) string { return text }})
	// The first post goes through; the second hangs until the client gives up.
	e.cw.Fail("messages", simulate.ChatwootFault{}, simulate.ChatwootFault{Delay: 5 * time.Second})
	stop := rvRun(t, e)
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 9, Name: "Maria"}, "pending")
	id := e.say(conv, "tell me everything").EventID
	e.wait("first part posted", func() bool { ev := e.event(id); return ev.HasStep(StepAnswer) })
	stop()
	if ev := e.event(id); ev.Finished() || ev.HasStep(partStep(1)) {
		t.Fatalf("the second part went out before the stop: %s %q", ev.Status, ev.Steps)
	}
	rvRun(t, e)
	ev := e.answered(id)
	got := e.botReplies(conv)
	want := splitMessage(text, 4096)
	if len(got) != len(want) {
		t.Fatalf("posted %d parts, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("part %d differs", i+1)
		}
	}
	if len(e.dify.Requests()) != 1 {
		t.Errorf("dify asked %d times", len(e.dify.Requests()))
	}
	if tr := e.trace(id); !strings.Contains(tr, "worker resumed") {
		t.Errorf("trace:\n%s (%s)", tr, ev.Steps)
	}
}

func TestVoiceNoteAskingForAHumanHandsOff(t *testing.T) {
	e, conv := whatsappEnv(t, envOptions{})
	n := voiceNote
	n.Transcript = "I want to talk to a real person please"
	id := e.sends(conv, "", n).EventID
	ev := e.waitFinal(id)
	if ev.Status != store.StatusHandedOff || !strings.Contains(ev.Reason, "customer asked for a human (voice note)") {
		t.Fatalf("event %s %q", ev.Status, ev.Reason)
	}
	if len(e.dify.Requests()) != 0 {
		t.Error("dify was asked")
	}
}

// TestAnswerFileOverTheLimitIsLeftOut: the text still goes; the trace says
// which file was left out and why.
func TestAnswerFileOverTheLimitIsLeftOut(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(o *Options) { o.MaxFileBytes = 1 << 20 }})
	e.useApp(simulate.DifyApp{Mode: "chat", Respond: func(simulate.DifyCall) simulate.DifyResponse {
		return simulate.DifyResponse{Text: "The manual is attached.", Files: []simulate.DifyOutFile{
			{Type: "document", Name: "manual.pdf", ContentType: "application/pdf", Size: 3 << 20}}}
	}})
	conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")
	id := e.say(conv, "manual?").EventID
	e.answered(id)
	if got := e.botReplies(conv); len(got) != 1 || got[0] != "The manual is attached." {
		t.Fatalf("replies %q", got)
	}
	for _, m := range e.cw.Messages(conv) {
		if len(m.Attachments) > 0 {
			t.Errorf("message %d carries %+v", m.ID, m.Attachments)
		}
	}
	if tr := e.trace(id); !strings.Contains(tr, "files file left out") || !strings.Contains(tr, "file of 3.0 MB is over the 1.0 MB limit") {
		t.Errorf("trace:\n%s", tr)
	}
}

// TestStorageRedirectToPrivateOnlyWhenChatwootIsPrivate: Chatwoot's storage
// on a private address is followed when Chatwoot itself is on one (the
// simulators are on loopback), and refused when chatwoot.base_url is a
// public name.
func TestStorageRedirectToPrivateOnlyWhenChatwootIsPrivate(t *testing.T) {
	for _, public := range []bool{false, true} {
		t.Run(fmt.Sprintf("public chatwoot %v", public), func(t *testing.T) {
			e := newEnv(t, envOptions{noRun: true, route: func(r *store.Route) { r.Options.Transfer = TransferUpload }, tune: func(o *Options) {
				if !public {
					return
				}
				// chatwoot.base_url is a public name (the test reaches it on
				// loopback); its storage redirect points at 127.0.0.1.
				o.Resolve = func(_ context.Context, host string) ([]netip.Addr, error) {
					if host == "chatwoot.test" {
						return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
					}
					return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
				}
				o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
					if host, port, _ := net.SplitHostPort(addr); host == "chatwoot.test" {
						addr = net.JoinHostPort("127.0.0.1", port)
					}
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				}
			}})
			e.useApp(imageApp)
			storage := httptest.NewServer(e.cw.StorageHandler())
			defer storage.Close()
			e.cw.SetStorageURL(storage.URL, "")
			if public {
				u, _ := url.Parse(e.cwSrv.URL)
				base := "http://chatwoot.test:" + u.Port()
				e.core.o.Chatwoot = chatwoot.NewClient(chatwoot.Options{BaseURL: base, Token: testBotToken,
					HTTPClient: &http.Client{Transport: &http.Transport{DialContext: e.core.o.Dial}}})
				e.cw.SetFrontendURL(base)
			}
			rvRun(t, e)
			conv := e.cw.NewConversation(1, simulate.Contact{ID: 5, Name: "Ann"}, "pending")
			id := e.sends(conv, "photo", simulate.Attachment{FileType: "image", Name: "x.png", ContentType: "image/png", Size: 1000}).EventID
			e.answered(id)
			q := e.dify.Requests()[0].Query
			files := e.dify.Requests()[0].Files
			if public {
				if len(files) != 0 || !strings.Contains(q, "127.0.0.1 has no public address") {
					t.Errorf("query %q files %+v", q, files)
				}
			} else if len(files) != 1 || files[0].Method != "local_file" {
				t.Errorf("query %q files %+v", q, files)
			}
		})
	}
}
