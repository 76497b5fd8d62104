package bridge

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bridge-dev/bridge/internal/buildinfo"
)

// TestBuildInfoAndEverySeriesDocumented: /metrics has bridge_build_info
// with this build's labels, and every bridge_ series it serves is listed in
// the README's table (the journal's own series included).
func TestBuildInfoAndEverySeriesDocumented(t *testing.T) {
	e := newEnv(t, envOptions{})
	// The journal's series are registered when the workers start.
	for deadline := time.Now().Add(10 * time.Second); !e.core.workersUp(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("workers did not start")
		}
	}
	samples := scrape(t, e.srv.URL)
	bi := buildinfo.Get()
	want := `bridge_build_info{commit="` + bi.Commit + `",goversion="` + runtime.Version() + `",version="` + bi.Version + `"}`
	if v, ok := samples[want]; !ok || v != 1 {
		t.Errorf("no %s 1 in /metrics:%s", want, fmtSamples(family(samples, "bridge_build_info")))
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for k := range samples {
		name := k
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			name = strings.TrimSuffix(name, suffix)
		}
		if !strings.HasPrefix(name, "bridge_") || seen[name] {
			continue
		}
		seen[name] = true
		if !strings.Contains(string(readme), "`"+name) {
			t.Errorf("README does not list %s", name)
		}
	}
	for _, name := range []string{"bridge_journal_commits_total", "bridge_journal_writes_total", "bridge_journal_syncs_total"} {
		if !seen[name] {
			t.Errorf("/metrics has no %s", name)
		}
	}
}
