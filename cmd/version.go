package cmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/internal/buildinfo"
)

// tagline names what this bridge is, so it is never taken for iproute2's
// bridge(8), which Debian and Ubuntu install as /usr/sbin/bridge.
const tagline = "Chatwoot ↔ Dify bridge"

// versionLine is what `bridge version` and `bridge --version` print.
func versionLine() string {
	v := buildinfo.Get()
	return fmt.Sprintf("bridge %s, %s (commit %s, built %s, %s)", v.Version, tagline, v.Commit, v.Date, v.Go)
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print version, commit and build date",
		Example: "  bridge version\n  bridge --version\n  bridge version --json",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if a.json {
				return a.printJSON(buildinfo.Get())
			}
			fmt.Fprintln(a.io.Out, versionLine())
			return nil
		},
	}
}
