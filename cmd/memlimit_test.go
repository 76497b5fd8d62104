package cmd

import (
	"bufio"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestServeMemoryLimit: memory_limit reaches the Go runtime of serve (as its
// own /metrics reports it) and the start-up log says so; without it, none.
func TestServeMemoryLimit(t *testing.T) {
	bin := buildBridge(t)
	for _, tc := range []struct {
		env       []string
		logged    string
		limitSeen float64 // go_gc_gomemlimit_bytes; 0: no limit (the runtime's maximum)
	}{
		{[]string{"BRIDGE_MEMORY_LIMIT=96MiB"}, "96MiB", 96 << 20},
		{nil, "none", 0},
	} {
		t.Run(tc.logged, func(t *testing.T) {
			dir := t.TempDir()
			env := append([]string{
				"BRIDGE_DATABASE=" + filepath.Join(dir, "bridge.db"),
				"BRIDGE_LOG_FORMAT=json",
				"XDG_CONFIG_HOME=" + dir,
				"GOMEMLIMIT=",
			}, tc.env...)
			p := startServe(t, bin, env)
			// The log reaches p.stderr just after the line that gave the
			// address was read.
			want := `"memory_limit":"` + tc.logged + `"`
			for deadline := time.Now().Add(5 * time.Second); !strings.Contains(p.stderr.String(), want) && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			if !strings.Contains(p.stderr.String(), want) {
				t.Errorf("start-up log does not say memory_limit %s:\n%s", tc.logged, p.stderr.String())
			}
			resp, err := http.Get("http://" + p.addr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got float64 = -1
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "go_gc_gomemlimit_bytes "); ok {
					got, _ = strconv.ParseFloat(v, 64) // a malformed value fails the comparison below
				}
			}
			if tc.limitSeen > 0 && got != tc.limitSeen || tc.limitSeen == 0 && got < 1<<60 {
				t.Errorf("go_gc_gomemlimit_bytes = %v, want %v", got, tc.limitSeen)
			}
		})
	}
}
