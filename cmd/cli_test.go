package cmd

import (
	"encoding/json"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/internal/buildinfo"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

func TestRoutes(t *testing.T) {
	w := newWorld(t,
		simulate.DifyApp{Key: testDifyKey, Name: "Support bot", Mode: simulate.ModeAdvancedChat},
		simulate.DifyApp{Key: testDifyKey2, Name: "Email bot", Mode: simulate.ModeChat},
		simulate.DifyApp{Key: completionKey, Name: "Summarizer", Mode: simulate.ModeCompletion},
		simulate.DifyApp{Key: intakeKey, Name: "Intake", Mode: simulate.ModeAgentChat,
			Inputs: []simulate.DifyInput{{Variable: "lang", Label: "Language", Required: true}, {Variable: "tone", Label: "Tone"}}},
	)
	t.Setenv("EMAIL_BOT_KEY", testDifyKey2)

	// Only routes add creates the database; list before it says so.
	w.mustRun(2, "routes", "list")
	if _, err := os.Stat(w.db); !os.IsNotExist(err) {
		t.Fatalf("routes list created %s: %v", w.db, err)
	}
	res := w.mustRun(0, "routes", "add", "--inbox", "1", "--dify-key", testDifyKey, "--name", "support")
	if !strings.Contains(res.Out, `"Support bot" (advanced-chat)`) || !strings.Contains(res.Out, "app-…d7Qz") {
		t.Errorf("routes add: %q", res.Out)
	}
	w.mustRun(0, "routes", "add", "--inbox", "2", "--dify-key-env", "EMAIL_BOT_KEY", "--name", "email",
		"--keywords", "human, manager", "--handoff-team", "4")

	// --no-verify calls nothing: the URL does not even answer.
	before := w.difyHits.n.Load()
	w.mustRun(0, "routes", "add", "--inbox", "5", "--dify-key", revokedKey, "--dify-url", "http://127.0.0.1:9/v1",
		"--mode", "draft", "--no-verify", "--handoff-labels", "ai,escalated", "--max-in-flight", "20")
	if n := w.difyHits.n.Load(); n != before {
		t.Errorf("routes add --no-verify made %d Dify calls", n-before)
	}

	// Refusals: nothing is stored.
	res = w.mustRun(1, "routes", "add", "--inbox", "6", "--dify-key", completionKey)
	if !strings.Contains(res.Err, "no chat endpoint") || !strings.Contains(res.Err, "--no-verify") {
		t.Errorf("completion app: %q", res.Err)
	}
	res = w.mustRun(1, "routes", "add", "--inbox", "6", "--dify-key", intakeKey)
	if !strings.Contains(res.Err, "requires inputs") || !strings.Contains(res.Err, "lang") || strings.Contains(res.Err, "tone") {
		t.Errorf("missing input: %q", res.Err)
	}
	res = w.mustRun(1, "routes", "add", "--inbox", "6", "--dify-key", revokedKey)
	if !strings.Contains(res.Err, "verify dify key") {
		t.Errorf("revoked key: %q", res.Err)
	}
	res = w.mustRun(1, "routes", "add", "--inbox", "1", "--dify-key", testDifyKey)
	if !strings.Contains(res.Err, "inbox 1 already has a route") {
		t.Errorf("duplicate inbox: %q", res.Err)
	}
	w.mustRun(2, "routes", "add", "--inbox", "6", "--dify-key-env", "UNSET_BRIDGE_TEST_KEY")
	w.mustRun(2, "routes", "add", "--inbox", "6", "--dify-key-env", "UNSET_BRIDGE_TEST_KEY", "--no-verify")
	w.mustRun(2, "routes", "add", "--dify-key", testDifyKey)
	w.mustRun(2, "routes", "add", "--inbox", "6", "--dify-key", testDifyKey, "--dify-key-env", "EMAIL_BOT_KEY")
	w.mustRun(2, "routes", "add", "--inbox", "6", "--dify-key", testDifyKey, "--mode", "pilot")
	w.mustRun(2, "routes", "add", "--inbox", "6", "--dify-key", testDifyKey, "--inputs", "[1]")
	w.mustRun(2, "routes", "add", "--inbox", "6", "--dify-key", testDifyKey, "--max-in-flight", "-1")
	w.mustRun(0, "routes", "add", "--inbox", "6", "--dify-key", intakeKey, "--inputs", `{"lang":"{contact.name}"}`)

	w.mustRun(0, "routes", "list")
	res = w.mustRunJSON(0, "routes", "list")
	var routes []routeView
	if err := json.Unmarshal([]byte(res.Out), &routes); err != nil {
		t.Fatalf("routes list --json: %v\n%s", err, res.Out)
	}
	wantKeys := map[int64]string{1: "app-…d7Qz", 2: "$EMAIL_BOT_KEY", 3: "app-…0003", 4: "app-…0002"}
	if len(routes) != len(wantKeys) {
		t.Fatalf("routes list --json: %d routes, want %d", len(routes), len(wantKeys))
	}
	for _, r := range routes {
		if r.Key != wantKeys[r.ID] {
			t.Errorf("route %d: key shown as %q, want %q", r.ID, r.Key, wantKeys[r.ID])
		}
	}
	if r := routes[1]; r.KeyEnv != "EMAIL_BOT_KEY" || r.AppName != "Email bot" || !slices.Equal(r.Keywords, []string{"human", "manager"}) ||
		r.HandoffTeam == nil || *r.HandoffTeam != 4 {
		t.Errorf("route 2 = %+v", r)
	}
	if r := routes[2]; r.Mode != store.ModeDraft || r.AppName != "" || r.DifyURL != "http://127.0.0.1:9/v1" || r.MaxInFlight != 20 {
		t.Errorf("route 3 = %+v", r)
	}
	if r := routes[3]; r.Inputs["lang"] != "{contact.name}" || r.AppMode != "agent-chat" {
		t.Errorf("route 4 = %+v", r)
	}

	w.mustRun(0, "routes", "show", "2")
	w.mustRun(0, "routes", "show", "3")
	res = w.mustRunJSON(0, "routes", "show", "1")
	var one routeView
	if err := json.Unmarshal([]byte(res.Out), &one); err != nil || one.ID != 1 || one.Key != "app-…d7Qz" {
		t.Errorf("routes show --json: %v %+v", err, one)
	}
	w.mustRun(0, "routes", "disable", "2")
	w.mustRun(0, "routes", "list")
	w.mustRun(0, "routes", "enable", "2")
	w.mustRun(0, "routes", "remove", "3")
	w.mustRun(1, "routes", "remove", "3")
	w.mustRun(1, "routes", "show", "99")
	w.mustRun(1, "routes", "enable", "99")
	w.mustRun(2, "routes", "show", "abc")
	w.mustRun(2, "routes", "disable")
	// The newest route removed, the next one still gets a new id.
	w.mustRun(0, "routes", "remove", "4")
	if res = w.mustRun(0, "routes", "add", "--inbox", "7", "--dify-key", testDifyKey, "--no-verify"); !strings.Contains(res.Out, "Added route 5:") {
		t.Errorf("route id reused after remove: %q", res.Out)
	}
	w.mustRun(0, "routes", "list")
	checkGolden(t, "routes", w.tr.String())
}

// New Agent apps (mode "agent" in Dify 1.14) have a chat endpoint; the route keeps the mode so
// that their narration is never taken for the answer.
func TestRoutesAddNewAgent(t *testing.T) {
	w := newWorld(t, simulate.DifyApp{Key: testDifyKey, Name: "Concierge", Mode: simulate.ModeAgent})
	res := w.mustRun(0, "routes", "add", "--inbox", "1", "--dify-key", testDifyKey)
	if !strings.Contains(res.Out, `"Concierge" (agent)`) {
		t.Errorf("routes add: %q", res.Out)
	}
	res = w.mustRunJSON(0, "routes", "show", "1")
	var r routeView
	if err := json.Unmarshal([]byte(res.Out), &r); err != nil || r.AppMode != "agent" {
		t.Errorf("routes show --json: %v %+v", err, r)
	}
}

func TestEvents(t *testing.T) {
	w := newWorld(t)
	j := seedJournal(w)
	w.mustRun(0, "events", "list")
	w.mustRun(0, "events", "list", "--status", "failed")
	w.mustRun(0, "events", "list", "--conversation", strconv.FormatInt(j.jane, 10))
	w.mustRun(0, "events", "list", "--limit", "2")
	w.mustRun(0, "events", "list", "--since", "1h")
	w.mustRun(0, "events", "list", "--since", "10m")
	for _, id := range []int64{j.answered, j.handedOff, j.ignored, j.rejected, j.failed} {
		w.mustRun(0, "events", "show", strconv.FormatInt(id, 10))
	}
	w.mustRun(1, "events", "show", "99")
	checkGolden(t, "events", w.tr.String())

	res := w.mustRunJSON(0, "events", "list")
	var list []eventView
	if err := json.Unmarshal([]byte(res.Out), &list); err != nil {
		t.Fatalf("events list --json: %v", err)
	}
	var got []string
	for _, e := range list {
		got = append(got, e.Status)
	}
	want := []string{"failed", "rejected", "ignored", "handed_off", "answered"}
	if !slices.Equal(got, want) {
		t.Errorf("events list --json statuses = %v, want %v (newest first)", got, want)
	}
	if !list[0].ReceivedAt.Equal(testEpoch) {
		t.Errorf("received_at = %v, want %v", list[0].ReceivedAt, testEpoch)
	}

	res = w.mustRunJSON(0, "events", "show", strconv.FormatInt(j.answered, 10))
	var ev eventView
	if err := json.Unmarshal([]byte(res.Out), &ev); err != nil {
		t.Fatalf("events show --json: %v", err)
	}
	if ev.Status != store.StatusAnswered || ev.PostedMessageID == 0 || ev.ConversationID != j.jane || len(ev.Trace) < 4 {
		t.Errorf("events show --json = %+v", ev)
	}
	stages := map[string]bool{}
	for _, h := range ev.Trace {
		stages[h.Stage] = true
	}
	for _, s := range []string{"decision", "worker", "dify", "chatwoot", "done"} {
		if !stages[s] {
			t.Errorf("trace of event %d has no %s hop: %+v", ev.ID, s, ev.Trace)
		}
	}
	res = w.mustRunJSON(0, "events", "show", strconv.FormatInt(j.rejected, 10))
	if err := json.Unmarshal([]byte(res.Out), &ev); err != nil || ev.HTTPStatus != 400 || !strings.Contains(ev.Body, `"event": "message_created"`) {
		t.Errorf("rejected event --json: %v %+v", err, ev)
	}

	// The listing shows times in the zone of the output's clock.
	berlin := time.FixedZone("CET", 3600)
	res = w.runWith(cliRun{Now: func() time.Time { return testNow.In(berlin) }}, "events", "list", "--limit", "1")
	if !strings.Contains(res.Out, "2025-03-01 11:00:00") {
		t.Errorf("events list in CET:\n%s", res.Out)
	}
}

func TestConversations(t *testing.T) {
	w := newWorld(t)
	j := seedJournal(w)
	jane, maxID := strconv.FormatInt(j.jane, 10), strconv.FormatInt(j.max, 10)
	w.mustRun(0, "conversations", "list")
	w.mustRun(0, "conversations", "list", "--state", "human")
	w.mustRun(0, "conversations", "list", "--inbox", "2")
	w.mustRun(0, "conversations", "reset", jane)
	w.mustRun(0, "conversations", "list", "--state", "human")
	w.mustRun(1, "conversations", "reset", "999")
	w.mustRun(2, "conversations", "reset", "abc")
	w.mustRun(2, "conversations", "list", "--state", "robots")
	checkGolden(t, "conversations", w.tr.String())

	res := w.mustRunJSON(0, "conversations", "list")
	var cs []conversationView
	if err := json.Unmarshal([]byte(res.Out), &cs); err != nil {
		t.Fatalf("conversations list --json: %v", err)
	}
	byID := map[int64]conversationView{}
	for _, c := range cs {
		byID[c.ConversationID] = c
	}
	if c := byID[j.jane]; c.State != store.StateHuman || c.DifyConversationID != "" || c.Answers != 1 || c.Handoffs != 1 {
		t.Errorf("conversation %s after reset = %+v", jane, c)
	}
	if c := byID[j.max]; c.State != store.StateBot || c.InboxID != 1 {
		t.Errorf("conversation %s = %+v", maxID, c)
	}
	if _, ok := byID[j.erik]; ok {
		t.Errorf("conversation %d of an inbox without a route is listed", j.erik)
	}
}

func TestVersionJSON(t *testing.T) {
	isolate(t)
	res := runCLI(t, "version", "--json")
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Err)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(res.Out), &v); err != nil {
		t.Fatalf("version --json: %v\n%s", err, res.Out)
	}
	for _, k := range []string{"version", "commit", "date", "go"} {
		if v[k] == "" {
			t.Errorf("version --json has no %s: %s", k, res.Out)
		}
	}
	version := buildinfo.Get().Version
	if v["go"] != runtime.Version() || v["version"] != version {
		t.Errorf("version --json = %v", v)
	}
	// The first line names Chatwoot and Dify, so this bridge is never taken
	// for iproute2's; --version says the same as the command.
	res = runCLI(t, "version")
	if want := "bridge " + version + ", Chatwoot ↔ Dify bridge (commit "; res.Code != 0 || !strings.HasPrefix(res.Out, want) {
		t.Errorf("version: %d %q, want it to start %q", res.Code, res.Out, want)
	}
	if flag := runCLI(t, "--version"); flag.Code != 0 || flag.Out != res.Out {
		t.Errorf("--version: %d %q, want %q", flag.Code, flag.Out, res.Out)
	}
	if help := runCLI(t, "--help"); !strings.HasPrefix(help.Out, "Chatwoot ↔ Dify bridge: ") || !strings.Contains(help.Out, "Not iproute2's bridge(8)") {
		t.Errorf("--help does not say which bridge this is:\n%s", help.Out)
	}
}
