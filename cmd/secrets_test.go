package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// Credentials of the secrets test, each distinct from the other tests'.
const (
	secBotToken     = "bot-token-SEC-3f9a1c77d2"
	secUserToken    = "user-token-SEC-81be04aa61"
	secHookToken    = "hook-token-SEC-5d2e9b0c43"
	secHookSecret   = "hook-secret-SEC-c0ffee1234"
	secDifyKey      = "app-SupportKeySEC9d8e7f6a5b"
	secDifyKeyWrong = "app-RevokedKeySEC1a2b3c4d5e"
)

var secSecrets = []string{secBotToken, secUserToken, secHookToken, secHookSecret, secDifyKey, secDifyKeyWrong}

// TestServeNeverRevealsSecrets runs serve at Debug with known credentials
// through a full conversation, webhook authentication failures, a Chatwoot
// 401 and a Dify 401, then runs the reporting commands (text and --json),
// and finds none of the credentials in the logs, the command output, the
// journal or the database file.
func TestServeNeverRevealsSecrets(t *testing.T) {
	dir := isolate(t)
	db := filepath.Join(dir, "bridge.db")

	dify := simulate.NewDify(simulate.DifyApp{Key: secDifyKey, Name: "Support", Mode: simulate.ModeChat})
	difySrv := httptest.NewServer(dify)
	t.Cleanup(func() { difySrv.Close(); dify.Close() })
	cw := simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: secBotToken, UserToken: secUserToken, EchoSync: true})
	cwSrv := httptest.NewServer(cw)
	t.Cleanup(func() { cwSrv.Close(); cw.Close() })
	cw.AddInbox(1, "Website", "")
	cw.AddInbox(2, "Email", "")
	cw.AddTeam(4, "Support")

	cfgPath := filepath.Join(dir, "bridge.toml")
	cfg := fmt.Sprintf(`database = %q
log_level = "debug"
log_format = "json"
public_url = "https://bridge.example.com"

[chatwoot]
base_url = %q
api_token = %q
user_token = %q
webhook_token = %q
webhook_secret = %q

[dify]
base_url = %q
max_retries = 0

[handoff]
labels = ["bot-handoff"]
team_id = 4
`, db, cwSrv.URL, secBotToken, secUserToken, secHookToken, secHookSecret, difySrv.URL+"/v1")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// Route keys come from the environment, so the database never holds one.
	t.Setenv("SUPPORT_DIFY_KEY", secDifyKey)
	t.Setenv("REVOKED_DIFY_KEY", secDifyKeyWrong)

	var cli strings.Builder // everything every command printed
	run := func(want int, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		code := executeForTest(t.Context(), IO{In: strings.NewReader(""), Out: &out, Err: &errOut}, time.Now,
			append(args, "--config", cfgPath)...)
		cli.WriteString(out.String())
		cli.WriteString(errOut.String())
		if want >= 0 && code != want {
			t.Fatalf("bridge %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out.String(), errOut.String())
		}
		return out.String()
	}
	run(0, "routes", "add", "--inbox", "1", "--name", "support", "--dify-key-env", "SUPPORT_DIFY_KEY")
	run(0, "routes", "add", "--inbox", "2", "--name", "revoked", "--dify-key-env", "REVOKED_DIFY_KEY", "--no-verify")
	// A key Dify does not know is refused when added.
	run(-1, "routes", "add", "--inbox", "3", "--dify-key", secDifyKeyWrong)

	p := serveInProcess(t, "--config", cfgPath)
	hook := "http://" + p.addr + "/webhooks/chatwoot"
	cw.SetWebhook(hook+"?token="+secHookToken, secHookSecret)

	say := func(conv int64, text string) {
		t.Helper()
		d, err := cw.CustomerSays(t.Context(), conv, text)
		if err != nil || d.Status != http.StatusOK {
			t.Fatalf("webhook: %d %s %v", d.Status, d.Response, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	waitBot := func(conv int64, n int) {
		t.Helper()
		if err := cw.WaitFor(ctx, func() bool { return countBot(cw, conv) >= n }); err != nil {
			t.Fatalf("conversation %d: fewer than %d bot messages: %v\n%s", conv, n, err, p.stderr.String())
		}
	}

	// A full conversation: a question, a follow-up while Chatwoot refuses
	// the typing indicator, and a request for a human.
	conv := cw.NewConversation(1, simulate.Contact{ID: 11, Name: "Jane", Email: "jane@example.com"}, "pending")
	say(conv, "Where is my order?")
	waitBot(conv, 1)
	cw.Fail("toggle_typing_status", simulate.ChatwootFault{Status: http.StatusUnauthorized})
	say(conv, "And when does it arrive?")
	waitBot(conv, 2)
	say(conv, "I want to talk to a human")
	waitBot(conv, 3)
	if err := cw.WaitFor(ctx, func() bool { return cw.Status(conv) == "open" && len(cw.Labels(conv)) == 1 }); err != nil {
		t.Fatalf("handoff did not finish: %v\n%s", err, p.stderr.String())
	}

	// Dify refuses the key of the second route: the conversation is handed
	// off, with the reason in a note.
	conv2 := cw.NewConversation(2, simulate.Contact{ID: 12, Name: "Bob"}, "pending")
	say(conv2, "hello")
	if err := cw.WaitFor(ctx, func() bool { return cw.Status(conv2) == "open" }); err != nil {
		t.Fatalf("dify 401 was not handed off: %v\n%s", err, p.stderr.String())
	}

	// Webhooks that fail authentication.
	body := []byte(`{"event":"message_created","id":1}`)
	for _, url := range []string{hook, hook + "?token=not-" + secHookToken, hook + "?token=" + secHookToken} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Chatwoot-Timestamp", fmt.Sprint(time.Now().Unix()))
		req.Header.Set("X-Chatwoot-Signature", "sha256=00"+secHookSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: %d %s", url, resp.StatusCode, b)
		}
		cli.Write(b)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("serve exit %d\n%s", code, p.stderr.String())
	}
	logs := p.stderr.String() + p.stdout.String()
	for _, want := range []string{`"level":"DEBUG"`, `"msg":"webhook body"`, "dify 401", "webhook rejected", "toggle typing: http 401"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the logs lack %s; the run did not cover what it should:\n%s", want, logs)
		}
	}

	// What an operator runs afterwards.
	var events []struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal([]byte(run(0, "events", "list", "--limit", "1000", "--json")), &events); err != nil || len(events) < 10 {
		t.Fatalf("events list --json: %d events, %v", len(events), err)
	}
	run(0, "events", "list", "--limit", "1000")
	for _, e := range events {
		id := fmt.Sprint(e.ID)
		run(0, "events", "show", id)
		run(0, "events", "show", id, "--json")
	}
	for _, args := range [][]string{
		{"routes", "list"}, {"routes", "list", "--json"}, {"routes", "show", "1"}, {"routes", "show", "2", "--json"},
		{"conversations", "list"}, {"conversations", "list", "--json"},
		{"doctor"}, {"doctor", "--json"},
		{"replay", "--dry-run", fmt.Sprint(events[len(events)-1].ID)},
	} {
		run(-1, args...)
	}

	// The journal and the database file itself.
	var journal strings.Builder
	s, err := store.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.ListEvents(t.Context(), store.EventFilter{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		fmt.Fprintf(&journal, "%+v\n%s\n", e, e.Payload)
		hops, err := s.Hops(t.Context(), e.ID)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&journal, "%+v\n", hops)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(journal.String(), "dify 401") {
		t.Errorf("the journal lacks the Dify refusal:\n%s", journal.String())
	}
	var files strings.Builder
	for _, f := range []string{db, db + "-wal", db + "-shm"} {
		if b, err := os.ReadFile(f); err == nil {
			files.Write(b)
		}
	}

	outputs := map[string]string{
		"the logs":               logs,
		"the command output":     cli.String(),
		"the journal":            journal.String(),
		"the database file":      files.String(),
		"what Chatwoot was sent": chatwootSaw(cw, conv, conv2),
	}
	for what, out := range outputs {
		for _, s := range secSecrets {
			if strings.Contains(out, s) {
				t.Errorf("credential %s found in %s", config.Mask(s), what)
			}
		}
	}
}

// TestServeWarnsAboutReadableConfig: serve warns at start when the config
// file holding secrets can be read by group or others, and not otherwise.
func TestServeWarnsAboutReadableConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode os.FileMode
		warn bool
	}{{"GroupReadable", 0o640, true}, {"WorldReadable", 0o644, true}, {"Private", 0o600, false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := isolate(t)
			path := filepath.Join(dir, "bridge.toml")
			content := fmt.Sprintf("database = %q\nlog_format = \"json\"\n[chatwoot]\napi_token = %q\n",
				filepath.Join(dir, "bridge.db"), secBotToken)
			if err := os.WriteFile(path, []byte(content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil { // past the umask
				t.Fatal(err)
			}
			p := serveInProcess(t, "--config", path)
			if code := p.stop(t); code != 0 {
				t.Fatalf("exit %d:\n%s", code, p.stderr.String())
			}
			logs := p.stderr.String()
			if got := strings.Contains(logs, "readable by group or others") && strings.Contains(logs, "chmod 600"); got != tc.warn {
				t.Errorf("warning = %v, want %v:\n%s", got, tc.warn, logs)
			}
			if strings.Contains(logs, secBotToken) {
				t.Error("the warning shows the token")
			}
		})
	}
}
