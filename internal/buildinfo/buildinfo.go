// Package buildinfo says which bridge this is: the version, commit and date
// the release build sets with -ldflags -X (see .goreleaser.yaml), else what
// the Go toolchain recorded.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set by the linker in release builds.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

// Info identifies a build.
type Info struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Date    string `json:"date"`
	Go      string `json:"go"`
}

// Get returns this build's Info; what is not known reads "unknown".
func Get() Info {
	v := Info{Version: version, Commit: commit, Date: date, Go: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && v.Commit == "":
				v.Commit = s.Value
			case s.Key == "vcs.time" && v.Date == "":
				v.Date = s.Value
			}
		}
	}
	if v.Commit == "" {
		v.Commit = "unknown"
	}
	if v.Date == "" {
		v.Date = "unknown"
	}
	return v
}
