package cmd

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// holdPosts sits between bridge and the simulated Chatwoot. While holding,
// it lets Chatwoot create each public message bridge posts and then keeps
// the answer back, so a kill -9 lands after Chatwoot's 200 and before
// bridge can record it: the post is in doubt.
type holdPosts struct {
	cw      http.Handler
	holding atomic.Bool

	mu   sync.Mutex
	held map[int64]int // conversation → posts held
	cond chan struct{}
}

var convMessages = regexp.MustCompile(`/conversations/(\d+)/messages$`)

func (h *holdPosts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := convMessages.FindStringSubmatch(r.URL.Path)
	if r.Method != http.MethodPost || m == nil || !h.holding.Load() {
		h.cw.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	h.cw.ServeHTTP(rec, r)
	conv, _ := strconv.ParseInt(m[1], 10, 64)
	h.mu.Lock()
	h.held[conv]++
	select {
	case h.cond <- struct{}{}:
	default:
	}
	h.mu.Unlock()
	<-r.Context().Done() // the client dies first
}

func (h *holdPosts) heldConvs() map[int64]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[int64]int, len(h.held))
	for k, v := range h.held {
		out[k] = v
	}
	return out
}

// TestKillWhilePostingInDoubt: `bridge serve` is killed (SIGKILL) while
// Chatwoot has created answers whose 200 bridge never saw. After a restart
// nobody is left without an answer, and only where bridge cannot know
// (no user token, the webhooks of the posts lost with the process) may an
// answer be doubled.
func TestKillWhilePostingInDoubt(t *testing.T) {
	bin := buildBridge(t)
	cases := []struct {
		name      string
		userToken bool
		// echoes: Chatwoot's webhooks of the held posts reach bridge before
		// the kill.
		echoes      bool
		wantOutcome string
		mayDouble   bool
	}{
		{"webhooks journaled before the kill", false, true, "in doubt: found in journal", false},
		{"user token lists the messages", true, false, "in doubt: found in chatwoot", false},
		{"no way to know: posted again", false, false, "in doubt: posted again", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			db := filepath.Join(dir, "bridge.db")
			const key = "app-indoubt000000000000001"
			dify := simulate.NewDify(simulate.DifyApp{Key: key, Name: "Support", Mode: "chat"})
			difySrv := httptest.NewServer(dify)
			defer difySrv.Close()
			defer dify.Close()
			cw := simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: "bot-indoubt", UserToken: "user-indoubt",
				NoEcho: !tc.echoes})
			defer cw.Close()
			cw.AddInbox(1, "Website", "")
			proxy := &holdPosts{cw: cw, held: map[int64]int{}, cond: make(chan struct{}, 1)}
			proxy.holding.Store(true)
			cwSrv := httptest.NewServer(proxy)
			defer cwSrv.Close()

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
				"BRIDGE_CHATWOOT_API_TOKEN=bot-indoubt",
				"BRIDGE_CHATWOOT_WEBHOOK_SECRET=indoubt-secret",
				"BRIDGE_CHATWOOT_ECHO_WAIT=300ms",
				"BRIDGE_HANDOFF_MESSAGE=",
				"BRIDGE_DIFY_BASE_URL=" + difySrv.URL + "/v1",
				"BRIDGE_LOG_FORMAT=json",
				"XDG_CONFIG_HOME=" + dir,
				// Fewer workers than conversations: the 8 posts held are
				// every post made before the kill, and their 8 echoes are
				// what the test waits for.
				"BRIDGE_WORKER_CONCURRENCY=8",
			}
			if tc.userToken {
				env = append(env, "BRIDGE_CHATWOOT_USER_TOKEN=user-indoubt")
			}
			p := startServe(t, bin, env)
			cw.SetWebhook("http://"+p.addr+"/webhooks/chatwoot", "indoubt-secret")
			const n = 12
			convs := make([]int64, n)
			for i := range n {
				convs[i] = cw.NewConversation(1, simulate.Contact{ID: int64(100 + i), Name: "C"}, "pending")
				d, err := cw.CustomerSays(t.Context(), convs[i], fmt.Sprintf("question %d", i))
				if err != nil || d.Status != 200 || !strings.Contains(string(d.Response), `"accepted"`) {
					t.Fatalf("webhook %d: %d %s %v", i, d.Status, d.Response, err)
				}
			}
			// Every worker ends up holding a post Chatwoot already made.
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			for len(proxy.heldConvs()) < 8 {
				select {
				case <-proxy.cond:
				case <-ctx.Done():
					t.Fatalf("only %d posts held:\n%s", len(proxy.heldConvs()), p.stderr.String())
				}
			}
			if tc.echoes {
				if err := cw.WaitFor(ctx, func() bool {
					ok := 0
					for _, d := range cw.Deliveries() {
						if d.Event == "message_created" && d.Status == 200 && strings.Contains(string(d.Body), `"agent_bot"`) {
							ok++
						}
					}
					return ok >= 8
				}); err != nil {
					t.Fatal("the webhooks of the held posts did not arrive")
				}
			}
			p.signal(syscall.SIGKILL)
			p.exit(10 * time.Second)
			held := proxy.heldConvs()
			proxy.holding.Store(false)

			p2 := startServe(t, bin, env)
			cw.SetWebhook("http://"+p2.addr+"/webhooks/chatwoot", "indoubt-secret")
			if err := cw.WaitFor(ctx, func() bool {
				for _, c := range convs {
					if countBot(cw, c) < 1 {
						return false
					}
				}
				return true
			}); err != nil {
				t.Fatalf("a customer was left without an answer:\n%s", p2.stderr.String())
			}
			// Let anything still in flight land before counting.
			p2.signal(syscall.SIGTERM)
			if code := p2.exit(15 * time.Second); code != 0 {
				t.Errorf("serve exit code = %d\n%s", code, p2.stderr.String())
			}
			for _, c := range convs {
				got, max := countBot(cw, c), 1
				if held[c] > 0 && tc.mayDouble {
					max = 2
				}
				if got < 1 || got > max {
					t.Errorf("conversation %d (held %d) answered %d times", c, held[c], got)
				}
			}
			s, err = store.Open(t.Context(), db)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			evs, err := s.ListEvents(t.Context(), store.EventFilter{Status: store.StatusAnswered, Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != n {
				t.Errorf("%d events answered, want %d", len(evs), n)
			}
			outcomes := 0
			for _, e := range evs {
				hops, err := s.Hops(t.Context(), e.ID)
				if err != nil {
					t.Fatal(err)
				}
				for _, h := range hops {
					if h.Outcome == tc.wantOutcome {
						outcomes++
					}
				}
				if held[e.ConversationID] > 0 && e.PostedMessageID == 0 {
					t.Errorf("event %d: no Chatwoot message recorded", e.ID)
				}
			}
			if outcomes != len(held) {
				t.Errorf("%d hops %q, want one per post in doubt (%d)", outcomes, tc.wantOutcome, len(held))
			}
		})
	}
}
