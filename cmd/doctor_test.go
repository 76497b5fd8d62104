package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/doctor"
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

// doctorUserToken is chatwoot.user_token in these tests; like testSecrets it
// must never be printed.
const doctorUserToken = "user-token-never-printed-6120"

// publicIP is a public address literal, so no test resolves a name.
const publicIP = "https://93.184.215.14"

// doctorWorld is an installation for doctor: simulated Chatwoot (whose Date
// header follows testNow, the CLI's clock) and Dify on loopback, and a
// database and config file in a temporary directory.
type doctorWorld struct {
	t              *testing.T
	dir, db        string
	cw             *simulate.Chatwoot
	dify           *simulate.Dify
	cwURL, difyURL string
}

func newDoctorWorld(t *testing.T) *doctorWorld {
	t.Helper()
	w := &doctorWorld{t: t, dir: isolate(t)}
	w.db = filepath.Join(w.dir, "bridge.db")
	w.cw = simulate.NewChatwoot(simulate.ChatwootOptions{AccountID: 1, BotToken: testBotToken, UserToken: doctorUserToken,
		NoEcho: true, Now: func() time.Time { return testNow }})
	cwSrv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Date", testNow.UTC().Format(http.TimeFormat))
		w.cw.ServeHTTP(rw, r)
	}))
	w.dify = simulate.NewDify(
		simulate.DifyApp{Key: testDifyKey, Name: "Support bot", Mode: simulate.ModeAdvancedChat},
		simulate.DifyApp{Key: testDifyKey2, Name: "Email bot", Mode: simulate.ModeChat},
		simulate.DifyApp{Key: completionKey, Name: "Summarizer", Mode: simulate.ModeCompletion},
		simulate.DifyApp{Key: intakeKey, Name: "Intake", Mode: simulate.ModeAgentChat,
			Inputs: []simulate.DifyInput{{Variable: "lang", Label: "Language", Required: true}}},
	)
	difySrv := httptest.NewServer(w.dify)
	t.Cleanup(func() {
		cwSrv.Close()
		w.cw.Close()
		difySrv.Close()
		w.dify.Close()
	})
	w.cwURL, w.difyURL = cwSrv.URL, difySrv.URL+"/v1"
	return w
}

// writeConfig writes bridge.toml with the world's URLs plus extra, with the
// given file mode, and returns its path.
func (w *doctorWorld) writeConfig(extraTop, extraChatwoot string, mode os.FileMode) string {
	w.t.Helper()
	path := filepath.Join(w.dir, "bridge.toml")
	body := fmt.Sprintf("database = %q\n%s\n[chatwoot]\nbase_url = %q\napi_token = %q\nuser_token = %q\n%s\n[dify]\nbase_url = %q\n",
		w.db, extraTop, w.cwURL, testBotToken, doctorUserToken, extraChatwoot, w.difyURL)
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		w.t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // the umask may have narrowed it
		w.t.Fatal(err)
	}
	return path
}

// seed opens the world's database and hands it to fn.
func (w *doctorWorld) seed(fn func(ctx context.Context, db *store.DB)) {
	w.t.Helper()
	db, err := store.Open(w.t.Context(), w.db)
	if err != nil {
		w.t.Fatal(err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			w.t.Error(err)
		}
	}()
	fn(w.t.Context(), db)
}

func mustAddRoute(t *testing.T, db *store.DB, r *store.Route) {
	t.Helper()
	r.Enabled = true
	if err := db.AddRoute(t.Context(), r); err != nil {
		t.Fatal(err)
	}
}

// mustJournal records e as if it had happened at e.ReceivedAt.
func mustJournal(t *testing.T, db *store.DB, e store.Event) int64 {
	t.Helper()
	at := e.ReceivedAt
	db.Now = func() time.Time { return at }
	err := db.Write(t.Context(), func(tx *store.Tx) error {
		if err := tx.InsertEvent(&e); err != nil {
			return err
		}
		if e.LastError == "" {
			return nil
		}
		return tx.UpdateEvent(e.ID, store.EventUpdate{LastError: &e.LastError}) // InsertEvent leaves it out
	})
	if err != nil {
		t.Fatal(err)
	}
	return e.ID
}

// doctor runs bridge doctor with args, checks that no credential was
// printed, and returns the result with temporary paths and loopback ports
// replaced by placeholders.
func (w *doctorWorld) doctor(args ...string) cliResult {
	w.t.Helper()
	res := runCLI(w.t, append([]string{"doctor"}, args...)...)
	for _, s := range append(testSecrets, doctorUserToken) {
		if strings.Contains(res.Out+res.Err, s) {
			w.t.Errorf("bridge doctor printed a credential (%s)", config.Mask(s))
		}
	}
	res.Out = scrub(strings.ReplaceAll(res.Out, w.dir, "<tmp>"))
	res.Err = scrub(strings.ReplaceAll(res.Err, w.dir, "<tmp>"))
	return res
}

func (w *doctorWorld) golden(name string, args []string, res cliResult) {
	w.t.Helper()
	var tr transcript
	line := make([]string, 0, len(args)+1)
	line = append(line, "doctor")
	for _, a := range args {
		line = append(line, strings.ReplaceAll(a, w.dir, "<tmp>"))
	}
	tr.add(line, res)
	checkGolden(w.t, name, tr.String())
}

// healthy sets up a working installation: two routes whose inboxes have an
// agent bot sending to public_url, valid keys (one from the environment), a
// webhook secret, and a webhook answered twenty minutes ago.
func (w *doctorWorld) healthy() string {
	w.t.Helper()
	w.t.Setenv("DOCTOR_EMAIL_KEY", testDifyKey2)
	w.cw.AddInbox(1, "Website", publicIP+bridge.WebhookPath)
	w.cw.AddInbox(2, "Email", publicIP+bridge.WebhookPath)
	w.seed(func(ctx context.Context, db *store.DB) {
		mustAddRoute(w.t, db, &store.Route{InboxID: 1, Name: "support", DifyKey: testDifyKey})
		mustAddRoute(w.t, db, &store.Route{InboxID: 2, Name: "email", DifyKeyEnv: "DOCTOR_EMAIL_KEY"})
		mustJournal(w.t, db, store.Event{ReceivedAt: testNow.Add(-20 * time.Minute), Event: "message_created",
			AccountID: 1, InboxID: 1, ConversationID: 1, MessageID: 1001, Status: store.StatusAnswered})
	})
	return w.writeConfig(fmt.Sprintf("public_url = %q", publicIP), fmt.Sprintf("webhook_secret = %q", testWebhookSecret), 0o600)
}

func TestDoctorHealthyGolden(t *testing.T) {
	w := newDoctorWorld(t)
	args := []string{"--config", w.healthy()}
	res := w.doctor(args...)
	if res.Code != ExitOK {
		t.Fatalf("exit %d, want 0\n%s%s", res.Code, res.Out, res.Err)
	}
	if strings.Contains(res.Out, "✗") || strings.Contains(res.Out, "\n! ") {
		t.Errorf("a healthy set-up has warnings or failures:\n%s", res.Out)
	}
	if !strings.Contains(res.Out, "0 warnings, 0 failed") {
		t.Errorf("summary missing:\n%s", res.Out)
	}
	w.golden("doctor_healthy", args, res)
}

// broken sets up an installation with one problem of each kind.
func (w *doctorWorld) broken() string {
	w.t.Helper()
	w.cw.AddInbox(1, "Website", "http://10.0.0.5:8080"+bridge.WebhookPath)
	w.cw.AddInbox(2, "Email", "https://old-bridge.example.com/chatwoot")
	w.cw.AddInbox(8, "Intake", "")
	w.cw.AddInbox(10, "Phone", "http://10.0.0.5:8080"+bridge.WebhookPath)
	w.seed(func(ctx context.Context, db *store.DB) {
		t := w.t
		mustAddRoute(t, db, &store.Route{InboxID: 1, Name: "support", DifyKey: testDifyKey})
		mustAddRoute(t, db, &store.Route{InboxID: 2, Name: "email", DifyKey: revokedKey})
		mustAddRoute(t, db, &store.Route{InboxID: 7, Name: "gone", DifyKey: completionKey})
		mustAddRoute(t, db, &store.Route{InboxID: 8, Name: "intake", DifyKey: intakeKey})
		mustAddRoute(t, db, &store.Route{InboxID: 10, Name: "phone", DifyKeyEnv: "DOCTOR_UNSET_KEY"})
		ev := func(ago time.Duration, e store.Event) int64 {
			e.ReceivedAt, e.AccountID = testNow.Add(-ago), 1
			if e.Event == "" {
				e.Event = "message_created"
			}
			return mustJournal(t, db, e)
		}
		ev(3*time.Hour, store.Event{InboxID: 1, Status: store.StatusFailed, LastError: "dify chat: dify 500 internal_server_error; handoff: chatwoot post message: http 503"})
		ev(2*time.Hour, store.Event{InboxID: 12, Status: store.StatusIgnored, Reason: bridge.ReasonNoRoute})
		ev(90*time.Minute, store.Event{InboxID: 12, Status: store.StatusIgnored, Reason: bridge.ReasonNoRoute})
		ev(time.Hour, store.Event{InboxID: 1, Status: store.StatusFailed, LastError: "dify chat: dify 500 internal_server_error; handoff: chatwoot post message: http 503"})
		ev(50*time.Minute, store.Event{InboxID: 1, Status: store.StatusFailed, LastError: "dify chat: dify stream idle timeout; handoff: chatwoot toggle status: http 503"})
		ev(40*time.Minute, store.Event{Event: "", Status: store.StatusRejected, Reason: "bad signature", HTTPStatus: 401})
		ev(15*time.Minute, store.Event{InboxID: 1, Status: store.StatusAccepted, Kind: store.KindMessage})
	})
	// No webhook authentication, and a file holding tokens that others can read.
	return w.writeConfig(`public_url = "http://10.0.0.5:8080"`, "", 0o644)
}

func TestDoctorBrokenGolden(t *testing.T) {
	w := newDoctorWorld(t)
	args := []string{"--config", w.broken()}
	res := w.doctor(args...)
	if res.Code != ExitFailed {
		t.Fatalf("exit %d, want 1\n%s%s", res.Code, res.Out, res.Err)
	}
	for _, want := range []string{
		"! config file", "chmod 600",
		"! public url", "10.0.0.5 is a private address", "SAFE_FETCH_ALLOW_PRIVATE_NETWORK=true",
		"! webhook auth",
		"✗ inbox 2", "old-bridge.example.com", "✗ inbox 7", "does not exist", "✗ inbox 8", "no agent bot",
		"✗ dify route 2", "rejected the key app-…0003", "✗ dify route 3", "no chat endpoint",
		"✗ dify route 4", "lang", "✗ dify route 5", "DOCTOR_UNSET_KEY is empty",
		"! unrouted inboxes", "inbox 12 (2 webhooks)", "bridge routes add --inbox 12",
		"✗ failed events", "3 in the last 24h", "bridge replay 5",
		"! stuck events", "! rejected webhooks",
	} {
		if !strings.Contains(res.Out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if res.Err != "" {
		t.Errorf("stderr: %q", res.Err)
	}
	w.golden("doctor_broken", args, res)
}

func TestDoctorJSON(t *testing.T) {
	decode := func(t *testing.T, out string) doctor.Report {
		t.Helper()
		var rep doctor.Report
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rep); err != nil {
			t.Fatalf("--json output does not parse: %v\n%s", err, out)
		}
		var raw struct {
			Checks []map[string]any `json:"checks"`
		}
		if err := json.Unmarshal([]byte(out), &raw); err != nil || len(raw.Checks) == 0 {
			t.Fatalf("checks: %v", err)
		}
		for _, k := range []string{"name", "status", "detail", "fix"} {
			if _, found := raw.Checks[0][k]; !found {
				t.Errorf("a check has no %q key: %v", k, raw.Checks[0])
			}
		}
		return rep
	}
	find := func(rep doctor.Report, name string) doctor.Result {
		for _, c := range rep.Checks {
			if c.Name == name {
				return c
			}
		}
		t.Fatalf("no check %q", name)
		return doctor.Result{}
	}

	t.Run("Healthy", func(t *testing.T) {
		w := newDoctorWorld(t)
		res := w.doctor("--config", w.healthy(), "--json")
		if res.Code != ExitOK {
			t.Fatalf("exit %d\n%s", res.Code, res.Out)
		}
		rep := decode(t, res.Out)
		if !rep.OK {
			t.Error(`"ok" is false`)
		}
		for _, c := range rep.Checks {
			if c.Status != doctor.OK {
				t.Errorf("check %q is %s", c.Name, c.Status)
			}
		}
		if c := find(rep, "dify route 2"); !strings.Contains(c.Detail, "$DOCTOR_EMAIL_KEY") {
			t.Errorf("dify route 2: %+v", c)
		}
	})
	t.Run("Broken", func(t *testing.T) {
		w := newDoctorWorld(t)
		res := w.doctor("--config", w.broken(), "--json")
		if res.Code != ExitFailed {
			t.Fatalf("exit %d\n%s", res.Code, res.Out)
		}
		rep := decode(t, res.Out)
		if rep.OK {
			t.Error(`"ok" is true`)
		}
		if c := find(rep, "public url"); c.Status != doctor.Warn || !strings.Contains(c.Fix, "SAFE_FETCH_ALLOW_PRIVATE_NETWORK") {
			t.Errorf("public url: %+v", c)
		}
		if c := find(rep, "inbox 7"); c.Status != doctor.Fail {
			t.Errorf("inbox 7: %+v", c)
		}
	})
}

// TestDoctorWarningsExitZero: warnings alone do not fail doctor.
func TestDoctorWarningsExitZero(t *testing.T) {
	w := newDoctorWorld(t)
	path := w.healthy()
	// No public_url and no webhook secret: two warnings.
	if err := os.WriteFile(path, []byte(fmt.Sprintf("database = %q\n[chatwoot]\nbase_url = %q\napi_token = %q\nuser_token = %q\n[dify]\nbase_url = %q\n",
		w.db, w.cwURL, testBotToken, doctorUserToken, w.difyURL)), 0o600); err != nil {
		t.Fatal(err)
	}
	res := w.doctor("--config", path)
	if res.Code != ExitOK {
		t.Fatalf("exit %d, want 0\n%s", res.Code, res.Out)
	}
	for _, want := range []string{"! public url", "! webhook auth", "2 warnings, 0 failed"} {
		if !strings.Contains(res.Out, want) {
			t.Errorf("output lacks %q:\n%s", want, res.Out)
		}
	}
}

func TestDoctorConfigErrors(t *testing.T) {
	w := newDoctorWorld(t)
	unknownKey := filepath.Join(w.dir, "unknown-key.toml")
	if err := os.WriteFile(unknownKey, []byte("[dify]\ntimout = \"30s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"missing file", []string{"--config", filepath.Join(w.dir, "nope.toml")}, []string{"✗ config", "nope.toml", "not found", "0 ok, 0 warnings, 1 failed"}},
		{"unknown key", []string{"--config", unknownKey}, []string{"✗ config", "dify.timout", "unknown key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := w.doctor(tc.args...)
			// The checklist shows a configuration that does not load, and the
			// exit status is that of a configuration error (2), as the README says.
			if res.Code != ExitUsage {
				t.Errorf("exit %d, want 2\n%s%s", res.Code, res.Out, res.Err)
			}
			for _, s := range tc.want {
				if !strings.Contains(res.Out, s) {
					t.Errorf("output lacks %q:\n%s", s, res.Out)
				}
			}
		})
	}
}

func TestDoctorDatabaseMissing(t *testing.T) {
	w := newDoctorWorld(t)
	path := w.healthy()
	missing := filepath.Join(w.dir, "elsewhere", "bridge.db")
	res := w.doctor("--config", path, "--db", missing)
	if res.Code != ExitFailed {
		t.Fatalf("exit %d, want 1\n%s", res.Code, res.Out)
	}
	if !strings.Contains(res.Out, "✗ database") || !strings.Contains(res.Out, "does not exist") {
		t.Errorf("output:\n%s", res.Out)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("doctor created the database")
	}
}

func TestDoctorUsage(t *testing.T) {
	w := newDoctorWorld(t)
	path := w.healthy()
	for _, args := range [][]string{{"--timeotu", "1s"}, {"--timeout", "0s"}, {"--timeout", "soon"}, {"extra"}} {
		res := w.doctor(append(args, "--config", path)...)
		if res.Code != ExitUsage {
			t.Errorf("doctor %s: exit %d, want 2\n%s", strings.Join(args, " "), res.Code, res.Err)
		}
	}
	res := w.doctor("--help")
	if res.Code != ExitOK || !strings.Contains(res.Out, "bridge doctor --timeout") || !strings.Contains(res.Out, "4.14") {
		t.Errorf("--help: exit %d\n%s", res.Code, res.Out)
	}
}
