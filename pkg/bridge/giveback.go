package bridge

import (
	"context"
	"fmt"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/store"
)

// GiveBack returns a conversation a human holds to the bot: Chatwoot's
// status goes to the first bot status (so Chatwoot agrees the bot owns it),
// then bridge answers it again. It is the operator's explicit give-back, the
// one way back besides Chatwoot reporting a status change into a bot
// status (which Chatwoot before 4.13 never sends to agent bots).
func GiveBack(ctx context.Context, db *store.DB, cw *chatwoot.Client, botStatuses []string, account, conv int64) error {
	return giveBack(ctx, db, cw, botStatuses, account, conv, "given back by "+Operator)
}

func giveBack(ctx context.Context, db *store.DB, cw *chatwoot.Client, botStatuses []string, account, conv int64, reason string) error {
	status := "pending"
	if len(botStatuses) > 0 {
		status = botStatuses[0]
	}
	if err := cw.ToggleStatus(ctx, account, conv, status); err != nil {
		return fmt.Errorf("set conversation %d %s in chatwoot: %w", conv, status, err)
	}
	return db.Write(ctx, func(tx *store.Tx) error {
		if err := tx.SetConversationState(account, conv, store.StateBot, reason); err != nil {
			return err
		}
		return tx.SetStatus(account, conv, status, tx.Now())
	})
}
