package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/dify"
	"github.com/bridge-dev/bridge/pkg/fetch"
	"github.com/bridge-dev/bridge/pkg/store"
)

// Answer formats (a route's --format).
const (
	FormatMarkdown = "markdown"
	FormatWhatsApp = "whatsapp"
	FormatPlain    = "plain"
)

// channelLimits is the longest text each channel's provider delivers, in
// characters, as Chatwoot's own reply box enforces it
// (app/javascript/shared/helpers/MessageTypeHelper.js MESSAGE_MAX_LENGTH
// and the dashboard's ReplyBox maxLength, which cite the providers' docs).
// Chatwoot itself splits nothing: a longer message is refused by the
// provider and reported only as message_updated with external_error.
var channelLimits = map[string]int{
	// developers.facebook.com/docs/whatsapp/cloud-api/reference/messages#text-object
	"Channel::Whatsapp": 4096,
	// help.twilio.com/articles/360033806753 (Twilio SMS and WhatsApp: 1600)
	"Channel::TwilioSms": 1600,
	// The reply box's limit for SMS inboxes (Bandwidth): MESSAGE_MAX_LENGTH.TWILIO_SMS.
	"Channel::Sms": 320,
	// developers.facebook.com/docs/messenger-platform/reference/send-api#request
	"Channel::FacebookPage": 2000,
	// developers.facebook.com/docs/instagram-platform/instagram-api-with-instagram-login/messaging-api
	"Channel::Instagram": 1000,
	// core.telegram.org/bots/api#sendmessage
	"Channel::Telegram": 4096,
	// MESSAGE_MAX_LENGTH.LINE (the Messaging API takes 5000)
	"Channel::Line": 2000,
	// MESSAGE_MAX_LENGTH.EMAIL
	"Channel::Email": 25000,
	// MESSAGE_MAX_LENGTH.GENERAL: X direct messages and TikTok have no
	// limit of their own there.
	"Channel::TwitterProfile": 10000,
	"Channel::Tiktok":         10000,
}

// channelLimit is the split length for a conversation's channel; an API
// inbox has no provider Chatwoot knows of, unless the route says its
// answers go to WhatsApp (behind an Evolution API or WAHA bridge).
func channelLimit(channel, format string) int {
	if n := channelLimits[channel]; n > 0 {
		return n
	}
	if format == FormatWhatsApp {
		return channelLimits["Channel::Whatsapp"]
	}
	return 0
}

// planPart is one message of an answer: its step, its exact content and
// the answer's files it carries.
type planPart struct {
	Step    string     `json:"step"`
	Content string     `json:"content"`
	Files   []planFile `json:"files,omitempty"`
}

type planFile struct {
	URL  string `json:"url"`
	Type string `json:"type,omitempty"`
	Name string `json:"name,omitempty"`
}

// plan is everything an answer posts, journaled before the first post.
type plan struct {
	Parts         []planPart `json:"parts"`
	DifyMessageID string     `json:"dify_message_id,omitempty"`
	DifyUser      string     `json:"dify_user,omitempty"`
}

// partStep names the steps of an answer's parts: answer, answer_2, ...
func partStep(i int) string {
	if i == 0 {
		return StepAnswer
	}
	return StepAnswer + "_" + strconv.Itoa(i+1)
}

// formatFor is the route's answer format ("" keeps markdown, which
// Chatwoot renders per channel itself: Messages::MarkdownRendererService).
func formatFor(r *store.Route) string {
	if r.Options.Format != "" {
		return r.Options.Format
	}
	return FormatMarkdown
}

// planAnswer lays out an answer: citations appended, converted to the
// route's format, split to fit the channel, files on the last part (15 at
// most per message, further ones in messages of their own).
func (b *Bridge) planAnswer(route *store.Route, channel, text string, ans *dify.Answer, user string) plan {
	if b.o.Citations == "append" {
		text = withCitations(text, ans.Citations)
	}
	format := formatFor(route)
	text = convertFormat(text, format)
	var parts []planPart
	if strings.TrimSpace(text) != "" {
		for _, t := range splitMessage(text, channelLimit(channel, format)) {
			parts = append(parts, planPart{Content: t})
		}
	}
	files := make([]planFile, 0, len(ans.Files))
	for _, f := range ans.Files {
		files = append(files, planFile{URL: f.URL, Type: f.Type, Name: f.Name})
	}
	for len(files) > 0 {
		n := min(len(files), chatwoot.MaxAttachments)
		if len(parts) > 0 && parts[len(parts)-1].Files == nil {
			parts[len(parts)-1].Files = files[:n]
		} else {
			parts = append(parts, planPart{Files: files[:n]})
		}
		files = files[n:]
	}
	for i := range parts {
		parts[i].Step = partStep(i)
	}
	return plan{Parts: parts, DifyMessageID: ans.MessageID, DifyUser: user}
}

// filesNote tells agents that a private note lacks the app's files: notes
// carry text only.
func filesNote(ans *dify.Answer) string {
	if len(ans.Files) == 0 {
		return ""
	}
	return fmt.Sprintf("\n(the app also produced %d file(s), not attached to notes)", len(ans.Files))
}

func withCitations(text string, cs []dify.Citation) string {
	var lines []string
	seen := map[string]bool{}
	cs = slices.Clone(cs)
	slices.SortStableFunc(cs, func(a, b dify.Citation) int { return a.Position - b.Position })
	for _, c := range cs {
		name := or(c.DocumentName, c.DatasetName)
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		line := "- " + name
		if c.DatasetName != "" && c.DatasetName != name {
			line += " (" + c.DatasetName + ")"
		}
		lines = append(lines, line)
	}
	if len(lines) == 0 {
		return text
	}
	return strings.TrimRight(text, "\n") + "\n\nSources:\n" + strings.Join(lines, "\n")
}

// planWriter journals an answer's plan (and the handoff the answer asked
// for), written with the first part's intent: before anything goes out.
func planWriter(e *store.Event, p plan, marked bool, target string) (func(*store.Tx) error, error) {
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return func(tx *store.Tx) error {
		if marked {
			// Remember the handoff (and the target the marker named)
			// before the answer goes out, so a restart between the two
			// still hands off.
			due := StepHandoffDue
			if target != "" {
				due += "," + stepHandoffTarget + target
			}
			if err := tx.UpdateEvent(e.ID, store.EventUpdate{AddStep: due}); err != nil {
				return err
			}
		}
		return tx.SavePlan(e.ID, raw)
	}, nil
}

func (b *Bridge) loadPlan(ctx context.Context, e *store.Event) (*plan, error) {
	raw, ok, err := b.o.Store.Plan(ctx, e.ID)
	if err != nil || !ok {
		return nil, err
	}
	var p plan
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("answer plan of event %d: %w", e.ID, err)
	}
	return &p, nil
}

// postPlan posts the parts still to post, in order, each as its own
// journaled step; save (nil when resuming) is journaled with the first. It
// returns the index of the part that failed, with the error.
func (b *Bridge) postPlan(ctx context.Context, e *store.Event, route *store.Route, p *plan, save func(*store.Tx) error) (int, error) {
	if len(p.Parts) > 1 {
		b.hop(ctx, e, store.Hop{Stage: StageChatwoot, Outcome: "split",
			Detail: fmt.Sprintf("answer posted as %d messages to fit the channel", len(p.Parts))})
	}
	for i, part := range p.Parts {
		if err := b.postMsg(ctx, e, route, part.Step, part.Content, false, part.Files, save); err != nil {
			return i, err
		}
		save = nil
	}
	return -1, nil
}

// finishAnswered ends an answered event and remembers its Dify message for
// feedback.
func (b *Bridge) finishAnswered(ctx context.Context, e *store.Event, route *store.Route, p *plan) error {
	return b.finishWith(ctx, e, store.StatusAnswered, "", "", store.Hop{Stage: StageDone, Outcome: "answered"},
		func(tx *store.Tx) error {
			if err := tx.CountAnswer(e.AccountID, e.ConversationID); err != nil {
				return err
			}
			if p == nil || p.DifyMessageID == "" {
				return nil
			}
			return tx.RecordAnswer(store.Answer{AccountID: e.AccountID, ConversationID: e.ConversationID, EventID: e.ID,
				RouteID: route.ID, DifyMessageID: p.DifyMessageID, DifyUser: p.DifyUser})
		})
}

// resumePlan finishes an answer whose parts were being posted when bridge
// stopped: parts done stay done, the part in doubt is settled, the rest is
// posted, or kept as a private note if a human took over meanwhile.
func (b *Bridge) resumePlan(ctx context.Context, e *store.Event, route *store.Route, p *plan) error {
	b.hop(ctx, e, store.Hop{Stage: StageWorker, Outcome: "resumed", Detail: fmt.Sprintf("the answer (%d part(s)) was being posted when bridge stopped; posting what is left", len(p.Parts))})
	if why := b.superseded(ctx, e); why != "" {
		var rest []string
		for _, part := range p.Parts {
			cur, err := b.o.Store.Event(ctx, e.ID)
			if err != nil {
				return err
			}
			if cur.HasStep(part.Step) {
				continue
			}
			if in, ok, err := b.o.Store.Intent(ctx, e.ID, part.Step); err != nil {
				return err
			} else if ok {
				done, err := b.resolveInDoubt(ctx, e, &in)
				if err != nil {
					return err
				}
				if done {
					continue
				}
			}
			rest = append(rest, part.Content)
		}
		if len(rest) > 0 {
			if err := b.post(ctx, e, StepSupersededNote, "AI draft, not sent: "+strings.Join(rest, "\n\n"), true); err != nil {
				return b.fail(ctx, e, err)
			}
		}
		return b.finish(ctx, e, store.StatusSuperseded, why, "", store.Hop{Stage: StageDone, Outcome: "superseded",
			Detail: why + "; what was not sent was kept as a private note"})
	}
	if i, err := b.postPlan(ctx, e, route, p, nil); err != nil {
		return b.afterPostFailure(ctx, e, route, i, err)
	}
	if e.HasStep(StepHandoffDue) {
		return b.handoff(ctx, e, route, HandoffAIRequested, "AI requested handoff")
	}
	return b.finishAnswered(ctx, e, route, p)
}

// afterPostFailure hands off when the customer could not get the answer
// (or its rest): silence is never the outcome.
func (b *Bridge) afterPostFailure(ctx context.Context, e *store.Event, route *store.Route, part int, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if store.IsStorage(err) {
		return err // the journal's failure, not Chatwoot's: the worker drives the event again
	}
	cur, rerr := b.o.Store.Event(ctx, e.ID)
	if rerr != nil {
		return rerr
	}
	if cur.HasStep(StepHandoffDue) {
		return b.fail(ctx, e, err)
	}
	what := "answer"
	if part > 0 {
		what = fmt.Sprintf("part %d of the answer", part+1)
	}
	return b.handoff(ctx, e, route, HandoffAIFailed, what+" could not be posted: "+errText(err))
}

// sendMessage makes one POST of a message, with the answer's files when it
// has any: each is downloaded from Dify as the request streams it to
// Chatwoot, never stored. A file that cannot be fetched is left out (and
// said so in the trace); the text still goes.
func (b *Bridge) sendMessage(ctx context.Context, e *store.Event, route *store.Route, content string, private bool, files []planFile) (*chatwoot.Message, error) {
	msg := chatwoot.NewMessage{Content: content, Private: private}
	if len(files) == 0 || route == nil {
		return b.o.Chatwoot.PostMessage(ctx, e.AccountID, e.ConversationID, msg)
	}
	f, err := b.difyFetcher(route)
	if err != nil {
		return nil, err
	}
	var (
		out   []chatwoot.OutFile
		open  []io.Closer
		names []string
	)
	defer func() {
		for _, c := range open {
			_ = c.Close() // the download is over either way
		}
	}()
	for i, pf := range files {
		u := asAttachment(resolveDifyURL(b.RouteURL(route), pf.URL))
		d, err := f.Open(ctx, u)
		if err != nil {
			b.hop(ctx, e, store.Hop{Stage: StageAttachments, Outcome: "file left out",
				Detail: fmt.Sprintf("answer file %d (%s) could not be fetched from dify: %s", i+1, fetch.Redact(u), errText(err))})
			continue
		}
		open = append(open, d)
		name := or(pf.Name, or(d.Name, "file"+strconv.Itoa(i+1)))
		if path.Ext(name) == "" && pf.Type == dify.FileImage {
			name += ".png"
		}
		out = append(out, chatwoot.OutFile{Name: name, ContentType: d.ContentType, Body: d.Body, Size: d.Size})
		names = append(names, fmt.Sprintf("%s (%s)", name, sizeWord(d.Size)))
	}
	if len(out) == 0 {
		if strings.TrimSpace(content) == "" {
			return nil, errNothingToPost
		}
		return b.o.Chatwoot.PostMessage(ctx, e.AccountID, e.ConversationID, msg)
	}
	m, err := b.o.Chatwoot.PostMessageFiles(ctx, e.AccountID, e.ConversationID, msg, out)
	if err == nil {
		b.hop(ctx, e, store.Hop{Stage: StageAttachments, Outcome: "attached",
			Detail: fmt.Sprintf("%d file(s) streamed from dify to chatwoot message %d: %s", len(out), m.ID, strings.Join(names, ", "))})
	}
	return m, err
}

// errNothingToPost: a part of files only, none of which could be fetched.
var errNothingToPost = errors.New("nothing to post: none of the answer's files could be fetched from dify")

func sizeWord(n int64) string {
	if n < 0 {
		return "size unknown"
	}
	return fetch.Bytes(n)
}

// resolveDifyURL makes a file URL of Dify's absolute: without FILES_URL
// Dify signs it as "/files/tools/..." (api/core/tools/signature.py
// bind_file_uri), under its own origin.
func resolveDifyURL(base, raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.IsAbs() {
		return raw
	}
	b, err := url.Parse(base)
	if err != nil {
		return raw
	}
	b.Path, b.RawPath = "", ""
	return b.ResolveReference(u).String()
}

// asAttachment asks Dify's tool file endpoint for the file's name
// (as_attachment=true adds Content-Disposition with it;
// api/controllers/files/tool_files.py). The signature covers only the id,
// timestamp and nonce, so the extra parameter keeps the URL valid.
func asAttachment(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || !strings.Contains(u.Path, "/files/tools/") {
		return raw
	}
	q := u.Query()
	q.Set("as_attachment", "true")
	u.RawQuery = q.Encode()
	return u.String()
}

// ---- splitting ----

// splitMessage cuts text into parts of at most limit characters (runes): at
// paragraphs, then sentences, then words; a code block or a link is never
// cut, unless it alone is longer than a part (a code block then goes in
// pieces, each closed and reopened with its fence). limit 0 splits nothing.
func splitMessage(text string, limit int) []string {
	text = strings.TrimSpace(text)
	if limit <= 0 || runes(text) <= limit {
		return []string{text}
	}
	var out []string
	cur := ""
	flush := func() {
		if strings.TrimSpace(cur) != "" {
			out = append(out, strings.TrimSpace(cur))
		}
		cur = ""
	}
	add := func(piece, sep string) {
		if cur == "" {
			cur = piece
			return
		}
		if runes(cur)+runes(sep)+runes(piece) <= limit {
			cur += sep + piece
			return
		}
		flush()
		cur = piece
	}
	for _, blk := range blocks(text) {
		if runes(blk.text) <= limit {
			add(blk.text, "\n\n")
			continue
		}
		flush()
		var pieces []string
		if blk.code {
			pieces = splitCode(blk.text, limit)
		} else {
			pieces = splitProse(blk.text, limit)
		}
		for _, p := range pieces {
			add(p, "\n")
		}
		flush()
	}
	flush()
	return out
}

func runes(s string) int { return len([]rune(s)) }

type block struct {
	text string
	code bool
}

// blocks cuts markdown into paragraphs (blank-line separated) and fenced
// code blocks, which keep their blank lines.
func blocks(text string) []block {
	var out []block
	var cur []string
	inCode := false
	fence := ""
	flush := func(code bool) {
		if len(cur) > 0 {
			t := strings.Trim(strings.Join(cur, "\n"), "\n")
			if strings.TrimSpace(t) != "" {
				out = append(out, block{text: t, code: code})
			}
		}
		cur = nil
	}
	for line := range strings.SplitSeq(text, "\n") {
		trim := strings.TrimSpace(line)
		switch {
		case inCode:
			cur = append(cur, line)
			if strings.HasPrefix(trim, fence) && strings.Trim(trim, fence[:1]) == "" {
				inCode = false
				flush(true)
			}
		case strings.HasPrefix(trim, "```") || strings.HasPrefix(trim, "~~~"):
			flush(false)
			inCode = true
			fence = trim[:3]
			cur = append(cur, line)
		case trim == "":
			flush(false)
		default:
			cur = append(cur, line)
		}
	}
	flush(inCode)
	return out
}

// splitCode cuts a code block at line boundaries, closing each piece with
// the fence and reopening the next with the opening line (its language).
func splitCode(code string, limit int) []string {
	lines := strings.Split(code, "\n")
	open, body, closing := lines[0], lines[1:], ""
	if n := len(body); n > 0 && strings.HasPrefix(strings.TrimSpace(body[n-1]), strings.TrimSpace(open)[:3]) {
		closing, body = body[n-1], body[:n-1]
	} else {
		closing = strings.TrimSpace(open)[:3]
	}
	room := limit - runes(open) - runes(closing) - 2
	if room < 20 {
		// A fence that does not fit is not worth keeping.
		return splitWords(code, limit)
	}
	var out []string
	var cur []string
	size := 0
	emit := func() {
		if len(cur) > 0 {
			out = append(out, open+"\n"+strings.Join(cur, "\n")+"\n"+closing)
		}
		cur, size = nil, 0
	}
	for _, l := range body {
		for runes(l) > room {
			r := []rune(l)
			emit()
			cur, size = []string{string(r[:room])}, room
			emit()
			l = string(r[room:])
		}
		if size+runes(l)+1 > room {
			emit()
		}
		cur = append(cur, l)
		size += runes(l) + 1
	}
	emit()
	return out
}

// splitProse cuts a paragraph at sentence ends, then at words.
func splitProse(p string, limit int) []string {
	return pack(sentences(p), limit, func(s string) ([]string, string) { return splitWords(s, limit), "" })
}

// pack joins pieces with spaces into parts of at most limit runes, in
// order. A piece longer than limit ends the part before it and is cut by
// cut, which returns the finished parts and what is left of it to join the
// pieces that follow.
func pack(pieces []string, limit int, cut func(string) (done []string, rest string)) []string {
	var out []string
	cur := ""
	for _, p := range pieces {
		if runes(p) > limit {
			if cur != "" {
				out, cur = append(out, cur), ""
			}
			var done []string
			done, p = cut(p)
			out = append(out, done...)
		}
		switch {
		case p == "":
		case cur == "":
			cur = p
		case runes(cur)+1+runes(p) <= limit:
			cur += " " + p
		default:
			out, cur = append(out, cur), p
		}
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}

// sentences cuts prose after ., ! ? or … followed by a space, and at line
// breaks, never inside a link.
func sentences(p string) []string {
	var out []string
	toks := words(p)
	cur := ""
	for _, t := range toks {
		if cur != "" && !strings.HasPrefix(t, "\n") {
			cur += " "
		}
		cur += strings.TrimPrefix(t, "\n")
		end := strings.TrimRight(t, `"')]*_`)
		if strings.HasSuffix(end, ".") || strings.HasSuffix(end, "!") || strings.HasSuffix(end, "?") || strings.HasSuffix(end, "…") {
			out, cur = append(out, cur), ""
		}
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}

// splitWords cuts at spaces, keeping links whole; a single word longer than
// limit is cut where it must be.
func splitWords(s string, limit int) []string {
	ws := words(s)
	for i, w := range ws {
		ws[i] = strings.TrimPrefix(w, "\n")
	}
	return pack(ws, limit, func(w string) ([]string, string) {
		var done []string
		r := []rune(w)
		for len(r) > limit {
			done, r = append(done, string(r[:limit])), r[limit:]
		}
		return done, string(r)
	})
}

// words splits on whitespace, but a markdown link or image ("[a b](url)")
// is one word; a word that followed a line break starts with "\n".
func words(s string) []string {
	var out []string
	var cur strings.Builder
	depth := 0 // inside [ ... ]( ... )
	nl := false
	flush := func() {
		if cur.Len() > 0 {
			w := cur.String()
			if nl {
				w = "\n" + w
			}
			out = append(out, w)
			cur.Reset()
			nl = false
		}
	}
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case r == '[':
			depth++
		case r == ']' && depth > 0 && i+1 < len(rs) && rs[i+1] == '(':
			// stays open until the closing parenthesis
		case r == ']' && depth > 0:
			depth--
		case r == ')' && depth > 0:
			depth--
		}
		if depth == 0 && (r == ' ' || r == '\t' || r == '\n') {
			flush()
			if r == '\n' {
				nl = true
			}
			continue
		}
		cur.WriteRune(r)
	}
	flush()
	return out
}

// ---- formats ----

// convertFormat turns the app's markdown into what the customer's client
// shows: WhatsApp's own markup (*bold*, _italic_, ~strike~, ``` code) or
// plain text. Chatwoot does this itself for its native channels
// (Messages::MarkdownRendererService); an API inbox passes content through
// unchanged, so an inbox bridged to WhatsApp elsewhere needs it here.
// Code is left as it is.
func convertFormat(text, format string) string {
	switch format {
	case FormatWhatsApp:
		return mapOutsideCode(text, toWhatsApp, false)
	case FormatPlain:
		return mapOutsideCode(text, toPlain, true)
	}
	return text
}

// mapOutsideCode applies fn to the text outside code spans and fenced
// blocks; plain also drops the fences and backticks.
func mapOutsideCode(text string, fn func(string) string, plain bool) string {
	var b strings.Builder
	for _, seg := range codeSegments(text) {
		switch {
		case !seg.code:
			b.WriteString(fn(seg.text))
		case plain && seg.fenced:
			lines := strings.Split(seg.text, "\n")
			if len(lines) >= 2 {
				lines = lines[1 : len(lines)-1]
			}
			b.WriteString(strings.Join(lines, "\n"))
		case plain:
			b.WriteString(strings.Trim(seg.text, "`"))
		default:
			b.WriteString(seg.text)
		}
	}
	return b.String()
}

type segment struct {
	text         string
	code, fenced bool
}

// codeSegments splits text into prose, inline code spans and fenced blocks.
func codeSegments(text string) []segment {
	var out []segment
	var prose strings.Builder
	lines := strings.SplitAfter(text, "\n")
	for i := 0; i < len(lines); i++ {
		trim := strings.TrimSpace(lines[i])
		if strings.HasPrefix(trim, "```") {
			if prose.Len() > 0 {
				out = append(out, inlineSegments(prose.String())...)
				prose.Reset()
			}
			var blk strings.Builder
			blk.WriteString(lines[i])
			for i++; i < len(lines); i++ {
				blk.WriteString(lines[i])
				if strings.HasPrefix(strings.TrimSpace(lines[i]), "```") {
					break
				}
			}
			t := blk.String()
			trail := ""
			if strings.HasSuffix(t, "\n") {
				t, trail = strings.TrimSuffix(t, "\n"), "\n"
			}
			out = append(out, segment{text: t, code: true, fenced: true})
			if trail != "" {
				prose.WriteString(trail)
			}
			continue
		}
		prose.WriteString(lines[i])
	}
	if prose.Len() > 0 {
		out = append(out, inlineSegments(prose.String())...)
	}
	return out
}

func inlineSegments(s string) []segment {
	var out []segment
	for {
		i := strings.IndexByte(s, '`')
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i+1:], '`')
		if j < 0 {
			break
		}
		if i > 0 {
			out = append(out, segment{text: s[:i]})
		}
		out = append(out, segment{text: s[i : i+j+2], code: true})
		s = s[i+j+2:]
	}
	if s != "" {
		out = append(out, segment{text: s})
	}
	return out
}

// toWhatsApp converts one stretch of markdown prose to WhatsApp markup.
func toWhatsApp(s string) string {
	s = mdImage.ReplaceAllString(s, "$2")
	s = mdLink.ReplaceAllStringFunc(s, func(m string) string {
		sub := mdLink.FindStringSubmatch(m)
		if strings.TrimSpace(sub[1]) == sub[2] {
			return sub[2]
		}
		return sub[1] + " (" + sub[2] + ")"
	})
	s = mdItalicStar.ReplaceAllString(s, "${1}_${2}_")
	s = mdBoldStars.ReplaceAllString(s, "*$1*")
	s = mdBoldUnders.ReplaceAllString(s, "*$1*")
	s = mdStrike.ReplaceAllString(s, "~$1~")
	s = heading(s)
	s = mdBulletStar.ReplaceAllString(s, "$1- ")
	return s
}

// toPlain strips markdown from one stretch of prose.
func toPlain(s string) string {
	s = mdImage.ReplaceAllString(s, "$2")
	s = mdLink.ReplaceAllStringFunc(s, func(m string) string {
		sub := mdLink.FindStringSubmatch(m)
		if strings.TrimSpace(sub[1]) == sub[2] {
			return sub[2]
		}
		return sub[1] + " (" + sub[2] + ")"
	})
	s = mdHeading.ReplaceAllString(s, "$1$2")
	s = mdBoldStars.ReplaceAllString(s, "$1")
	s = mdBoldUnders.ReplaceAllString(s, "$1")
	s = mdItalicStar.ReplaceAllString(s, "$1$2")
	s = mdItalicUnder.ReplaceAllString(s, "$1$2")
	s = mdStrike.ReplaceAllString(s, "$1")
	s = mdQuote.ReplaceAllString(s, "$1")
	s = mdBulletStar.ReplaceAllString(s, "$1- ")
	return s
}

var (
	mdImage       = regexp.MustCompile(`!\[([^\]]*)\]\(([^)\s]+)\)`)
	mdLink        = regexp.MustCompile(`\[([^\]]+)\]\(([^)\s]+)\)`)
	mdHeading     = regexp.MustCompile(`(?m)^([ \t]{0,3})#{1,6}[ \t]+(.+?)[ \t#]*$`)
	mdBoldStars   = regexp.MustCompile(`\*\*(\S(?:.*?\S)?)\*\*`)
	mdBoldUnders  = regexp.MustCompile(`__(\S(?:.*?\S)?)__`)
	mdItalicStar  = regexp.MustCompile(`(^|[^*\w])\*([^*\s](?:[^*\n]*[^*\s])?)\*`)
	mdItalicUnder = regexp.MustCompile(`(^|[^_\w])_([^_\s](?:[^_\n]*[^_\s])?)_`)
	mdStrike      = regexp.MustCompile(`~~(\S(?:.*?\S)?)~~`)
	mdBulletStar  = regexp.MustCompile(`(?m)^([ \t]*)[*+][ \t]+`)
	mdQuote       = regexp.MustCompile(`(?m)^([ \t]*)>[ \t]?`)
)

// heading makes a markdown heading's text bold in WhatsApp's markup.
func heading(s string) string {
	return mdHeading.ReplaceAllStringFunc(s, func(m string) string {
		sub := mdHeading.FindStringSubmatch(m)
		return sub[1] + "*" + strings.Trim(sub[2], "*_ ") + "*"
	})
}
