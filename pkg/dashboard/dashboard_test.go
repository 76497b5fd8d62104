package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/store"
)

const (
	testKey     = "dash-key-SECRET-0123456789abcdef"
	wrongKey    = "dash-key-WRONG-0123456789abcdef0"
	testDifyKey = "app-difykeySECRET00000003"
	chatwootURL = "https://Chat.Example.com:8443/some/path"
	origin      = "https://chat.example.com:8443"
)

type call struct {
	action        string
	account, conv int64
	by            string
}

// fakeActions records what the page asked for.
type fakeActions struct {
	mu    sync.Mutex
	calls []call
	err   error
}

func (f *fakeActions) record(action string, account, conv int64, by string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{action, account, conv, by})
	return f.err
}

func (f *fakeActions) GiveBack(_ context.Context, account, conv int64, by string) error {
	return f.record("give-back", account, conv, by)
}

func (f *fakeActions) Keep(_ context.Context, account, conv int64, by string) error {
	return f.record("keep", account, conv, by)
}

func (f *fakeActions) AskAgain(_ context.Context, account, conv int64, by string) (int64, error) {
	return 77, f.record("ask-again", account, conv, by)
}

func (f *fakeActions) got() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

type fixture struct {
	db   *store.DB
	acts *fakeActions
	h    http.Handler
	logs *bytes.Buffer
	mu   *sync.Mutex
}

// ownAt is when the fixture's conversation was last handed off.
var ownAt = time.Date(2030, 1, 2, 9, 0, 0, 0, time.UTC)

// newFixture journals conversation 5 of account 1 as a real run leaves it:
// an answered message whose answer was in doubt and found, a handoff
// after a takeover held back a draft, and who held it.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := t.Context()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "bridge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.AddRoute(ctx, &store.Route{InboxID: 1, Name: "support", DifyKey: testDifyKey, Mode: store.ModeAuto,
		Enabled: true, AppName: "Support bot", AppMode: "advanced-chat"}); err != nil {
		t.Fatal(err)
	}
	err = db.Write(ctx, func(tx *store.Tx) error {
		if err := tx.TouchConversation(1, 5, 1, 9, "open", time.Now(), true); err != nil {
			return err
		}
		if err := tx.SetConversationState(1, 5, store.StateHuman, "customer asked for a human"); err != nil {
			return err
		}
		first := &store.Event{Event: "message_created", Kind: store.KindMessage, AccountID: 1, InboxID: 1, ConversationID: 5,
			Status: store.StatusAnswered, Text: "Where is my order?"}
		if err := tx.InsertEvent(first); err != nil {
			return err
		}
		for _, h := range []store.Hop{
			{Stage: "decision", Outcome: "accepted", Detail: "accepted: message (route 1 support, auto)"},
			{Stage: "dify", Outcome: "answer", Detail: "31 chars, 4 events, 154 tokens", Duration: 1200 * time.Millisecond},
			{Stage: "chatwoot", Outcome: "error, retrying", Detail: "answer attempt 1: 504"},
			{Stage: "chatwoot", Outcome: "in doubt: found in journal", Detail: "answer: message 1010 (its webhook was journaled)"},
			{Stage: "done", Outcome: "answered"},
		} {
			h.EventID = first.ID
			if err := tx.AddHop(h); err != nil {
				return err
			}
		}
		if err := tx.AddIntent(store.Intent{EventID: first.ID, Step: "answer", AccountID: 1, ConversationID: 5,
			Content: "Your order ships <b>today</b>."}); err != nil {
			return err
		}
		if err := tx.ResolveIntent(first.ID, "answer", 1010); err != nil {
			return err
		}
		second := &store.Event{Event: "message_created", Kind: store.KindMessage, AccountID: 1, InboxID: 1, ConversationID: 5,
			Status: store.StatusSuperseded, Text: "Hello?"}
		if err := tx.InsertEvent(second); err != nil {
			return err
		}
		for _, h := range []store.Hop{
			{Stage: "decision", Outcome: "accepted", Detail: "accepted: message (route 1 support, auto)"},
			{Stage: "handoff", Outcome: "keyword", Detail: `matched "human"`},
			{Stage: "handoff", Outcome: "customer_asked", Detail: `customer asked for a human: "Hello?"`},
			{Stage: "dify", Outcome: "answer", Detail: "10 chars, 2 events, 46 tokens", Duration: 300 * time.Millisecond},
		} {
			h.EventID = second.ID
			if err := tx.AddHop(h); err != nil {
				return err
			}
		}
		if err := tx.AddIntent(store.Intent{EventID: second.ID, Step: "superseded_note", AccountID: 1, ConversationID: 5,
			Private: true, Content: "AI draft, not sent: Hi there"}); err != nil {
			return err
		}
		// Who held it: an agent replied, gave it back, then the customer
		// asked for a human; the same display id in account 2 had its own.
		for _, o := range []store.Ownership{
			{At: ownAt.Add(-2 * time.Hour), AccountID: 1, Kind: store.OwnTakeover, Owner: store.StateHuman, Cause: "agent_replied",
				Detail: "an agent replied while the bot held it"},
			{At: ownAt.Add(-time.Hour), AccountID: 1, Kind: store.OwnReturn, Owner: store.StateBot, Cause: "give-back",
				Detail: "given back by <b>Jane</b> (agent 3); memory after a handoff: same Dify conversation"},
			{At: ownAt, AccountID: 1, Kind: store.OwnHandoff, Owner: store.StateHuman, Cause: "customer_asked",
				Detail: `customer asked for a human: "Hello?"`, EventID: second.ID},
			{At: ownAt, AccountID: 2, Kind: store.OwnKeep, Owner: store.StateHuman, Cause: "keep", Detail: "other account"},
		} {
			o.ConversationID, o.RouteID = 5, 1
			if err := tx.AddOwnership(o); err != nil {
				return err
			}
		}
		// The same display id in another account, and an ignored echo: never shown.
		if err := tx.InsertEvent(&store.Event{Event: "message_created", AccountID: 2, ConversationID: 5, Status: store.StatusAnswered, Text: "other account"}); err != nil {
			return err
		}
		return tx.InsertEvent(&store.Event{Event: "message_created", AccountID: 1, ConversationID: 5, Status: store.StatusIgnored, Reason: "own_message"})
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	mu := &sync.Mutex{}
	acts := &fakeActions{}
	h := New(Options{Store: db, Key: testKey, ChatwootURL: chatwootURL, Actions: acts,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{mu, logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	return &fixture{db: db, acts: acts, h: h, logs: logs, mu: mu}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (f *fixture) do(method, target, key, contentType, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func TestPageAndHeaders(t *testing.T) {
	f := newFixture(t)
	w := f.do("GET", "/app/?key="+testKey, "", "", "")
	if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("page: %d %s", w.Code, w.Header().Get("Content-Type"))
	}
	body := w.Body.String()
	if !strings.Contains(body, `<meta name="bridge-chatwoot-origin" content="`+origin+`">`) {
		t.Errorf("page does not pass Chatwoot's origin:\n%s", body)
	}
	if strings.Contains(body, testKey) {
		t.Error("the page repeats the key")
	}
	// No inline script: every <script> has a src.
	if strings.Count(body, "<script") != 1 || !strings.Contains(body, `<script src="app.js"></script>`) ||
		regexp.MustCompile(`\son[a-z]+=`).MatchString(body) || strings.Contains(body, "style=") {
		t.Errorf("inline script or style in the page:\n%s", body)
	}
	csp := w.Header().Get("Content-Security-Policy")
	for _, want := range []string{"frame-ancestors " + origin, "script-src 'self'", "default-src 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP allows inline code: %q", csp)
	}
	for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
		if got := w.Header().Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}

	for name, ct := range map[string]string{"app.js": "text/javascript", "app.css": "text/css"} {
		w := f.do("GET", "/app/"+name, "", "", "")
		if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), ct) || w.Body.Len() < 500 {
			t.Errorf("%s: %d %q %d bytes", name, w.Code, w.Header().Get("Content-Type"), w.Body.Len())
		}
		if w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s without nosniff", name)
		}
	}
	if w := f.do("GET", "/app/index.html", "", "", ""); w.Code != http.StatusNotFound {
		t.Errorf("/app/index.html: %d, want 404 (the page is /app/)", w.Code)
	}
}

func TestOriginAndFrameAncestors(t *testing.T) {
	for raw, want := range map[string]string{
		"https://Chat.Example.com:8443/app": "https://chat.example.com:8443",
		"http://localhost:3000":             "http://localhost:3000",
		"localhost:3000":                    "",
		"ftp://chat.example.com":            "",
	} {
		if got := Origin(raw); got != want {
			t.Errorf("Origin(%q) = %q, want %q", raw, got, want)
		}
	}
	// Without a usable Chatwoot origin, no page may frame it.
	h := New(Options{Key: testKey, ChatwootURL: "not a url"})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/app/", nil))
	if csp := w.Header().Get("Content-Security-Policy"); !strings.HasSuffix(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
}

func TestKey(t *testing.T) {
	f := newFixture(t)
	const conv = "/app/api/conversation?account_id=1&conversation_id=5"
	const give = "/app/api/give-back"
	body := `{"account_id":1,"conversation_id":5,"agent":{"id":3,"name":"Jane"}}`
	for _, tc := range []struct {
		name, key string
		want      int
	}{
		{"none", "", http.StatusUnauthorized},
		{"wrong", wrongKey, http.StatusUnauthorized},
		{"prefix of the key", testKey[:len(testKey)-1], http.StatusUnauthorized},
		{"right", testKey, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.acts.got())
			w := f.do("GET", conv, tc.key, "", "")
			if w.Code != tc.want {
				t.Errorf("GET: %d %s, want %d", w.Code, w.Body, tc.want)
			}
			if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("data Cache-Control = %q", cc)
			}
			w = f.do("POST", give, tc.key, "application/json", body)
			if w.Code != tc.want {
				t.Errorf("POST: %d %s, want %d", w.Code, w.Body, tc.want)
			}
			if called := len(f.acts.got()) - before; (tc.want == http.StatusOK) != (called == 1) {
				t.Errorf("%d actions carried out", called)
			}
		})
	}
	// The key in the page's URL is never how the API is reached.
	if w := f.do("GET", conv+"&key="+testKey, "", "", ""); w.Code != http.StatusUnauthorized {
		t.Errorf("?key= on the API: %d", w.Code)
	}
	f.mu.Lock()
	logs := f.logs.String()
	f.mu.Unlock()
	if strings.Contains(logs, testKey) || strings.Contains(logs, wrongKey) || strings.Contains(logs, testKey[:len(testKey)-1]) {
		t.Errorf("a key was logged:\n%s", logs)
	}
	if !strings.Contains(logs, "wrong key") {
		t.Errorf("a refused request is not logged:\n%s", logs)
	}
}

func TestConversationView(t *testing.T) {
	f := newFixture(t)
	w := f.do("GET", "/app/api/conversation?account_id=1&conversation_id=5", testKey, "", "")
	if w.Code != http.StatusOK {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if strings.Contains(w.Body.String(), testDifyKey) || strings.Contains(w.Body.String(), "difykey") {
		t.Fatal("the view carries the route's Dify key")
	}
	var v View
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	c := v.Conversation
	if c.State != store.StateHuman || c.StateReason != "customer asked for a human" || c.StateAt == nil || c.Status != "open" || c.InboxID != 1 {
		t.Errorf("conversation = %+v", c)
	}
	if v.Route == nil || v.Route.Name != "support" || v.Route.AppName != "Support bot" || v.Route.AppMode != "advanced-chat" {
		t.Errorf("route = %+v", v.Route)
	}
	if len(v.Events) != 2 || v.Events[0].Text != "Hello?" || v.Events[1].Text != "Where is my order?" {
		t.Fatalf("events = %+v (want the two acted-on events of account 1, newest first)", v.Events)
	}
	newest, oldest := v.Events[0].Summary, v.Events[1].Summary
	if oldest.DifyMS != 1200 || oldest.Tokens != 154 || oldest.Decision != "accepted: message (route 1 support, auto)" {
		t.Errorf("first message summary = %+v", oldest)
	}
	if len(oldest.Posted) != 1 || oldest.Posted[0] != "answer #1010" {
		t.Errorf("posted = %q", oldest.Posted)
	}
	if len(oldest.InDoubt) != 1 || oldest.InDoubt[0] != "in doubt: found in journal: answer: message 1010 (its webhook was journaled)" {
		t.Errorf("in doubt = %q", oldest.InDoubt)
	}
	flags := map[string]string{}
	for _, h := range v.Events[1].Hops {
		flags[h.Outcome] = h.Flag
	}
	if flags["in doubt: found in journal"] != "doubt" || flags["error, retrying"] != "error" || flags["answered"] != "" {
		t.Errorf("hop flags = %v", flags)
	}
	if v.Events[1].Posts[0].Content != "Your order ships <b>today</b>." || v.Events[1].Posts[0].MessageID != 1010 {
		t.Errorf("posts = %+v", v.Events[1].Posts)
	}
	if newest.Handoff != `customer asked for a human: "Hello?"` || newest.HeldBack != "AI draft, not sent: Hi there" {
		t.Errorf("second message summary = %+v", newest)
	}
	if newest.Tokens != 46 || newest.DifyMS != 300 || len(newest.Posted) != 0 {
		t.Errorf("second message figures = %+v", newest)
	}
	// Who held it, newest first, as `bridge conversations show` lists it.
	var got []string
	for _, o := range v.Ownership {
		got = append(got, fmt.Sprintf("%s %s %s %s %d %q", o.At.UTC().Format(time.TimeOnly), o.Kind, o.Owner, o.Cause, o.EventID, o.Detail))
	}
	want := []string{
		`09:00:00 handoff human customer_asked 2 "customer asked for a human: \"Hello?\""`,
		`08:00:00 return bot give-back 0 "given back by <b>Jane</b> (agent 3); memory after a handoff: same Dify conversation"`,
		`07:00:00 takeover human agent_replied 0 "an agent replied while the bot held it"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("ownership:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestConversationViewOwnershipBounded: a conversation that changed hands
// many times sends the page its newest entries only.
func TestConversationViewOwnershipBounded(t *testing.T) {
	f := newFixture(t)
	err := f.db.Write(t.Context(), func(tx *store.Tx) error {
		for i := range 60 {
			if err := tx.AddOwnership(store.Ownership{At: ownAt.Add(time.Duration(i+1) * time.Minute), AccountID: 1, ConversationID: 5,
				RouteID: 1, Kind: store.OwnResolved, Owner: store.StateHuman, Cause: "status resolved", Detail: fmt.Sprint("entry ", i+1)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w := f.do("GET", "/app/api/conversation?account_id=1&conversation_id=5", testKey, "", "")
	var v View
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil || w.Code != http.StatusOK {
		t.Fatalf("%d %v", w.Code, err)
	}
	if n := len(v.Ownership); n != maxOwnership || v.Ownership[0].Detail != "entry 60" || v.Ownership[n-1].Detail != "entry 11" {
		t.Errorf("%d entries, from %q to %q; want the newest %d", n, v.Ownership[0].Detail, v.Ownership[n-1].Detail, maxOwnership)
	}
}

func TestUnknownConversation(t *testing.T) {
	f := newFixture(t)
	for _, target := range []string{
		"/app/api/conversation?account_id=2&conversation_id=6",
		"/app/api/conversation?account_id=1&conversation_id=6",
		"/app/api/conversation?account_id=x&conversation_id=5",
	} {
		w := f.do("GET", target, testKey, "", "")
		if w.Code != http.StatusNotFound && w.Code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", target, w.Code, w.Body)
		}
	}
	// Account 2 has events of conversation 5, but no conversation row:
	// the page's context named it, bridge does not know it.
	for _, body := range []string{
		`{"account_id":2,"conversation_id":5}`,
		`{"account_id":1,"conversation_id":6}`,
		`{"account_id":0,"conversation_id":5}`,
	} {
		w := f.do("POST", "/app/api/keep", testKey, "application/json", body)
		if w.Code != http.StatusNotFound && w.Code != http.StatusBadRequest {
			t.Errorf("keep %s: %d %s", body, w.Code, w.Body)
		}
	}
	if got := f.acts.got(); len(got) != 0 {
		t.Errorf("actions carried out on unknown conversations: %+v", got)
	}
}

func TestActions(t *testing.T) {
	f := newFixture(t)
	for _, action := range []string{"give-back", "keep", "ask-again"} {
		w := f.do("POST", "/app/api/"+action, testKey, "application/json; charset=utf-8",
			`{"account_id":1,"conversation_id":5,"agent":{"id":3,"name":"Jane\nDoe","email":"jane@example.com"}}`)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", action, w.Code, w.Body)
		}
		var res actionResult
		if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || !res.OK || res.Message == "" {
			t.Errorf("%s: %s", action, w.Body)
		}
		if action == "ask-again" && res.EventID != 77 {
			t.Errorf("ask-again event id = %d", res.EventID)
		}
	}
	want := []call{{"give-back", 1, 5, "Jane Doe (agent 3)"}, {"keep", 1, 5, "Jane Doe (agent 3)"}, {"ask-again", 1, 5, "Jane Doe (agent 3)"}}
	got := f.acts.got()
	if len(got) != len(want) {
		t.Fatalf("calls = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("call %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	// A form post (what another site could send without a preflight) and
	// an unknown action are refused.
	if w := f.do("POST", "/app/api/keep", testKey, "application/x-www-form-urlencoded", "account_id=1&conversation_id=5"); w.Code != http.StatusUnsupportedMediaType {
		t.Errorf("form post: %d", w.Code)
	}
	if w := f.do("POST", "/app/api/delete", testKey, "application/json", `{"account_id":1,"conversation_id":5}`); w.Code != http.StatusNotFound {
		t.Errorf("unknown action: %d", w.Code)
	}
	if w := f.do("GET", "/app/api/keep", testKey, "", ""); w.Code == http.StatusOK {
		t.Errorf("GET of an action: %d", w.Code)
	}
	if n := len(f.acts.got()); n != 3 {
		t.Errorf("%d actions after refused requests, want 3", n)
	}

	// A failure of the action reaches the page.
	f.acts.err = errors.New("set conversation 5 pending in chatwoot: 503")
	w := f.do("POST", "/app/api/give-back", testKey, "application/json", `{"account_id":1,"conversation_id":5}`)
	if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "503") {
		t.Errorf("failed give-back: %d %s", w.Code, w.Body)
	}
	if got := f.acts.got(); got[len(got)-1].by != "an agent (Dashboard App)" {
		t.Errorf("no agent in the context: by = %q", got[len(got)-1].by)
	}
}

func TestAgentLabel(t *testing.T) {
	for _, tc := range []struct {
		id   int64
		name string
		want string
	}{
		{3, "Jane Doe", "Jane Doe (agent 3)"},
		{3, "", "agent 3"},
		{0, "Jane", "Jane"},
		{0, " \t", "an agent (Dashboard App)"},
		{4, "Eve\r\n[[handoff]]\u2028x", "Eve [[handoff]] x (agent 4)"},
		{5, strings.Repeat("é", 100), strings.Repeat("é", 80) + "… (agent 5)"},
	} {
		if got := AgentLabel(tc.id, tc.name); got != tc.want {
			t.Errorf("AgentLabel(%d, %q) = %q, want %q", tc.id, tc.name, got, tc.want)
		}
	}
}

func TestClip(t *testing.T) {
	if got := clip("héllo", 2); got != "h…" {
		t.Errorf("clip cut a rune: %q", got)
	}
	if got := clip("abc", 3); got != "abc" {
		t.Errorf("clip = %q", got)
	}
}

// BenchmarkConversationView is one refresh of the page (it asks every 3 s
// while open) for a conversation with a full page of events of 12 hops.
func BenchmarkConversationView(b *testing.B) {
	ctx := b.Context()
	db, err := store.Open(ctx, filepath.Join(b.TempDir(), "bridge.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	err = db.Write(ctx, func(tx *store.Tx) error {
		if err := tx.TouchConversation(1, 5, 1, 9, "pending", time.Now(), true); err != nil {
			return err
		}
		for i := range 200 {
			conv := int64(5)
			if i%4 != 0 {
				conv = int64(100 + i) // other conversations share the journal
			}
			e := &store.Event{Event: "message_created", Kind: store.KindMessage, AccountID: 1, ConversationID: conv,
				Status: store.StatusAnswered, Text: strings.Repeat("question ", 20)}
			if err := tx.InsertEvent(e); err != nil {
				return err
			}
			for range 12 {
				if err := tx.AddHop(store.Hop{EventID: e.ID, Stage: "dify", Outcome: "answer", Detail: "310 chars, 40 events, 154 tokens"}); err != nil {
					return err
				}
			}
			if err := tx.AddIntent(store.Intent{EventID: e.ID, Step: "answer", AccountID: 1, ConversationID: conv, Content: strings.Repeat("answer ", 60)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	h := New(Options{Store: db, Key: testKey, ChatwootURL: chatwootURL, Actions: &fakeActions{}})
	req := httptest.NewRequest("GET", "/app/api/conversation?account_id=1&conversation_id=5", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	var size int
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
		size = w.Body.Len()
	}
	b.ReportMetric(float64(size), "body-bytes")
}
