package cmd

import (
	"log/slog"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/config"
	"github.com/bridge-dev/bridge/pkg/redact"
	"github.com/bridge-dev/bridge/pkg/store"
)

// bridgeOptions turns the configuration into the core's options.
func bridgeOptions(cfg *config.Config, db *store.DB, log *slog.Logger) bridge.Options {
	o := bridge.Options{
		Store:            db,
		Logger:           log,
		Chatwoot:         chatwoot.NewClient(chatwoot.Options{BaseURL: cfg.Chatwoot.BaseURL, Token: cfg.Chatwoot.APIToken.Reveal()}),
		WebhookToken:     cfg.Chatwoot.WebhookToken.Reveal(),
		WebhookSecret:    cfg.Chatwoot.WebhookSecret.Reveal(),
		BotStatuses:      cfg.Chatwoot.BotStatuses,
		DashboardKey:     cfg.Dashboard.Key.Reveal(),
		PublicURL:        cfg.PublicURL,
		EchoWait:         cfg.Chatwoot.EchoWait,
		DifyBaseURL:      cfg.Dify.BaseURL,
		DifyTimeout:      cfg.Dify.Timeout,
		DifyIdleTimeout:  cfg.Dify.IdleTimeout,
		DifyMaxRetries:   cfg.Dify.MaxRetries,
		Concurrency:      cfg.Worker.Concurrency,
		Debounce:         cfg.Worker.Debounce,
		RetentionIgnored: cfg.Retention.Ignored,
		Redactor:         redact.New(cfg.Secrets()...),
		Transfer:         cfg.Attachments.Transfer,
		MaxFileBytes:     int64(cfg.Attachments.MaxMB) << 20,
		DownloadTimeout:  cfg.Attachments.DownloadTimeout,
		VoiceWait:        cfg.Voice.TranscriptionWait,
		VoiceFallback:    cfg.Voice.Fallback,
		VoiceAskMessage:  cfg.Voice.AskMessage,
		Citations:        cfg.Answer.Citations,
		CSATFeedback:     cfg.Feedback.CSAT,
		Handoff: bridge.HandoffOptions{
			Keywords:         cfg.Handoff.Keywords,
			AIMarker:         cfg.Handoff.AIMarker,
			Message:          cfg.Handoff.Message,
			Labels:           cfg.Handoff.Labels,
			TeamID:           cfg.Handoff.TeamID,
			OpenOnAgentReply: cfg.Handoff.OpenOnAgentReply,
		},
	}
	if cfg.Chatwoot.UserToken != "" {
		o.ChatwootUser = chatwoot.NewClient(chatwoot.Options{BaseURL: cfg.Chatwoot.BaseURL, Token: cfg.Chatwoot.UserToken.Reveal()})
	}
	return o
}
