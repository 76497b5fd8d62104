package cmd

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/bridge-dev/bridge/internal/buildinfo"
)

// manSection is where bridge's pages go: section 1, user commands, so that
// they stand beside iproute2's bridge(8) instead of replacing it.
const manSection = "1"

// newManCmd writes the man pages; the release build runs it (see
// .goreleaser.yaml). Hidden: operators read the pages, they do not make them.
func newManCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "man DIR",
		Short:   "Write the man pages (section 1) into DIR",
		Example: "  bridge man ./manpages && man ./manpages/bridge.1",
		Hidden:  true,
		Args:    exactArgs(1, "bridge man ./manpages"),
		RunE: func(c *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			root := c.Root()
			root.DisableAutoGenTag = true // the same sources give the same pages
			hdr := &doc.GenManHeader{Title: "BRIDGE", Section: manSection, Source: "bridge " + buildinfo.Get().Version,
				Manual: tagline}
			// Reproducible builds date the pages by the commit, not the clock.
			if sec, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
				d := time.Unix(sec, 0).UTC()
				hdr.Date = &d
			}
			if err := doc.GenManTree(root, hdr, dir); err != nil {
				return fmt.Errorf("write man pages to %s: %w", dir, err)
			}
			if !a.json {
				fmt.Fprintf(a.io.Out, "Wrote the man pages (section %s) to %s\n", manSection, dir)
			}
			return nil
		},
	}
}
