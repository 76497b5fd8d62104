package cmd

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/doctor"
)

// doctorUserToken is chatwoot.user_token in these tests; like testSecrets it
// must never be printed.
const doctorUserToken = "user-token-never-printed-6120"

// publicIP is a public address literal, so no test resolves a name.
const publicIP = "https://93.184.215.14"

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
