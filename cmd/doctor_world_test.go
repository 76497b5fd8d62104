package cmd

import (
	"context"
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
	"github.com/bridge-dev/bridge/pkg/simulate"
	"github.com/bridge-dev/bridge/pkg/store"
)

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
