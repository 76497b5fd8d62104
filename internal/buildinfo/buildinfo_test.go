package buildinfo

import (
	"runtime"
	"testing"
)

// TestLinkerVariables: the variables .goreleaser.yaml sets with -X
// (internal/buildinfo.version, .commit, .date) are the ones Get reports.
func TestLinkerVariables(t *testing.T) {
	old := [3]string{version, commit, date}
	t.Cleanup(func() { version, commit, date = old[0], old[1], old[2] })
	version, commit, date = "1.2.3", "abc123", "2026-11-01T00:00:00Z"
	if got := Get(); got != (Info{Version: "1.2.3", Commit: "abc123", Date: "2026-11-01T00:00:00Z", Go: runtime.Version()}) {
		t.Errorf("Get() = %+v", got)
	}
	version, commit, date = "dev", "", ""
	if got := Get(); got.Version != "dev" || got.Commit == "" || got.Date == "" {
		t.Errorf("unset: Get() = %+v, want dev and no empty field", got)
	}
}
