package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"html/template"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// screenshotTo, when set, is where TestDashboardInBrowser writes its
// screenshot of the page (docs/dashboard-app.png is made this way).
var screenshotTo = flag.String("screenshot", "", "write the Dashboard App screenshot of TestDashboardInBrowser to this PNG file")

// The agent Chatwoot's context names, as Frame.vue builds currentAgent
// from the signed-in user: {id, name, email}.
const (
	agentID    = 3
	agentName  = "Agent Smith"
	agentEmail = "smith@example.com"
)

// chatwootFrame plays Chatwoot's conversation view for a Dashboard App, as
// app/javascript/dashboard/components/widgets/DashboardApp/Frame.vue does
// it: an iframe of the app's URL, and the context posted to it as a JSON
// string with target origin '*' when the iframe's load event fires
// (onIframeLoad) and whenever the frame posts the plain string
// 'chatwoot-dashboard-app:fetch-info'. The mode leaves out one of the two
// (load: never answers a request; ask: sends nothing on load), or both
// (silent). In mode forge a second iframe, from another origin, keeps
// posting a context naming another conversation into the app's frame.
var chatwootFrame = template.Must(template.New("frame").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Chatwoot</title>
<style>body{margin:0} iframe{border:0;display:block;width:100%;height:100vh}</style></head>
<body data-sent="0" data-asked="0">
<iframe id="dashboard-app--frame-0-0" src="{{.AppURL}}"></iframe>
{{if .ForgeURL}}<iframe id="other" src="{{.ForgeURL}}" style="height:0"></iframe>{{end}}
<script>
const ctx = {{.Context}};
const mode = {{.Mode}};
const frame = document.getElementById('dashboard-app--frame-0-0');
function send() {
  frame.contentWindow.postMessage(JSON.stringify({event: 'appContext', data: ctx}), '*');
  document.body.dataset.sent = String(Number(document.body.dataset.sent) + 1);
}
if (mode === 'normal' || mode === 'load') frame.addEventListener('load', send);
window.addEventListener('message', (e) => {
  if (typeof e.data !== 'string' || e.data !== 'chatwoot-dashboard-app:fetch-info') return;
  document.body.dataset.asked = String(Number(document.body.dataset.asked) + 1);
  if (mode === 'normal' || mode === 'ask') send();
});
</script></body></html>`))

// forgePage runs at another origin, beside the app's frame, and posts a
// well-formed context for another conversation into it.
var forgePage = template.Must(template.New("forge").Parse(`<!doctype html>
<html><body><script>
const forged = JSON.stringify({event: 'appContext', data: {conversation: {id: {{.Conv}}, account_id: 1},
  currentAgent: {id: 66, name: 'Mallory', email: 'm@example.com'}}});
setInterval(() => parent.frames[0].postMessage(forged, '*'), 50);
</script></body></html>`))

// browser starts headless Chromium for the test, or skips the test when
// there is none, unless CI is set: CI must run it.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no chromium on PATH, and CI is set: the Dashboard App must be tested in a browser (apt-get install chromium chromium-driver)")
		}
		t.Skip("no chromium on PATH: the Dashboard App's browser test needs it (apt-get install chromium chromium-driver); CI fails instead of skipping")
	}
	// The machine has no internet: without the background-networking
	// flags Chromium stalls on its own update and sync requests.
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(400, 1000),
	)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	// The browser lives as long as the context of the first run: start it
	// on ctx itself, then bound the test's steps.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dashboardWorld is a bridge with the Dashboard App on, whose
// chatwoot.base_url is a server that serves Chatwoot's API (the simulator)
// and the conversation view that frames the app.
type dashboardWorld struct {
	*env
	host  *httptest.Server
	other *httptest.Server
}

func newDashboardWorld(t *testing.T) *dashboardWorld {
	t.Helper()
	w := &dashboardWorld{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /app/accounts/1/conversations/{id}", w.serveFrame)
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) { w.cw.ServeHTTP(rw, r) })
	w.host = httptest.NewServer(mux)
	t.Cleanup(w.host.Close)
	w.other = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = forgePage.Execute(rw, map[string]any{"Conv": r.URL.Query().Get("conv")}) // the test fails on what the page shows
	}))
	t.Cleanup(w.other.Close)
	w.env = newEnv(t, envOptions{route: func(r *store.Route) { r.AppName, r.AppMode = "Support bot", "advanced-chat" }, tune: func(o *Options) {
		o.DashboardKey = testDashboardKey
		o.Chatwoot = chatwoot.NewClient(chatwoot.Options{BaseURL: w.host.URL, Token: testBotToken})
	}})
	return w
}

// serveFrame is the conversation view. The context is built as Chatwoot
// builds it: the conversation as its API shows it (the simulator's view
// plus account_id, which app/views/api/v1/conversations/partials/
// _conversation.json.jbuilder adds), the contact, and currentAgent.
func (w *dashboardWorld) serveFrame(rw http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/api/v1/accounts/1/conversations/"+id, nil)
	req.Header.Set("api_access_token", testUserToken) // an agent's session, not the bot's token
	w.cw.ServeHTTP(rec, req)
	var conv map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &conv); err != nil || rec.Code != http.StatusOK {
		http.Error(rw, "no conversation "+id, http.StatusNotFound)
		return
	}
	conv["account_id"] = 1
	var contact any
	if meta, ok := conv["meta"].(map[string]any); ok {
		contact = meta["sender"]
	}
	q := r.URL.Query()
	data := map[string]any{
		"AppURL": w.srv.URL + "/app/?key=" + q.Get("key"),
		"Mode":   q.Get("mode"),
		"Context": map[string]any{"conversation": conv, "contact": contact,
			"currentAgent": map[string]any{"id": agentID, "name": agentName, "email": agentEmail}},
	}
	if q.Get("mode") == "forge" {
		data["ForgeURL"] = w.other.URL + "/?conv=" + q.Get("forge")
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = chatwootFrame.Execute(rw, data) // the test fails on what the page shows
}

func (w *dashboardWorld) frameURL(conv int64, key, mode string) string {
	return w.host.URL + "/app/accounts/1/conversations/" + strconv.FormatInt(conv, 10) + "?key=" + key + "&mode=" + mode
}

// open loads the conversation view and returns the app's iframe node once
// the app's own page has loaded in it.
func open(t *testing.T, ctx context.Context, url string) *chromedp.Node {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	nodes, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSS("#dashboard-app--frame-0-0")))
	if err != nil || len(nodes) != 1 {
		t.Fatalf("app frame: %v", err)
	}
	// The frame's document is the app's once its script tag is there.
	if err := chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS(`script[src="app.js"]`), chromedp.FromNode(nodes[0]))); err != nil {
		t.Fatalf("app page in the frame: %v", err)
	}
	return nodes[0]
}

// in waits until the app page, inside frame, matches sel (a CSS selector).
func in(t *testing.T, ctx context.Context, frame *chromedp.Node, sel, what string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(wctx, chromedp.WaitReady(chromedp.CSS(sel), chromedp.FromNode(frame))); err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, sel, err)
	}
}

func textIn(t *testing.T, ctx context.Context, frame *chromedp.Node, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel), chromedp.FromNode(frame)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

var simulateJane = simulate.Contact{ID: 1, Name: "Jane Doe", Email: "jane@example.com"}

// TestDashboardInBrowser loads the Dashboard App in headless Chromium inside
// a page that plays Chatwoot's conversation view: it renders the
// conversation's trace, gives the conversation back from its button, shows
// an error and changes nothing with a wrong key, and ignores a context
// posted from another origin.
func TestDashboardInBrowser(t *testing.T) {
	ctx := browser(t)
	w := newDashboardWorld(t)
	bg := t.Context()

	conv := w.cw.NewConversation(1, simulateJane, "pending")
	w.waitFinal(w.say(conv, "Where is my order #1234?").EventID)
	w.waitFinal(w.say(conv, "I want to talk to a human, please.").EventID)
	other := w.cw.NewConversation(1, simulateJane, "pending")
	w.waitFinal(w.say(other, "A different question").EventID)
	if c := w.conv(conv); c.State != store.StateHuman {
		t.Fatalf("setup: state %s", c.State)
	}
	// The width of Chatwoot's side panel, in light mode.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(400, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}}); err != nil {
		t.Fatal(err)
	}

	t.Run("RendersTheTrace", func(t *testing.T) {
		frame := open(t, ctx, w.frameURL(conv, testDashboardKey, "normal"))
		in(t, ctx, frame, `body[data-state="human"] #events li:nth-child(2)`, "the conversation's two events")
		if got := textIn(t, ctx, frame, "#holder"); got != "Human" {
			t.Errorf("holder = %q", got)
		}
		line := textIn(t, ctx, frame, "#holder-line")
		if !strings.Contains(line, "A human holds it since") || !strings.Contains(line, "customer asked for a human") {
			t.Errorf("holder line = %q", line)
		}
		events := textIn(t, ctx, frame, "#events")
		for _, want := range []string{"I want to talk to a human, please.", "Where is my order #1234?",
			"handoff: customer asked for a human", "posted answer #", "posted handoff note #", "handoff_note (private note)"} {
			if !strings.Contains(events, want) {
				t.Errorf("events lack %q:\n%s", want, events)
			}
		}
		if strings.Contains(events, "A different question") {
			t.Error("another conversation's message is shown")
		}
		if got := textIn(t, ctx, frame, "#fact-app"); !strings.Contains(got, "conversation ") {
			t.Errorf("Dify app line = %q", got)
		}
		in(t, ctx, frame, `#owners:not([hidden]) #ownership li[data-kind="handoff"]`, "the handoff in who held it")
		if got := textIn(t, ctx, frame, "#ownership"); !strings.Contains(got, "handed off → human · customer_asked") ||
			!strings.Contains(got, `customer asked for a human: "I want to talk to a human, please." · event #`) {
			t.Errorf("who held it = %q", got)
		}

		shot, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS("#dashboard-app--frame-0-0")))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(shot))
		if err != nil || cfg.Width < 380 || cfg.Width > 420 {
			t.Errorf("screenshot: %v, %dx%d", err, cfg.Width, cfg.Height)
		}
		if *screenshotTo != "" {
			if err := os.WriteFile(*screenshotTo, shot, 0o644); err != nil {
				t.Fatal(err)
			}
		}

		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#give-back"), chromedp.FromNode(frame))); err != nil {
			t.Fatal(err)
		}
		in(t, ctx, frame, `body[data-result="ok"][data-state="bot"]`, "the conversation given back")
		c := w.conv(conv)
		if c.State != store.StateBot || c.StateReason != "given back by Agent Smith (agent 3)" {
			t.Errorf("after the click: %s %q", c.State, c.StateReason)
		}
		if s := w.cw.Status(conv); s != "pending" {
			t.Errorf("Chatwoot status after the click = %s", s)
		}
		if got := textIn(t, ctx, frame, "#holder"); got != "Bot" {
			t.Errorf("holder after the click = %q", got)
		}
		in(t, ctx, frame, `#ownership li:first-child[data-kind="return"] + li[data-kind="handoff"]`, "the give-back in who held it, newest first")
		if got := textIn(t, ctx, frame, "#ownership li:first-child"); !strings.Contains(got, "returned → bot · give-back") ||
			!strings.Contains(got, "given back by Agent Smith (agent 3)") {
			t.Errorf("newest entry = %q", got)
		}
	})

	// Chatwoot sends the context on load only, or only when asked: both
	// reach the page.
	for _, mode := range []string{"load", "ask"} {
		t.Run("ContextOn_"+mode, func(t *testing.T) {
			frame := open(t, ctx, w.frameURL(other, testDashboardKey, mode))
			in(t, ctx, frame, `body[data-contexts] #events li`, "the conversation's event")
			if got := textIn(t, ctx, frame, "#events"); !strings.Contains(got, "A different question") {
				t.Errorf("events = %q", got)
			}
		})
	}

	t.Run("WrongKey", func(t *testing.T) {
		if err := Keep(bg, w.db, 1, conv, "the test"); err != nil {
			t.Fatal(err)
		}
		before := len(w.cw.Calls())
		frame := open(t, ctx, w.frameURL(conv, "wrong-key-0123456789abcdefgh", "normal"))
		in(t, ctx, frame, `body[data-loads] #notice:not([hidden])`, "the key error")
		if got := textIn(t, ctx, frame, "#notice"); !strings.Contains(got, "wrong dashboard key") {
			t.Errorf("notice = %q", got)
		}
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#give-back"), chromedp.FromNode(frame))); err != nil {
			t.Fatal(err)
		}
		in(t, ctx, frame, `body[data-result="error"]`, "the refused action")
		if got := textIn(t, ctx, frame, "#result"); !strings.Contains(got, "wrong dashboard key") {
			t.Errorf("result = %q", got)
		}
		if c := w.conv(conv); c.State != store.StateHuman || c.StateReason != "kept for humans by the test" {
			t.Errorf("a wrong key changed the conversation: %s %q", c.State, c.StateReason)
		}
		for _, c := range w.cw.Calls()[before:] {
			if c.Token != "user" { // the conversation view's own read
				t.Errorf("a wrong key reached Chatwoot: %+v", c)
			}
		}
		if n, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll("#events li"), chromedp.FromNode(frame), chromedp.AtLeast(0))); err != nil || len(n) != 0 {
			t.Errorf("events shown with a wrong key: %d, %v", len(n), err)
		}
	})

	// Who held it comes from the journal, and its texts may come from
	// people (an agent's name, a customer's message): they are shown as
	// text, never parsed as markup.
	t.Run("OwnershipIsText", func(t *testing.T) {
		const markup = `<img src="x" id="injected">`
		if err := Keep(bg, w.db, 1, other, markup); err != nil {
			t.Fatal(err)
		}
		frame := open(t, ctx, w.frameURL(other, testDashboardKey, "normal"))
		in(t, ctx, frame, `#ownership li[data-kind="keep"]`, "the keep in who held it")
		if got := textIn(t, ctx, frame, "#ownership"); !strings.Contains(got, "kept for humans by "+markup) {
			t.Errorf("who held it = %q", got)
		}
		if n, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll("#injected"), chromedp.FromNode(frame), chromedp.AtLeast(0))); err != nil || len(n) != 0 {
			t.Errorf("the entry's text was parsed as markup: %d nodes, %v", len(n), err)
		}
	})

	t.Run("ContextFromAnotherOrigin", func(t *testing.T) {
		frame := open(t, ctx, w.frameURL(conv, testDashboardKey, "forge")+"&forge="+strconv.FormatInt(other, 10))
		in(t, ctx, frame, `body[data-ignored]`, "a forged context to arrive")
		if err := chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS(`body:not([data-asked="0"])`))); err != nil {
			t.Fatalf("the page never asked Chatwoot for its context: %v", err)
		}
		attrs, err := chromedp.Run(ctx, chromedp.Attributes(chromedp.CSS("body"), chromedp.FromNode(frame)))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := attrs["data-contexts"]; ok {
			t.Errorf("a context from another origin was taken: %v", attrs)
		}
		if got := textIn(t, ctx, frame, "#conv-title"); got != "" {
			t.Errorf("the page shows %q", got)
		}
	})
}
