package cmd

import (
	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/pkg/config"
)

// configView is `bridge config --json`.
type configView struct {
	File     string           `json:"file"`
	Settings []config.Setting `json:"settings"`
	Warnings []string         `json:"warnings"`
}

func newConfigCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration, each value with its source",
		Long: `Print every setting as bridge sees it after flags, BRIDGE_* environment
variables, the config file and the defaults are combined, and where each value
came from: flag, env (with the variable), file (with the file) or default.
Secrets are masked.`,
		Example: `  bridge config
  bridge config --config /etc/bridge/bridge.toml
  bridge config --json | jq -r '.settings[] | select(.source.kind != "default") | .key'`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			settings := cfg.Settings()
			if a.json {
				w := cfg.Warnings
				if w == nil {
					w = []string{}
				}
				return a.printJSON(configView{File: cfg.File, Settings: settings, Warnings: w})
			}
			rows := make([][]string, 0, len(settings))
			for _, s := range settings {
				v := s.Value
				if v == "" {
					v = `""`
				}
				rows = append(rows, []string{s.Key, v, s.Source.String()})
			}
			a.table([]string{"key", "value", "source"}, rows, 1)
			return nil
		},
	}
}
