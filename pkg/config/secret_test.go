package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/viper"
)

func TestSecretMask(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"short", "****"},
		{"elevenchars", "****"},
		{"twelve-chars", "****hars"},
		{"cw-token-abcdefgh1234", "****1234"},
		{"ünïcödé-tökén-€€€€", "****€€€€"},
	}
	for _, tc := range tests {
		s := Secret(tc.in)
		j, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		txt, err := s.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		wantJSON, _ := json.Marshal(tc.want)
		for name, got := range map[string]string{
			"String":      s.String(),
			"GoString":    s.GoString(),
			"LogValue":    s.LogValue().String(),
			"MarshalText": string(txt),
			"%v":          fmt.Sprintf("%v", s),
			"%#v":         fmt.Sprintf("%#v", s),
		} {
			if got != tc.want {
				t.Errorf("%s of %q = %q, want %q", name, tc.in, got, tc.want)
			}
		}
		if string(j) != string(wantJSON) {
			t.Errorf("MarshalJSON of %q = %s, want %s", tc.in, j, wantJSON)
		}
		if s.Reveal() != tc.in {
			t.Errorf("Reveal() = %q, want %q", s.Reveal(), tc.in)
		}
	}
}

func TestMask(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"app-", "****"},
		{"app-short", "app-…"},
		{"app-Xk29dLq8Vn3TbR7wYp1Hx7Qz", "app-…x7Qz"},
		{"sk-1234567890abcdef", "****cdef"},
		{"tiny", "****"},
	}
	for _, tc := range tests {
		if got := Mask(tc.in); got != tc.want {
			t.Errorf("Mask(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Known secret values; each must never appear in any rendering of a config.
var knownSecrets = map[string]string{
	"chatwoot.api_token":      "cw-api-token-SECRET-1111",
	"chatwoot.user_token":     "cw-user-token-SECRET-2222",
	"chatwoot.webhook_token":  "cw-hook-token-SECRET-3333",
	"chatwoot.webhook_secret": "cw-hook-secret-SECRET-4444",
}

func TestSecretsNeverPrinted(t *testing.T) {
	isolate(t)
	// Two from the file, two from the environment.
	path := writeFile(t, t.TempDir(), "bridge.toml", fmt.Sprintf(
		"[chatwoot]\napi_token = %q\nuser_token = %q\n",
		knownSecrets["chatwoot.api_token"], knownSecrets["chatwoot.user_token"]))
	t.Setenv("BRIDGE_CHATWOOT_WEBHOOK_TOKEN", knownSecrets["chatwoot.webhook_token"])
	t.Setenv("BRIDGE_CHATWOOT_WEBHOOK_SECRET", knownSecrets["chatwoot.webhook_secret"])
	cfg := mustLoad(t, viper.New(), path, true)

	// The secrets were loaded, so a clean output means masking worked.
	for key, want := range knownSecrets {
		f, _ := lookupField(key)
		if got := cfg.value(f).Interface().(Secret).Reveal(); got != want {
			t.Fatalf("%s = %q, want %q", key, got, want)
		}
	}

	var out bytes.Buffer
	// The arguments go through a slice so that vet accepts %s and %q on
	// structs, which fmt applies to each field.
	for _, arg := range []any{*cfg, cfg, cfg.Chatwoot, &cfg.Chatwoot} {
		args := []any{arg, arg, arg, arg, arg}
		fmt.Fprintf(&out, "%v %+v %#v %s %q\n", args...)
	}
	fmt.Fprintln(&out, cfg.Chatwoot.APIToken, cfg.Chatwoot)
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	ji, err := json.MarshalIndent(cfg.Chatwoot, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	out.Write(ji)
	for _, h := range []slog.Handler{slog.NewTextHandler(&out, nil), slog.NewJSONHandler(&out, nil)} {
		log := slog.New(h)
		log.Info("config", "cfg", cfg, "value", *cfg, "chatwoot", cfg.Chatwoot,
			"token", cfg.Chatwoot.APIToken, slog.Any("secret", cfg.Chatwoot.WebhookSecret),
			slog.Group("g", "user_token", cfg.Chatwoot.UserToken))
	}

	got := out.String()
	for key, secret := range knownSecrets {
		if strings.Contains(got, secret) {
			t.Errorf("%s leaked into output:\n%s", key, got)
		}
		if masked := "****" + secret[len(secret)-4:]; !strings.Contains(got, masked) {
			t.Errorf("output lacks the masked %s %q", key, masked)
		}
	}
}

func TestSecretNeverInError(t *testing.T) {
	const secret = "cw-secret-in-a-list-9Zq1"
	tests := []struct {
		name, toml string
		key        string
	}{
		{"wrong type", "", "chatwoot.api_token"}, // testdata file
		{"syntax error", "[chatwoot]\nwebhook_secret = \"" + secret + "\n", "chatwoot.webhook_secret"},
		{"wrong table", "[dify]\napi_token = \"" + secret + "\"\n", "dify.api_token"},
		{"inline table", "[chatwoot]\nuser_token = { value = \"" + secret + "\" }\n", "chatwoot.user_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			isolate(t)
			path := brokenFile("secret_wrong_type.toml")
			if tc.toml != "" {
				path = writeFile(t, t.TempDir(), "bridge.toml", tc.toml)
			}
			_, err := Load(viper.New(), path, true)
			e := asConfigError(t, err)
			if e.Key != tc.key {
				t.Errorf("Key = %q, want %q (%v)", e.Key, tc.key, err)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(e.Value, secret) || strings.Contains(fmt.Sprintf("%+v %#v", err, e), secret) {
				t.Errorf("secret in error: %v / %#v", err, e)
			}
		})
	}

	// A Value set by hand for a secret key is still not shown.
	e := &Error{File: "bridge.toml", Key: "chatwoot.api_token", Value: secret, Err: fmt.Errorf("bad")}
	if strings.Contains(e.Error(), secret) {
		t.Errorf("Error() shows the value of a secret key: %s", e)
	}
	e.Key = "listen"
	if !strings.Contains(e.Error(), secret) {
		t.Errorf("Error() hides the value of a plain key: %s", e)
	}
}

func TestFilePermissionsWarning(t *testing.T) {
	if os.PathSeparator != '/' {
		t.Skip("no Unix permission bits")
	}
	isolate(t)
	dir := t.TempDir()
	withSecret := writeFile(t, dir, "secret.toml", "[chatwoot]\napi_token = \"cw-token-in-file-5555\"\n")
	withoutSecret := writeFile(t, dir, "plain.toml", "[chatwoot]\napi_token = \"\"\n")

	tests := []struct {
		name string
		file string
		mode os.FileMode
		env  string // a token from the environment, not the file
		warn bool
	}{
		{"secret world-readable", withSecret, 0o604, "", true},
		{"secret group-readable", withSecret, 0o640, "", true},
		{"secret private", withSecret, 0o600, "", false},
		{"no secret world-readable", withoutSecret, 0o644, "", false},
		{"secret only in env", withoutSecret, 0o644, "cw-token-in-env-6666", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.Chmod(tc.file, tc.mode); err != nil {
				t.Fatal(err)
			}
			t.Setenv("BRIDGE_CHATWOOT_API_TOKEN", tc.env)
			cfg := mustLoad(t, viper.New(), tc.file, true)
			w := cfg.FilePermissionsWarning()
			if (w != "") != tc.warn {
				t.Fatalf("warning %q, want one: %v", w, tc.warn)
			}
			if tc.warn && (!strings.Contains(w, filepath.Base(tc.file)) || !strings.Contains(w, "chatwoot.api_token") ||
				!strings.Contains(w, "chmod 600") || strings.Contains(w, "cw-token-in-file-5555")) {
				t.Errorf("warning %q should name the file, the key and the fix, and not the token", w)
			}
		})
	}

	if w := (&Config{}).FilePermissionsWarning(); w != "" {
		t.Errorf("no file: warning %q", w)
	}
}

func TestSecrets(t *testing.T) {
	c := Defaults()
	c.Chatwoot.APIToken = "api-token-000000001"
	c.Chatwoot.WebhookSecret = "hook-secret-00000002"
	got := c.Secrets()
	if len(got) != 2 || !slices.Contains(got, "api-token-000000001") || !slices.Contains(got, "hook-secret-00000002") {
		t.Errorf("Secrets() = %d values, want the two that are set", len(got))
	}
}
