package cmd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bridge-dev/bridge/pkg/config"
)

// TestPackagedConfig: the config the packages install loads without an
// error (no unknown key), puts the database in the unit's state directory,
// and logs JSON for journald.
func TestPackagedConfig(t *testing.T) {
	isolate(t)
	path := filepath.Join("..", "contrib", "packaging", "bridge.toml")
	res := runCLI(t, "config", "--config", path, "--json")
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Err)
	}
	var v configView
	if err := json.Unmarshal([]byte(res.Out), &v); err != nil {
		t.Fatal(err)
	}
	got := map[string]config.Setting{}
	for _, s := range v.Settings {
		got[s.Key] = s
	}
	if s := got["database"]; s.Value != "/var/lib/bridge/bridge.db" || s.Source.Kind != config.FromFile {
		t.Errorf("database = %+v", s)
	}
	if s := got["log_format"]; s.Value != "json" {
		t.Errorf("log_format = %+v", s)
	}
}

// TestSystemdUnit: the unit runs this bridge by its full path (on Debian
// /usr/sbin/bridge is iproute2's), as a non-root user with its state
// directory, hardened; the database path agrees with the packaged config.
func TestSystemdUnit(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "contrib", "systemd", "bridge.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	for _, want := range []string{
		"ExecStart=/usr/bin/bridge serve --config /etc/bridge/bridge.toml",
		"User=bridge", "StateDirectory=bridge", "WorkingDirectory=/var/lib/bridge",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		"CapabilityBoundingSet=\n", "SystemCallFilter=@system-service", "KillSignal=SIGTERM",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("bridge.service lacks %q", strings.TrimSpace(want))
		}
	}
	if strings.Contains(unit, "ListenStream") {
		t.Error("the service binds no socket of its own: bridge.socket does")
	}
	if !strings.Contains(unit, "After=network-online.target bridge.socket") {
		t.Error("bridge.service does not start after bridge.socket")
	}
}

// TestSystemdSocketUnit: bridge.socket hands serve one listening socket
// (Accept=no, one ListenStream=, as inheritedListener requires), on the
// address the packaged config listens on, and the packages install it.
func TestSystemdSocketUnit(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "contrib", "systemd", "bridge.socket"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	if n := strings.Count(unit, "\nListenStream="); n != 1 {
		t.Errorf("%d ListenStream= lines, want 1: serve takes exactly one socket", n)
	}
	for _, want := range []string{"ListenStream=127.0.0.1:8080\n", "Accept=no\n", "WantedBy=sockets.target"} {
		if !strings.Contains(unit, want) {
			t.Errorf("bridge.socket lacks %q", strings.TrimSpace(want))
		}
	}
	release, err := os.ReadFile(filepath.Join("..", ".goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(release), "dst: /usr/lib/systemd/system/bridge.socket") {
		t.Error("the packages do not install bridge.socket")
	}
}

// TestKubernetesManifests: contrib/kubernetes runs two replicas on
// PostgreSQL that a rolling upgrade never leaves without a ready pod (one
// more first, none less), ready only on /readyz, alive on /healthz, with a
// preStop pause and a grace period longer than it plus serve's drain; the
// database URL comes from the Secret, and a drain takes one pod at a time.
func TestKubernetesManifests(t *testing.T) {
	read := func(name string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join("..", "contrib", "kubernetes", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	dep := read("deployment.yaml")
	for _, want := range []string{"replicas: 2\n", "maxUnavailable: 0\n", "maxSurge: 1\n", "path: /readyz\n", "path: /healthz\n",
		"preStop:", "seconds: 10\n", "terminationGracePeriodSeconds: 35\n", "name: bridge\n", "secretRef:", "configMapRef:",
		"runAsNonRoot: true", "readOnlyRootFilesystem: true", "image: ghcr.io/bridge-dev/bridge:"} {
		if !strings.Contains(dep, want) {
			t.Errorf("deployment.yaml lacks %q", strings.TrimSpace(want))
		}
	}
	if !strings.Contains(read("secret.example.yaml"), `BRIDGE_DATABASE: "postgres://`) {
		t.Error("secret.example.yaml gives no PostgreSQL database")
	}
	if !strings.Contains(read("pdb.yaml"), "minAvailable: 1\n") {
		t.Error("pdb.yaml lets a drain take both replicas")
	}
	kust := read("kustomization.yaml")
	for _, f := range []string{"configmap.yaml", "secret.yaml", "deployment.yaml", "service.yaml", "pdb.yaml"} {
		if !strings.Contains(kust, "- "+f+"\n") {
			t.Errorf("kustomization.yaml does not list %s", f)
		}
	}
	ignore, err := os.ReadFile(filepath.Join("..", ".gitignore"))
	if err != nil || !strings.Contains(string(ignore), "/contrib/kubernetes/secret.yaml") {
		t.Error("the filled-in secret.yaml is not ignored by git")
	}
}

// TestReadmeMapsEveryPackage: the map at the top of the README's
// development section names every package folder, so it stays true as
// packages come and go.
func TestReadmeMapsEveryPackage(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, dev, ok := strings.Cut(string(data), "\n## Development\n")
	if !ok {
		t.Fatal("README has no Development section")
	}
	dirs, err := filepath.Glob(filepath.Join("..", "pkg", "*"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cmd/", "internal/"}
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			want = append(want, "pkg/"+filepath.Base(d)+"/")
		}
	}
	for _, w := range want {
		if !strings.Contains(dev, "\n"+w+" ") {
			t.Errorf("the development map does not name %s", w)
		}
	}
}

// TestCmdOnlyWires: cmd/ wires flags to packages and prints; a command file
// that grows past 300 lines has logic that belongs in a package.
func TestCmdOnlyWires(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), "\n"); n > 300 {
			t.Errorf("cmd/%s has %d lines: move its logic into a package", f, n)
		}
	}
}
