package cmd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// stall sits in front of a simulator. While stalling, a GET whose path
// has prefix sends its headers and the first bytes of the body, then
// nothing more until the client goes away: bridge is in the middle of a
// download when it is killed.
type stall struct {
	h        http.Handler
	prefix   string
	stalling atomic.Bool
	started  chan struct{}
}

func (s *stall) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, s.prefix) || !s.stalling.Load() {
		s.h.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	s.h.ServeHTTP(rec, r)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes()[:min(1024, rec.Body.Len())])
	w.(http.Flusher).Flush()
	select {
	case s.started <- struct{}{}:
	default:
	}
	<-r.Context().Done()
}

// TestKillBetweenDownloadAndPost: `bridge serve` is killed (SIGKILL) in the
// middle of moving a file: an answer's file from Dify to Chatwoot (the
// answer's post is journaled, not yet made), or a customer's photo from
// Chatwoot to Dify. After a restart the customer gets the answer, with its
// file, exactly once.
func TestKillBetweenDownloadAndPost(t *testing.T) {
	bin := buildBridge(t)
	const key = "app-richcrash0000000000001"
	pdf := simulate.DifyOutFile{Type: "document", Name: "invoice.pdf", ContentType: "application/pdf", Size: 256 << 10}
	photo := simulate.Attachment{FileType: "image", Name: "damage.jpg", ContentType: "image/jpeg", Size: 512 << 10}
	for _, tc := range []struct {
		name      string
		difySide  bool // stall the answer's file at Dify, else the photo at Chatwoot
		userToken bool
	}{
		{"answer file from dify, user token", true, true},
		{"answer file from dify, no user token", true, false},
		{"customer photo from chatwoot", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			db := filepath.Join(dir, "bridge.db")
			dify := simulate.NewDify(simulate.DifyApp{Key: key, Name: "Support", Mode: "chat",
				FileUpload: &simulate.DifyFileUpload{Types: []string{"image"}},
				Respond: func(c simulate.DifyCall) simulate.DifyResponse {
					r := simulate.DifyResponse{Text: "Here is your invoice."}
					if len(c.Files) == 0 {
						r.Files = []simulate.DifyOutFile{pdf}
					}
					return r
				}})
			defer dify.Close()
			difyProxy := &stall{h: dify, prefix: "/files/tools/", started: make(chan struct{}, 1)}
			difySrv := httptest.NewServer(difyProxy)
			defer difySrv.Close()
			cw := simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: "bot-rich", UserToken: "user-rich"})
			defer cw.Close()
			cwProxy := &stall{h: cw, prefix: "/rails/active_storage/disk/", started: make(chan struct{}, 1)}
			cwSrv := httptest.NewServer(cwProxy)
			defer cwSrv.Close()
			cw.SetFrontendURL(cwSrv.URL)
			cw.AddInbox(1, "Website", "")
			stalled := difyProxy
			if !tc.difySide {
				stalled = cwProxy
			}
			stalled.stalling.Store(true)

			s, err := store.Open(t.Context(), db)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.AddRoute(t.Context(), &store.Route{InboxID: 1, DifyKey: key, Mode: store.ModeAuto, Enabled: true}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			env := []string{
				"BRIDGE_DATABASE=" + db,
				"BRIDGE_CHATWOOT_BASE_URL=" + cwSrv.URL,
				"BRIDGE_CHATWOOT_API_TOKEN=bot-rich",
				"BRIDGE_CHATWOOT_ECHO_WAIT=300ms",
				"BRIDGE_DIFY_BASE_URL=" + difySrv.URL + "/v1",
				"BRIDGE_LOG_FORMAT=json",
				"XDG_CONFIG_HOME=" + dir,
			}
			if tc.userToken {
				env = append(env, "BRIDGE_CHATWOOT_USER_TOKEN=user-rich")
			}
			p := startServe(t, bin, env)
			cw.SetWebhook("http://"+p.addr+"/webhooks/chatwoot", "")
			conv := cw.NewConversation(1, simulate.Contact{ID: 7, Name: "Ann"}, "pending")
			var d simulate.Delivery
			if tc.difySide {
				d, err = cw.CustomerSays(t.Context(), conv, "send me my invoice")
			} else {
				d, err = cw.CustomerSends(t.Context(), conv, "is this covered?", photo)
			}
			if err != nil || d.Status != 200 {
				t.Fatalf("webhook: %d %v", d.Status, err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			select {
			case <-stalled.started:
			case <-ctx.Done():
				t.Fatalf("the download never started:\n%s", p.stderr.String())
			}
			p.signal(syscall.SIGKILL)
			p.exit(10 * time.Second)
			if n := countBot(cw, conv); n != 0 {
				t.Fatalf("%d answers before the restart", n)
			}
			stalled.stalling.Store(false)

			p2 := startServe(t, bin, env)
			cw.SetWebhook("http://"+p2.addr+"/webhooks/chatwoot", "")
			if err := cw.WaitFor(ctx, func() bool { return countBot(cw, conv) >= 1 }); err != nil {
				t.Fatalf("no answer after the restart:\n%s", p2.stderr.String())
			}
			p2.signal(syscall.SIGTERM)
			if code := p2.exit(15 * time.Second); code != 0 {
				t.Errorf("serve exit code = %d\n%s", code, p2.stderr.String())
			}
			if n := countBot(cw, conv); n != 1 {
				t.Errorf("answered %d times", n)
			}
			for _, m := range cw.Messages(conv) {
				if m.SenderType != "agent_bot" || m.Private {
					continue
				}
				if tc.difySide {
					h := sha256.New()
					_, _ = io.Copy(h, io.LimitReader(simulate.AttachmentContent(simulate.Attachment{Size: pdf.Size}), pdf.Size))
					if len(m.Attachments) != 1 || m.Attachments[0].Name != "invoice.pdf" || m.Attachments[0].SHA256 != hex.EncodeToString(h.Sum(nil)) {
						t.Errorf("the answer's file: %+v", m.Attachments)
					}
				}
			}
			if !tc.difySide {
				reqs := dify.Requests()
				if len(reqs) != 1 || len(reqs[0].Files) != 1 || reqs[0].Files[0].Name != "damage.jpg" || reqs[0].Files[0].Size != photo.Size {
					t.Errorf("dify requests %+v", reqs)
				}
				return
			}
			// The answer's post was journaled before the kill: the restart
			// settled it before posting.
			s, err = store.Open(t.Context(), db)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			evs, err := s.ListEvents(t.Context(), store.EventFilter{Status: store.StatusAnswered, Limit: 10})
			if err != nil || len(evs) != 1 {
				t.Fatalf("answered events %d: %v", len(evs), err)
			}
			hops, err := s.Hops(t.Context(), evs[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			want := "in doubt: posted again"
			if tc.userToken {
				want = "in doubt: not in chatwoot"
			}
			found := false
			for _, h := range hops {
				found = found || h.Outcome == want
			}
			if !found {
				t.Errorf("no %q hop: %+v", want, hops)
			}
		})
	}
}
