package cmd

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/internal/text"
	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/dashboard"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

type demoOptions struct {
	verbose bool
	keep    bool
	stay    bool
	timeout time.Duration
}

func newDemoCmd(a *app) *cobra.Command {
	o := &demoOptions{}
	c := &cobra.Command{
		Use:   "demo",
		Short: "Play a scripted conversation against simulated Chatwoot and Dify",
		Long: `Start a simulated Chatwoot and a simulated Dify on loopback and a real
'bridge serve' against them (its own temporary database), then play a short
conversation: a question, a follow-up that needs the earlier context, and a
request for a human; then one question from a WhatsApp customer, whose answer
must be delivered on WhatsApp (Chatwoot sends WhatsApp customers only posts
without a source_id); then a question with a photo, which reaches the app as
an image, and a WhatsApp voice note, answered from Chatwoot's transcription.
Each message's trace is printed hop by hop, and the URL of the
conversation's Dashboard App (/app/) at the end; --stay keeps everything
running so that URL can be opened in a browser.

Needs no configuration and no network. Exits 0 when the conversation went as
expected, 1 otherwise.`,
		Example: "  bridge demo\n  bridge demo --verbose\n  bridge demo --stay",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return runDemo(c.Context(), a, o)
		},
	}
	c.Flags().BoolVarP(&o.verbose, "verbose", "v", false, "also print serve's log")
	c.Flags().BoolVar(&o.keep, "keep", false, "keep the demo database and print its path")
	c.Flags().BoolVar(&o.stay, "stay", false, "keep serving after the script, until Ctrl-C, to open the Dashboard App")
	c.Flags().DurationVar(&o.timeout, "timeout", 20*time.Second, "longest wait for each answer")
	return c
}

type demoStep struct {
	conv  int64
	say   string
	atts  []simulate.Attachment
	check func(cw *simulate.Chatwoot, conv int64, before int) (string, bool)
}

func runDemo(ctx context.Context, a *app, o *demoOptions) error {
	out := a.io.Out
	st := a.styles()
	dir, err := os.MkdirTemp("", "bridge-demo-")
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	difyKey := "app-demo" + rand.Text()
	botToken := "demo-bot-" + rand.Text()
	secret := rand.Text()
	dashKey := rand.Text()

	dify := simulate.NewDify(simulate.DifyApp{Key: difyKey, Name: "Support bot", Mode: "advanced-chat",
		FileUpload: &simulate.DifyFileUpload{Types: []string{"image", "document"}}})
	difySrv := httptest.NewServer(dify)
	defer difySrv.Close()
	// Chatwoot transcribes voice notes itself (its audio transcription).
	cw := simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: botToken, TranscribeAfter: 300 * time.Millisecond})
	cwSrv := httptest.NewServer(cw)
	defer cwSrv.Close()
	defer cw.Close()
	cw.SetFrontendURL(cwSrv.URL)
	cw.AddInbox(1, "Website", "")
	cw.AddInboxChannel(2, "WhatsApp", "", simulate.ChannelWhatsapp)

	cfg := config.Defaults()
	cfg.Database = filepath.Join(dir, "bridge.db")
	cfg.Listen = "127.0.0.1:0"
	cfg.Chatwoot.BaseURL = cwSrv.URL
	cfg.Chatwoot.APIToken = config.Secret(botToken)
	cfg.Chatwoot.WebhookSecret = config.Secret(secret)
	cfg.Dify.BaseURL = difySrv.URL + "/v1"
	cfg.Dashboard.Key = config.Secret(dashKey)
	cfg.Voice.TranscriptionWait = 10 * time.Second
	var logw io.Writer = io.Discard
	if o.verbose {
		logw = a.io.Err
	}
	log := newLogger(logw, "info", "text", true, nil)
	srvCtx, stop := context.WithCancel(ctx)
	defer stop()
	s, err := startServer(srvCtx, &cfg, log, serveTuning{bridge: func(bo *bridge.Options) { bo.RetryBase = 50 * time.Millisecond }})
	if err != nil {
		return err
	}
	defer func() {
		stop()
		_ = s.wait(srvCtx) // the demo's verdict is already printed
	}()
	route := &store.Route{InboxID: 1, Name: "support", DifyKey: difyKey, Mode: store.ModeAuto, Enabled: true,
		AppName: "Support bot", AppMode: "advanced-chat"}
	if err := s.db.AddRoute(ctx, route); err != nil {
		return err
	}
	waRoute := &store.Route{InboxID: 2, Name: "whatsapp", DifyKey: difyKey, Mode: store.ModeAuto, Enabled: true,
		AppName: "Support bot", AppMode: "advanced-chat"}
	if err := s.db.AddRoute(ctx, waRoute); err != nil {
		return err
	}
	cw.SetWebhook("http://"+s.Addr()+"/webhooks/chatwoot", secret)

	fmt.Fprintln(out, st.bold.Render("bridge demo"))
	fmt.Fprintf(out, "  simulated Chatwoot  %s  (inbox 1 \"Website\", agent bot)\n", cwSrv.URL)
	fmt.Fprintf(out, "  simulated Dify      %s  (chatflow app \"Support bot\", key %s)\n", difySrv.URL+"/v1", config.Mask(difyKey))
	fmt.Fprintf(out, "  bridge serve        http://%s  (signed webhooks, database %s)\n", s.Addr(), cfg.Database)
	fmt.Fprintf(out, "  route %d             inbox 1 → Support bot\n", route.ID)
	fmt.Fprintf(out, "  route %d             inbox 2 \"WhatsApp\" → Support bot\n\n", waRoute.ID)

	conv := cw.NewConversation(1, simulate.Contact{ID: 1, Name: "Jane Doe", Email: "jane@example.com"}, "pending")
	botReply := func(want string) func(*simulate.Chatwoot, int64, int) (string, bool) {
		return func(cw *simulate.Chatwoot, conv int64, before int) (string, bool) {
			for _, m := range cw.Messages(conv)[before:] {
				if m.MessageType == "outgoing" && !m.Private && m.SenderType == "agent_bot" {
					return m.Content, strings.Contains(m.Content, want)
				}
			}
			return "", false
		}
	}
	// On WhatsApp a reply counts only when Chatwoot delivered it to the
	// customer's phone.
	delivered := func(want string) func(*simulate.Chatwoot, int64, int) (string, bool) {
		return func(cw *simulate.Chatwoot, conv int64, _ int) (string, bool) {
			for _, m := range cw.CustomerSaw(conv) {
				if strings.Contains(m.Content, want) {
					return m.Content + " (delivered on WhatsApp)", true
				}
			}
			return "", false
		}
	}
	wa := cw.NewConversation(2, simulate.Contact{ID: 2, Name: "Ahmed Ali", Phone: "+15550100"}, "pending")
	conv2 := cw.NewConversation(1, simulate.Contact{ID: 3, Name: "Li Wei", Email: "li@example.com"}, "pending")
	steps := []demoStep{
		{conv: conv, say: "Hi! Where is my order #1234?", check: botReply("order #1234")},
		{conv: conv, say: "Sorry, what did I ask you earlier?", check: botReply("Where is my order #1234?")},
		{conv: conv, say: "This is not helping. I want to talk to a human.", check: func(cw *simulate.Chatwoot, conv int64, before int) (string, bool) {
			if cw.Status(conv) != "open" {
				return "", false
			}
			var note string
			for _, m := range cw.Messages(conv)[before:] {
				if m.Private && strings.Contains(m.Content, "customer asked for a human") {
					note = m.Content
				}
			}
			return "status open; private note: " + note, note != ""
		}},
		{conv: wa, say: "Hello from WhatsApp: do you ship to Cairo?", check: delivered("ship to Cairo")},
		{conv: conv2, say: "Is this mug covered by the warranty?", check: botReply(`(I received: image "mug.jpg")`),
			atts: []simulate.Attachment{{FileType: "image", Name: "mug.jpg", ContentType: "image/jpeg", Size: 48 << 10}}},
		{conv: wa, say: "", check: delivered("Can I pay on delivery?"),
			atts: []simulate.Attachment{{FileType: "audio", Name: "voice.ogg", ContentType: "audio/ogg", Size: 12 << 10,
				Speech: "Can I pay on delivery?"}}},
	}
	ok := true
	for i, step := range steps {
		conv := step.conv
		before := len(cw.Messages(conv))
		who := "Customer:"
		if conv == wa {
			who = "WhatsApp customer:"
		}
		said := fmt.Sprintf("%q", step.say)
		for _, at := range step.atts {
			what := at.FileType
			if at.FileType == "audio" {
				what = "voice note"
			}
			said = strings.TrimPrefix(said+fmt.Sprintf(" + %s %s (%s)", what, at.Name, at.ContentType), `"" + `)
		}
		fmt.Fprintf(out, "%s %s %s\n", st.bold.Render(fmt.Sprintf("%d.", i+1)), st.bold.Render(who), said)
		d, err := cw.CustomerSends(ctx, conv, step.say, step.atts...)
		if err != nil {
			return fmt.Errorf("deliver webhook: %w", err)
		}
		var ack bridge.Ack
		_ = json.Unmarshal(d.Response, &ack) // a bad answer shows as an empty ack below
		fmt.Fprintf(out, "   webhook:  HTTP %d %s\n", d.Status, strings.TrimSpace(string(d.Response)))
		wctx, cancel := context.WithTimeout(ctx, o.timeout)
		var got string
		var good bool
		err = cw.WaitFor(wctx, func() bool {
			got, good = step.check(cw, conv, before)
			return good
		})
		cancel()
		if ack.EventID != 0 {
			// Wait for the journal to settle so the trace is complete.
			waitFinished(ctx, s.db, ack.EventID, 5*time.Second)
		}
		if err != nil || !good {
			ok = false
			fmt.Fprintf(out, "   %s %s\n", st.bad.Render("✗ no expected reply:"), text.Or(got, "(nothing)"))
		} else {
			fmt.Fprintf(out, "   %s %q\n", st.ok.Render("✓ reply:"), got)
		}
		if ack.EventID != 0 {
			e, err := s.db.Event(ctx, ack.EventID)
			if err == nil {
				hops, _ := s.db.Hops(ctx, ack.EventID) // a missing trace prints as none
				var sb strings.Builder
				writeTrace(&sb, st, &e, hops)
				for line := range strings.SplitSeq(strings.TrimRight(sb.String(), "\n"), "\n") {
					fmt.Fprintln(out, "   │ "+line)
				}
			}
		}
		fmt.Fprintln(out)
	}
	reqs := dify.Requests()
	row, _ := s.db.Conversation(ctx, 1, conv) // a missing row fails the check below
	if len(reqs) != 5 || reqs[0].ConversationID != "" || reqs[1].ConversationID == "" || reqs[1].ConversationID != row.DifyConversationID {
		ok = false
		fmt.Fprintf(out, "%s Dify saw %d requests; the follow-up should reuse the first conversation\n", st.bad.Render("✗"), len(reqs))
	} else {
		fmt.Fprintf(out, "%s Dify kept one conversation (%s) for both turns; the handoff needed no Dify call\n", st.ok.Render("✓"), reqs[1].ConversationID)
	}
	// The page opened on its own (not framed by Chatwoot) takes the
	// conversation from its URL.
	appURL := fmt.Sprintf("http://%s%s?key=%s&account_id=1&conversation_id=%d", s.Addr(), dashboard.Path, dashKey, conv)
	if o.stay {
		fmt.Fprintf(out, "Dashboard App of this conversation: %s\n", appURL)
	} else {
		fmt.Fprintf(out, "Dashboard App of this conversation: %s (bridge demo --stay keeps it open)\n", appURL)
	}
	if o.keep {
		fmt.Fprintf(out, "Database kept at %s (bridge events list --db %s)\n", cfg.Database, cfg.Database)
	}
	if !ok {
		return &failedError{msg: "demo: the conversation did not go as expected"}
	}
	fmt.Fprintln(out, st.ok.Render("Demo passed."), "Next: bridge routes add --inbox ID --dify-key-env VAR, then bridge serve.")
	if o.stay {
		fmt.Fprintln(out, "Serving until Ctrl-C.")
		<-ctx.Done()
	}
	return nil
}

// waitFinished waits until an event reached a final state, checking after
// each commit of the store.
func waitFinished(ctx context.Context, db *store.DB, id int64, limit time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		e, err := db.Event(ctx, id)
		if err == nil && e.Finished() {
			return
		}
		if errors.Is(err, store.ErrNotFound) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
