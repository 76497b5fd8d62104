package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/dify"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

const (
	docBotToken  = "cw-bot-token-1234567890"
	docUserToken = "cw-user-token-0987654321"
	docDifyKey   = "app-support0000000000000001"
	docPublic    = "https://bridge.example.com"
)

// docNow is the doctor's clock in these tests; the fake Chatwoot's Date
// header follows it, so the clock check agrees.
var docNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// docHarness is a healthy set-up: fake Chatwoot with inbox 3 whose agent bot
// sends to public_url, a fake Dify chat app, a store with a route for inbox
// 3, and a webhook answered an hour ago. Each test breaks one thing.
type docHarness struct {
	t       *testing.T
	cw      *simulate.Chatwoot
	cwURL   string
	dify    *simulate.Dify
	difyURL string
	db      *store.DB
	// chatwootDate is what the fake Chatwoot's Date header says.
	chatwootDate time.Time
	opts         Options
}

func newDocHarness(t *testing.T) *docHarness {
	t.Helper()
	h := &docHarness{t: t, chatwootDate: docNow}
	h.cw = simulate.NewChatwoot(simulate.ChatwootOptions{BotToken: docBotToken, UserToken: docUserToken})
	h.cw.AddInbox(3, "Support", docPublic+bridge.WebhookPath)
	cwSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", h.chatwootDate.UTC().Format(http.TimeFormat))
		h.cw.ServeHTTP(w, r)
	}))
	t.Cleanup(cwSrv.Close)
	t.Cleanup(h.cw.Close)
	h.cwURL = cwSrv.URL

	h.dify = simulate.NewDify(simulate.DifyApp{Key: docDifyKey, Name: "Support bot", Mode: simulate.ModeAdvancedChat})
	difySrv := httptest.NewServer(h.dify)
	t.Cleanup(difySrv.Close)
	t.Cleanup(h.dify.Close)
	h.difyURL = difySrv.URL + "/v1"

	db, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "bridge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() }) // the test is over; nothing to report
	h.db = db
	h.addRoute(&store.Route{InboxID: 3, Name: "support", DifyKey: docDifyKey, Enabled: true})
	h.addEvent(store.Event{ReceivedAt: docNow.Add(-time.Hour), Event: "message_created", AccountID: 1, InboxID: 3,
		ConversationID: 1, MessageID: 1001, Status: store.StatusAnswered})

	h.opts = Options{
		Store:         db,
		Chatwoot:      chatwoot.NewClient(chatwoot.Options{BaseURL: h.cwURL, Token: docBotToken}),
		ChatwootUser:  chatwoot.NewClient(chatwoot.Options{BaseURL: h.cwURL, Token: docUserToken}),
		PublicURL:     docPublic,
		DifyBaseURL:   h.difyURL,
		WebhookSecret: true,
		Getenv:        func(string) string { return "" },
		Now:           func() time.Time { return docNow },
		Lookup:        docLookup(t, map[string][]string{"bridge.example.com": {"93.184.215.14"}}),
		Timeout:       5 * time.Second,
	}
	return h
}

// docLookup resolves from a table; nothing reaches a real resolver.
func docLookup(t *testing.T, table map[string][]string) func(context.Context, string) ([]netip.Addr, error) {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		ss, found := table[host]
		if !found {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		out := make([]netip.Addr, len(ss))
		for i, s := range ss {
			out[i] = netip.MustParseAddr(s)
		}
		return out, nil
	}
}

func (h *docHarness) addRoute(r *store.Route) {
	h.t.Helper()
	if err := h.db.AddRoute(h.t.Context(), r); err != nil {
		h.t.Fatal(err)
	}
}

// addEvent journals e as if it had happened at e.ReceivedAt.
func (h *docHarness) addEvent(e store.Event) int64 {
	h.t.Helper()
	at := e.ReceivedAt
	h.db.Now = func() time.Time { return at }
	err := h.db.Write(h.t.Context(), func(tx *store.Tx) error {
		if err := tx.InsertEvent(&e); err != nil {
			return err
		}
		if e.LastError == "" {
			return nil
		}
		return tx.UpdateEvent(e.ID, store.EventUpdate{LastError: &e.LastError}) // InsertEvent leaves it out
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return e.ID
}

func (h *docHarness) run() []Result {
	h.t.Helper()
	return Run(h.t.Context(), h.opts)
}

// docCheck returns the check named name, failing the test when there is none.
func docCheck(t *testing.T, rs []Result, name string) Result {
	t.Helper()
	for _, r := range rs {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no check %q in:\n%s", name, docDump(rs))
	return Result{}
}

func docDump(rs []Result) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  %-4s %-18s %s", r.Status, r.Name, r.Detail)
		if r.Fix != "" {
			fmt.Fprintf(&b, " [fix: %s]", r.Fix)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// docExpect asserts a check's status and that its detail and fix contain
// the given fragments ("fix:" prefixes a fragment of the fix).
func docExpect(t *testing.T, rs []Result, name string, status Status, fragments ...string) Result {
	t.Helper()
	r := docCheck(t, rs, name)
	if r.Status != status {
		t.Fatalf("check %q: status %s, want %s\n%s", name, r.Status, status, docDump(rs))
	}
	for _, f := range fragments {
		if fix, isFix := strings.CutPrefix(f, "fix:"); isFix {
			if !strings.Contains(r.Fix, fix) {
				t.Errorf("check %q: fix %q lacks %q", name, r.Fix, fix)
			}
			continue
		}
		if !strings.Contains(r.Detail, f) {
			t.Errorf("check %q: detail %q lacks %q", name, r.Detail, f)
		}
	}
	if status != OK && r.Fix == "" {
		t.Errorf("check %q is %s without a fix", name, status)
	}
	return r
}

func TestDoctorHealthy(t *testing.T) {
	h := newDocHarness(t)
	rs := h.run()
	want := []string{"database", "schema", "routes", "chatwoot", "chatwoot token", "chatwoot user token",
		"chatwoot account", "webhook auth", "clock", "public url", "inbox 3", "dify route 1",
		"webhooks received", "rejected webhooks", "unrouted inboxes", "failed events", "stuck events", "posts in doubt"}
	var got []string
	for _, r := range rs {
		got = append(got, r.Name)
		if r.Status != OK {
			t.Errorf("check %q is %s: %s (fix: %s)", r.Name, r.Status, r.Detail, r.Fix)
		}
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("checks\n got %q\nwant %q", got, want)
	}
	docExpect(t, rs, "chatwoot", OK, h.cwURL, "4.14.0")
	docExpect(t, rs, "public url", OK, "93.184.215.14")
	docExpect(t, rs, "inbox 3", OK, docPublic+bridge.WebhookPath)
	docExpect(t, rs, "dify route 1", OK, `"Support bot" (advanced-chat)`, "app-…0001")
	docExpect(t, rs, "chatwoot account", OK, "account 1")
	docExpect(t, rs, "webhooks received", OK, "1h ago")
	for _, r := range rs {
		if strings.Contains(r.Detail+r.Fix, docDifyKey) || strings.Contains(r.Detail+r.Fix, docBotToken) ||
			strings.Contains(r.Detail+r.Fix, docUserToken) {
			t.Errorf("check %q shows a secret: %+v", r.Name, r)
		}
	}
}

func TestDoctorConfigChecksComeFirst(t *testing.T) {
	h := newDocHarness(t)
	h.opts.ConfigChecks = []Result{{Name: "config", Status: OK, Detail: "loaded bridge.toml"},
		{Name: "config file", Status: Warn, Detail: "readable by others", Fix: "chmod 600 bridge.toml"}}
	rs := h.run()
	if rs[0].Name != "config" || rs[1].Name != "config file" || rs[2].Name != "database" {
		t.Fatalf("order:\n%s", docDump(rs))
	}
}

func TestDoctorDatabaseMissing(t *testing.T) {
	h := newDocHarness(t)
	h.opts.Store = nil
	h.opts.StoreErr = fmt.Errorf("bridge.db does not exist: %w", fs.ErrNotExist)
	rs := h.run()
	docExpect(t, rs, "database", Fail, "bridge.db does not exist", "fix:--db")
	docExpect(t, rs, "routes", Fail, "not checked")
	for _, r := range rs {
		if r.Name == "webhooks received" || r.Name == "failed events" {
			t.Errorf("journal check %q without a journal", r.Name)
		}
	}
}

func TestDoctorNoRoutes(t *testing.T) {
	h := newDocHarness(t)
	rs := h.run()
	docExpect(t, rs, "routes", OK, "1 enabled (inbox 3)")
	if err := h.db.SetRouteEnabled(t.Context(), 1, false); err != nil {
		t.Fatal(err)
	}
	rs = h.run()
	docExpect(t, rs, "routes", Fail, "all 1 disabled", "fix:bridge routes enable")
	if err := h.db.RemoveRoute(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	docExpect(t, h.run(), "routes", Fail, "none", "fix:bridge routes add --inbox")
}

func TestDoctorChatwootUnreachable(t *testing.T) {
	h := newDocHarness(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	h.opts.Chatwoot = chatwoot.NewClient(chatwoot.Options{BaseURL: dead, Token: docBotToken})
	h.opts.ChatwootUser = chatwoot.NewClient(chatwoot.Options{BaseURL: dead, Token: docUserToken})
	rs := h.run()
	docExpect(t, rs, "chatwoot", Fail, "cannot reach "+dead, "fix:chatwoot.base_url")
	for _, r := range rs {
		if r.Name == "chatwoot token" || r.Name == "inbox 3" || r.Name == "clock" {
			t.Errorf("check %q reported although Chatwoot is unreachable: %+v", r.Name, r)
		}
	}
	// The rest still runs.
	docExpect(t, rs, "dify route 1", OK)
}

// TestDoctorUnansweringHostDoesNotHang points Chatwoot and Dify at a server
// that accepts connections and never answers: doctor must still return,
// with both checks failed, bounded by its per-probe timeout.
func TestDoctorUnansweringHostDoesNotHang(t *testing.T) {
	h := newDocHarness(t)
	stop := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(stop) }) // runs before hang.Close, releasing the handlers
	h.opts.Chatwoot = chatwoot.NewClient(chatwoot.Options{BaseURL: hang.URL, Token: docBotToken})
	h.opts.ChatwootUser = chatwoot.NewClient(chatwoot.Options{BaseURL: hang.URL, Token: docUserToken})
	h.opts.DifyBaseURL = hang.URL + "/v1"
	h.opts.Timeout = 150 * time.Millisecond

	done := make(chan []Result, 1)
	go func() { done <- Run(t.Context(), h.opts) }()
	var rs []Result
	select {
	case rs = <-done:
	case <-t.Context().Done():
		t.Fatal("doctor did not return")
	}
	docExpect(t, rs, "chatwoot", Fail, "no answer within 150ms")
	docExpect(t, rs, "dify route 1", Fail, "no answer within 150ms")
}

func TestDoctorBadToken(t *testing.T) {
	h := newDocHarness(t)
	h.opts.Chatwoot = chatwoot.NewClient(chatwoot.Options{BaseURL: h.cwURL, Token: "not-a-real-token-at-all"})
	rs := h.run()
	docExpect(t, rs, "chatwoot token", Fail, "rejected", "401", "fix:chatwoot.api_token")
	docExpect(t, rs, "chatwoot", OK)

	h.opts.APITokenEmpty = true
	h.opts.Chatwoot = chatwoot.NewClient(chatwoot.Options{BaseURL: h.cwURL})
	docExpect(t, h.run(), "chatwoot token", Fail, "chatwoot.api_token is not set")
}

func TestDoctorBotOrUserToken(t *testing.T) {
	t.Run("Bot", func(t *testing.T) {
		h := newDocHarness(t)
		h.opts.ChatwootUser = nil
		rs := h.run()
		docExpect(t, rs, "chatwoot token", OK, "agent bot token", "cannot set labels", "chatwoot.user_token")
		docExpect(t, rs, "chatwoot account", OK, "account 1", "agent bot token works")
		// Without a user token the inboxes cannot be read: a warning, never a failure.
		docExpect(t, rs, "inboxes", Warn, "cannot check without chatwoot.user_token", "fix:chatwoot.user_token")
		for _, r := range rs {
			if r.Name == "handoff labels" {
				t.Errorf("labels check without labels configured: %+v", r)
			}
		}
		h.opts.HandoffLabels = []string{"ai-handoff"}
		docExpect(t, h.run(), "handoff labels", Warn, "cannot set labels", "fix:chatwoot.user_token")
	})
	t.Run("User", func(t *testing.T) {
		h := newDocHarness(t)
		h.opts.Chatwoot = chatwoot.NewClient(chatwoot.Options{BaseURL: h.cwURL, Token: docUserToken})
		h.opts.ChatwootUser = nil
		h.opts.HandoffLabels = []string{"ai-handoff"}
		rs := h.run()
		docExpect(t, rs, "chatwoot token", OK, "user token of Agent Smith (administrator)")
		docExpect(t, rs, "chatwoot account", OK, `account 1 "Acme"`)
		docExpect(t, rs, "handoff labels", OK)
		// A user api_token reads the inboxes itself.
		docExpect(t, rs, "inbox 3", OK)
	})
	t.Run("UserTokenIsABot", func(t *testing.T) {
		h := newDocHarness(t)
		h.opts.ChatwootUser = chatwoot.NewClient(chatwoot.Options{BaseURL: h.cwURL, Token: docBotToken})
		rs := h.run()
		docExpect(t, rs, "chatwoot user token", Fail, "agent bot token")
		docExpect(t, rs, "inboxes", Warn, "chatwoot.user_token did not work")
	})
}

func TestDoctorAccount(t *testing.T) {
	h := newDocHarness(t)
	h.opts.AccountID = 2
	docExpect(t, h.run(), "chatwoot account", Fail, "account 2", "not one of the token user's accounts", "fix:chatwoot.account_id")

	// No account configured and none in the journal: learned from the user token.
	h2 := newDocHarness(t)
	if _, err := h2.db.Reader().ExecContext(t.Context(), "DELETE FROM events"); err != nil {
		t.Fatal(err)
	}
	docExpect(t, h2.run(), "chatwoot account", OK, "account 1", "the token's only account")
	// A bot token alone cannot learn it.
	h2.opts.ChatwootUser = nil
	docExpect(t, h2.run(), "chatwoot account", Warn, "chatwoot.account_id is not set", "fix:chatwoot.account_id")
}

func TestDoctorRoutedInboxMissing(t *testing.T) {
	h := newDocHarness(t)
	h.addRoute(&store.Route{InboxID: 99, DifyKey: docDifyKey, Enabled: true})
	rs := h.run()
	docExpect(t, rs, "inbox 3", OK)
	docExpect(t, rs, "inbox 99", Fail, "inbox 99 does not exist in account 1", "fix:bridge routes remove 2")
}

func TestDoctorAgentBotPointsElsewhere(t *testing.T) {
	h := newDocHarness(t)
	h.cw.AddInbox(3, "Support", "https://old-bridge.example.com/hook")
	docExpect(t, h.run(), "inbox 3", Fail, "sends to https://old-bridge.example.com/hook",
		"not to "+docPublic+bridge.WebhookPath, "fix:outgoing_url to "+docPublic+bridge.WebhookPath)

	// Same endpoint with a token query, another case, a trailing slash: fine.
	h.cw.AddInbox(3, "Support", "HTTPS://Bridge.Example.com:443/webhooks/chatwoot/?token=abc")
	docExpect(t, h.run(), "inbox 3", OK)

	// webhook_token set but the URL carries no ?token=.
	h.cw.AddInbox(3, "Support", docPublic+bridge.WebhookPath)
	h.opts.WebhookToken = true
	docExpect(t, h.run(), "inbox 3", Fail, "without ?token=")
}

func TestDoctorNoAgentBot(t *testing.T) {
	h := newDocHarness(t)
	h.cw.AddInbox(3, "Support", "")
	docExpect(t, h.run(), "inbox 3", Fail, "no agent bot", "fix:Bot configuration")

	// An account webhook reaches bridge, but conversations start open.
	h.cw.AddAccountWebhook(docPublic + bridge.WebhookPath)
	docExpect(t, h.run(), "inbox 3", Warn, "account webhook 1", "start open")
	h.opts.BotStatuses = []string{"pending", "open"}
	docExpect(t, h.run(), "inbox 3", OK, "account webhook 1")
}

func TestDoctorPublicURL(t *testing.T) {
	tests := []struct {
		name, url string
		lookup    map[string][]string
		version   string
		status    Status
		detail    []string
	}{
		{"10.x literal", "http://10.0.0.5:8080", nil, "", Warn, []string{"10.0.0.5 is a private address"}},
		{"loopback literal", "http://127.0.0.1:8080", nil, "", Warn, []string{"127.0.0.1 is a private address"}},
		{"CGNAT literal", "http://100.64.1.2", nil, "", Warn, []string{"100.64.1.2 is a private address"}},
		{"ULA IPv6 literal", "http://[fd00::1]:8080", nil, "", Warn, []string{"fd00::1 is a private address"}},
		{"IPv4-mapped literal", "http://[::ffff:10.0.0.1]:8080", nil, "", Warn, []string{"::ffff:10.0.0.1 is a private address"}},
		{"link-local literal", "http://169.254.10.1", nil, "", Warn, []string{"private address"}},
		{"host resolving only privately", "https://bridge.internal.example", map[string][]string{"bridge.internal.example": {"172.18.0.5", "fd12::5"}}, "",
			Warn, []string{"resolves only to private addresses (172.18.0.5, fd12::5)"}},
		{"single-label container name", "http://bridge:8080", nil, "", Warn, []string{`"bridge" is a single-label hostname`}},
		{"public literal", "https://93.184.215.14", nil, "", OK, []string{"public address"}},
		{"public host", "https://bridge.example.com", map[string][]string{"bridge.example.com": {"10.0.0.9", "93.184.215.14"}}, "",
			OK, []string{"resolves to public 93.184.215.14"}},
		{"private before 4.14", "http://10.0.0.5:8080", nil, "4.13.2", Warn, []string{"Chatwoot 4.13.2 still delivers", "UI rejects", "API accepts"}},
		{"private on 4.16", "http://10.0.0.5:8080", nil, "4.16.2", Warn, []string{"Chatwoot 4.16.2 refuses"}},
		{"dotted host that does not resolve", "https://bridge.nowhere.example", nil, "", Warn, []string{"does not resolve from here"}},
		{"not http", "ftp://bridge.example.com", nil, "", Fail, []string{"not an http(s) URL"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newDocHarness(t)
			if tc.version != "" {
				h.cw = simulate.NewChatwoot(simulate.ChatwootOptions{BotToken: docBotToken, UserToken: docUserToken, Version: tc.version})
				h.cw.AddInbox(3, "Support", tc.url+bridge.WebhookPath)
				t.Cleanup(h.cw.Close)
			}
			h.opts.PublicURL = tc.url
			h.opts.Lookup = docLookup(t, tc.lookup)
			rs := h.run()
			r := docExpect(t, rs, "public url", tc.status, tc.detail...)
			private := tc.status == Warn && !strings.Contains(tc.name, "does not resolve")
			if private {
				if !strings.Contains(r.Fix, "SAFE_FETCH_ALLOW_PRIVATE_NETWORK=true") ||
					!strings.Contains(r.Fix, "web and Sidekiq") || !strings.Contains(r.Fix, "public address") {
					t.Errorf("fix %q should name both remedies", r.Fix)
				}
			}
			if private && tc.version == "" {
				if !strings.Contains(r.Detail, `Invalid webhook URL ... has no public ip addresses`) ||
					!strings.Contains(r.Detail, "Chatwoot 4.14.0 refuses") {
					t.Errorf("detail %q should explain Chatwoot 4.14's refusal", r.Detail)
				}
				if !strings.Contains(r.Fix, "4.14.1+") {
					t.Errorf("fix %q should say the opt-out needs 4.14.1+", r.Fix)
				}
			}
		})
	}
}

func TestDoctorPublicURLUnknownVersion(t *testing.T) {
	h := newDocHarness(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	_ = ln.Close() // only the free address is wanted
	h.opts.Chatwoot = chatwoot.NewClient(chatwoot.Options{BaseURL: dead, Token: docBotToken})
	h.opts.PublicURL = "http://192.168.1.20:8080"
	docExpect(t, h.run(), "public url", Warn, "Chatwoot 4.14 and later refuse")
}

func TestDoctorPublicURLEmpty(t *testing.T) {
	h := newDocHarness(t)
	h.opts.PublicURL = ""
	rs := h.run()
	docExpect(t, rs, "public url", Warn, "public_url is not set", "fix:public_url")
	// Without public_url the inbox check reports the bot's URL without judging it.
	docExpect(t, rs, "inbox 3", OK, "not compared")
}

func TestPrivateAddr(t *testing.T) {
	tests := []struct {
		addr    string
		private bool
	}{
		{"10.1.2.3", true}, {"127.0.0.1", true}, {"0.0.0.0", true}, {"169.254.169.254", true},
		{"172.16.0.1", true}, {"172.31.255.255", true}, {"172.32.0.1", false}, {"192.168.1.1", true},
		{"100.64.0.1", true}, {"100.127.255.255", true}, {"100.63.255.255", false}, {"100.128.0.1", false},
		{"192.0.0.8", true}, {"192.0.2.1", true}, {"198.18.0.1", true}, {"198.19.255.255", true}, {"198.51.100.7", true},
		{"203.0.113.9", true}, {"224.0.0.1", true}, {"240.0.0.1", true}, {"255.255.255.255", true},
		{"8.8.8.8", false}, {"93.184.215.14", false}, {"203.0.114.1", false},
		{"::1", true}, {"fd00::1", true}, {"fc00::1", true}, {"fe80::1", true}, {"fe80::1%eth0", true}, {"ff02::1", true},
		{"100::1", true}, {"2001::1", true}, {"2001:db8::1", true}, {"2002::1", true},
		{"::ffff:10.0.0.1", true}, {"::ffff:8.8.8.8", false}, {"::10.0.0.1", true},
		{"64:ff9b::a00:1", true}, {"64:ff9b::808:808", false}, {"2606:4700:4700::1111", false}, {"::", true},
	}
	for _, tc := range tests {
		if got := privateAddr(netip.MustParseAddr(tc.addr)); got != tc.private {
			t.Errorf("privateAddr(%s) = %v, want %v", tc.addr, got, tc.private)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	tests := []struct {
		v            string
		known, least bool
	}{
		{"4.14.0", true, true}, {"4.14.1", true, true}, {"4.13.9", true, false}, {"5.0.0", true, true},
		{"3.99.0", true, false}, {"4.14", true, true}, {"4.14.0-ce", true, true}, {"v4.15.2", true, true},
		{"", false, false}, {"latest", false, false},
	}
	for _, tc := range tests {
		known, least := versionAtLeast(tc.v, 4, 14, 0)
		if known != tc.known || least != tc.least {
			t.Errorf("versionAtLeast(%q) = %v, %v; want %v, %v", tc.v, known, least, tc.known, tc.least)
		}
	}
}

func TestDoctorDifyKeyRevoked(t *testing.T) {
	h := newDocHarness(t)
	h.addRoute(&store.Route{InboxID: 4, DifyKey: "app-revoked000000000000wxyz", Enabled: true})
	h.cw.AddInbox(4, "Sales", docPublic+bridge.WebhookPath)
	rs := h.run()
	docExpect(t, rs, "dify route 1", OK)
	r := docExpect(t, rs, "dify route 2", Fail, "rejected the key app-…wxyz", "Access token is invalid", "fix:API Access")
	if strings.Contains(r.Detail+r.Fix, "app-revoked000000000000wxyz") {
		t.Errorf("the key leaked: %+v", r)
	}
}

func TestDoctorDifyAppMode(t *testing.T) {
	for _, mode := range []string{simulate.ModeCompletion, simulate.ModeWorkflow} {
		t.Run(mode, func(t *testing.T) {
			h := newDocHarness(t)
			key := "app-" + mode + strings.Repeat("0", 20)
			h.dify.AddApp(simulate.DifyApp{Key: key, Name: "Writer", Mode: mode})
			h.addRoute(&store.Route{InboxID: 4, DifyKey: key, Enabled: true})
			h.cw.AddInbox(4, "Sales", docPublic+bridge.WebhookPath)
			docExpect(t, h.run(), "dify route 2", Fail, `"Writer" is a `+mode+" app, which has no chat endpoint",
				"fix:Chatbot, Chatflow or Agent")
		})
	}
}

func TestDoctorDifyNewAgent(t *testing.T) {
	h := newDocHarness(t)
	const key = "app-newagent00000000000000"
	h.dify.AddApp(simulate.DifyApp{Key: key, Name: "Concierge", Mode: simulate.ModeAgent})
	h.addRoute(&store.Route{InboxID: 4, DifyKey: key, Enabled: true})
	h.cw.AddInbox(4, "Sales", docPublic+bridge.WebhookPath)
	docExpect(t, h.run(), "dify route 2", OK, `"Concierge" (agent)`)
}

func TestDoctorDifyRequiredInput(t *testing.T) {
	h := newDocHarness(t)
	h.dify.AddApp(simulate.DifyApp{Key: docDifyKey, Name: "Support bot", Mode: simulate.ModeChat,
		Inputs: []simulate.DifyInput{{Variable: "ticket_id", Required: true}, {Variable: "lang"}}})
	docExpect(t, h.run(), "dify route 1", Fail, "requires inputs the route does not supply: ticket_id",
		`fix:--inputs '{"ticket_id":"..."}'`)

	h.addRoute(&store.Route{InboxID: 4, DifyKey: docDifyKey, Inputs: map[string]string{"ticket_id": "{conversation.id}"}, Enabled: true})
	h.cw.AddInbox(4, "Sales", docPublic+bridge.WebhookPath)
	docExpect(t, h.run(), "dify route 2", OK)
}

func TestDoctorDifyKeyEnvUnset(t *testing.T) {
	h := newDocHarness(t)
	h.addRoute(&store.Route{InboxID: 4, DifyKeyEnv: "DIFY_SALES_KEY", Enabled: true})
	h.cw.AddInbox(4, "Sales", docPublic+bridge.WebhookPath)
	docExpect(t, h.run(), "dify route 2", Fail, "DIFY_SALES_KEY is empty", "fix:export DIFY_SALES_KEY=")

	h.opts.Getenv = func(k string) string {
		if k == "DIFY_SALES_KEY" {
			return docDifyKey
		}
		return ""
	}
	docExpect(t, h.run(), "dify route 2", OK, "key $DIFY_SALES_KEY")
}

func TestDoctorNoWebhookEver(t *testing.T) {
	h := newDocHarness(t)
	if _, err := h.db.Reader().ExecContext(t.Context(), "DELETE FROM events"); err != nil {
		t.Fatal(err)
	}
	docExpect(t, h.run(), "webhooks received", Warn, "none ever, although routes exist", "fix:Invalid webhook URL")

	h.addEvent(store.Event{ReceivedAt: docNow.Add(-72 * time.Hour), Event: "message_created", AccountID: 1, InboxID: 3, Status: store.StatusAnswered})
	docExpect(t, h.run(), "webhooks received", Warn, "none for 3d")
}

func TestDoctorInboxWithoutRoute(t *testing.T) {
	h := newDocHarness(t)
	for range 3 {
		h.addEvent(store.Event{ReceivedAt: docNow.Add(-2 * time.Hour), Event: "message_created", AccountID: 1, InboxID: 9,
			Status: store.StatusIgnored, Reason: bridge.ReasonNoRoute})
	}
	h.addEvent(store.Event{ReceivedAt: docNow.Add(-3 * time.Hour), Event: "message_created", AccountID: 1, InboxID: 11,
		Status: store.StatusIgnored, Reason: bridge.ReasonNoRoute})
	// Routed since, too old, or ignored for another reason: not listed.
	h.addEvent(store.Event{ReceivedAt: docNow.Add(-2 * time.Hour), Event: "message_created", AccountID: 1, InboxID: 3,
		Status: store.StatusIgnored, Reason: bridge.ReasonNoRoute})
	h.addEvent(store.Event{ReceivedAt: docNow.Add(-8 * 24 * time.Hour), Event: "message_created", AccountID: 1, InboxID: 12,
		Status: store.StatusIgnored, Reason: bridge.ReasonNoRoute})
	h.addEvent(store.Event{ReceivedAt: docNow.Add(-time.Hour), Event: "message_created", AccountID: 1, InboxID: 13,
		Status: store.StatusIgnored, Reason: bridge.ReasonPrivate})
	r := docExpect(t, h.run(), "unrouted inboxes", Warn, "inbox 9 (3 webhooks), inbox 11 (1 webhook)",
		"fix:bridge routes add --inbox 9")
	for _, id := range []string{"inbox 3 ", "inbox 12", "inbox 13"} {
		if strings.Contains(r.Detail, id) {
			t.Errorf("detail %q lists %s", r.Detail, id)
		}
	}
}

func TestDoctorFailedEventsGrouped(t *testing.T) {
	h := newDocHarness(t)
	failed := func(ago time.Duration, lastErr string) int64 {
		return h.addEvent(store.Event{ReceivedAt: docNow.Add(-ago), Event: "message_created", AccountID: 1, InboxID: 3,
			Status: store.StatusFailed, LastError: lastErr})
	}
	failed(48*time.Hour, "too old to list")
	failed(5*time.Hour, "chatwoot post message: http 401: Invalid Access Token")
	failed(4*time.Hour, "AI failed: dify 500 internal_server_error")
	newestAI := failed(3*time.Hour, "AI failed: dify 500 internal_server_error")
	failed(2*time.Hour, "chatwoot post message: http 401: Invalid Access Token")
	newest401 := failed(time.Hour, "chatwoot post message: http 401: Invalid Access Token")
	h.addEvent(store.Event{ReceivedAt: docNow.Add(-30 * time.Minute), Event: "message_created", AccountID: 1,
		InboxID: 3, Status: store.StatusAnswered})
	rs := h.run()
	r := docExpect(t, rs, "failed events", Fail, "5 in the last 24h",
		fmt.Sprintf(`3× "chatwoot post message: http 401: Invalid Access Token" (newest #%d)`, newest401),
		fmt.Sprintf(`2× "AI failed: dify 500 internal_server_error" (newest #%d)`, newestAI),
		fmt.Sprintf("fix:bridge events show %d", newest401), fmt.Sprintf("fix:bridge replay %d", newest401))
	if strings.Contains(r.Detail, "too old") {
		t.Errorf("detail %q lists an event older than 24h", r.Detail)
	}
	if strings.Index(r.Detail, "chatwoot post") > strings.Index(r.Detail, "AI failed") {
		t.Errorf("detail %q: newest group should come first", r.Detail)
	}
}

func TestDoctorStuckEvents(t *testing.T) {
	h := newDocHarness(t)
	h.addEvent(store.Event{ReceivedAt: docNow.Add(-time.Minute), Event: "message_created", AccountID: 1, InboxID: 3,
		Status: store.StatusAccepted, Kind: store.KindMessage})
	docExpect(t, h.run(), "stuck events", OK)
	id := h.addEvent(store.Event{ReceivedAt: docNow.Add(-10 * time.Minute), Event: "message_created", AccountID: 1, InboxID: 3,
		Status: store.StatusAccepted, Kind: store.KindMessage})
	docExpect(t, h.run(), "stuck events", Warn, fmt.Sprintf("1 event accepted but not started for over 5m (oldest #%d, 10m ago)", id),
		"fix:bridge serve")
}

// TestDoctorStaleWorking: an event `working` without progress for longer
// than dify.timeout is reported: its worker is stuck, waits for the journal,
// or is gone.
func TestDoctorStaleWorking(t *testing.T) {
	h := newDocHarness(t)
	h.opts.DifyTimeout = 2 * time.Minute
	h.addEvent(store.Event{ReceivedAt: docNow.Add(-time.Minute), Event: "message_created", AccountID: 1, InboxID: 3,
		ConversationID: 5, MessageID: 2001, Status: store.StatusWorking, Kind: store.KindMessage})
	docExpect(t, h.run(), "stuck events", OK, "no event waits for a worker")
	id := h.addEvent(store.Event{ReceivedAt: docNow.Add(-10 * time.Minute), Event: "message_created", AccountID: 1, InboxID: 3,
		ConversationID: 6, MessageID: 2002, Status: store.StatusWorking, Kind: store.KindMessage})
	docExpect(t, h.run(), "stuck events", Warn,
		fmt.Sprintf("1 event working without progress for over dify.timeout (2m0s) (oldest #%d)", id), "fix:journal not writable")
}

// TestDoctorDatabaseMode: a database file others can read is reported
// (Open tightens it; a file bridge does not own keeps its mode).
func TestDoctorDatabaseMode(t *testing.T) {
	h := newDocHarness(t)
	rs := h.run()
	for _, r := range rs {
		if r.Name == "database file" {
			t.Fatalf("a 0600 database is reported: %+v", r)
		}
	}
	if err := os.Chmod(h.db.Path, 0o644); err != nil {
		t.Fatal(err)
	}
	docExpect(t, h.run(), "database file", Warn, "readable by group or others (mode 0644)", "fix:chmod 600")
}

func TestDoctorPostsMadeAgain(t *testing.T) {
	h := newDocHarness(t)
	h.opts.ChatwootUser = nil
	docExpect(t, h.run(), "posts in doubt", OK)
	id := h.addEvent(store.Event{ReceivedAt: docNow.Add(-time.Hour), Event: "message_created", AccountID: 1, InboxID: 3,
		Status: store.StatusAnswered, Kind: store.KindMessage})
	if err := h.db.Write(h.t.Context(), func(tx *store.Tx) error {
		return tx.AddHop(store.Hop{EventID: id, Stage: "chatwoot", Outcome: "in doubt: posted again"})
	}); err != nil {
		t.Fatal(err)
	}
	docExpect(t, h.run(), "posts in doubt", Warn, fmt.Sprintf("1 post in doubt after a crash made again without checking Chatwoot in the last 24h (newest in event #%d)", id),
		"fix:set chatwoot.user_token")
	// Older than a day: no longer news.
	h.opts.Now = func() time.Time { return docNow.Add(48 * time.Hour) }
	docExpect(t, h.run(), "posts in doubt", OK)
}

func TestDoctorRejectedWebhooks(t *testing.T) {
	h := newDocHarness(t)
	h.addEvent(store.Event{ReceivedAt: docNow.Add(-time.Hour), Status: store.StatusRejected, Reason: "bad signature", HTTPStatus: 401})
	id := h.addEvent(store.Event{ReceivedAt: docNow.Add(-time.Minute), Status: store.StatusRejected, Reason: "bad signature", HTTPStatus: 401})
	docExpect(t, h.run(), "rejected webhooks", Warn, fmt.Sprintf(`2× "bad signature" (newest #%d)`, id), "fix:webhook_secret")
}

func TestDoctorWebhookAuth(t *testing.T) {
	h := newDocHarness(t)
	h.opts.WebhookSecret = false
	// On a public address, anyone can make bridge post into any account
	// and conversation a body names: that is a failure, not a warning.
	docExpect(t, h.run(), "webhook auth", Fail, "neither chatwoot.webhook_secret nor chatwoot.webhook_token",
		"public_url https://bridge.example.com is a public address", "fix:webhook_secret")
	h.opts.PublicURL = "http://10.0.0.7:8080"
	docExpect(t, h.run(), "webhook auth", Warn, "neither chatwoot.webhook_secret nor chatwoot.webhook_token", "fix:webhook_secret")
	h.opts.PublicURL = ""
	docExpect(t, h.run(), "webhook auth", Warn, "neither chatwoot.webhook_secret nor chatwoot.webhook_token")
	h.opts.PublicURL = docPublic
	h.opts.WebhookToken = true
	h.cw.AddInbox(3, "Support", docPublic+bridge.WebhookPath+"?token=t0k3n")
	rs := h.run()
	docExpect(t, rs, "webhook auth", OK, "?token= required")
	docExpect(t, rs, "inbox 3", OK)
}

func TestDoctorClock(t *testing.T) {
	h := newDocHarness(t)
	h.chatwootDate = docNow.Add(-3 * time.Minute)
	docExpect(t, h.run(), "clock", Warn, "3m0s ahead of Chatwoot's", "fix:NTP")
	h.chatwootDate = docNow.Add(10 * time.Minute)
	docExpect(t, h.run(), "clock", Fail, "10m0s behind Chatwoot's", "signed webhooks")
	h.opts.WebhookSecret = false
	docExpect(t, h.run(), "clock", Warn, "10m0s behind")
	h.chatwootDate = docNow.Add(20 * time.Second)
	docExpect(t, h.run(), "clock", OK)
}

func TestVerifyAppErrors(t *testing.T) {
	h := newDocHarness(t)
	h.dify.AddApp(simulate.DifyApp{Key: "app-completion0000000000000", Name: "Writer", Mode: simulate.ModeCompletion})
	h.dify.AddApp(simulate.DifyApp{Key: "app-inputs00000000000000000", Name: "Form", Inputs: []simulate.DifyInput{
		{Variable: "b", Required: true}, {Variable: "a", Required: true}}})
	verify := func(key string, inputs map[string]string) error {
		_, _, err := VerifyApp(t.Context(), dify.NewClient(dify.Options{BaseURL: h.difyURL, Key: key}), h.difyURL, inputs)
		return err
	}
	var modeErr *AppModeError
	if err := verify("app-completion0000000000000", nil); !errors.As(err, &modeErr) || modeErr.Mode != "completion" {
		t.Errorf("completion app: %v", err)
	}
	var inErr *MissingInputsError
	if err := verify("app-inputs00000000000000000", map[string]string{"x": "1"}); !errors.As(err, &inErr) ||
		strings.Join(inErr.Missing, ",") != "a,b" || !strings.Contains(err.Error(), `--inputs '{"a":"..."}'`) {
		t.Errorf("missing inputs: %v", err)
	}
	if err := verify("app-inputs00000000000000000", map[string]string{"a": "1", "b": "2"}); err != nil {
		t.Errorf("inputs supplied: %v", err)
	}
}
