package bridge

import (
	"context"
	"errors"
	"fmt"

	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/lifecycle"
	"github.com/bridge-dev/bridge/pkg/store"
)

// GiveBack returns a conversation a human holds to the bot: Chatwoot's
// status goes to the first bot status (so Chatwoot agrees the bot owns it),
// then bridge answers it again. It is the operator's explicit give-back, the
// one way back besides Chatwoot reporting a status change into a bot
// status (which Chatwoot before 4.13 never sends to agent bots).
func GiveBack(ctx context.Context, db *store.DB, cw *chatwoot.Client, botStatuses []string, account, conv int64) error {
	return giveBack(ctx, db, cw, botStatuses, account, conv, ReturnByGiveBack, "given back by "+Operator)
}

func giveBack(ctx context.Context, db *store.DB, cw *chatwoot.Client, botStatuses []string, account, conv int64, cause, reason string) error {
	route, s, err := routeOfConversation(ctx, db, account, conv)
	if err != nil {
		return err
	}
	if s.ReturnRule() == lifecycle.ReturnNever {
		return fmt.Errorf("conversation %d: %w (route %d; bridge routes update %d --return giveback allows it)", conv, ErrNeverReturns, route, route)
	}
	status := "pending"
	if len(botStatuses) > 0 {
		status = botStatuses[0]
	}
	// The bot holds it before Chatwoot says so: the webhook of the status
	// change then finds it the bot's, not a human-held conversation
	// reopened behind the humans' backs.
	err = db.Write(ctx, func(tx *store.Tx) error {
		c, known, err := tx.Conversation(account, conv)
		if err != nil {
			return err
		}
		if !known || c.State != store.StateHuman {
			// Nothing changes hands: the bot already holds it.
			if err := tx.SetConversationState(account, conv, store.StateBot, reason); err != nil {
				return err
			}
		} else if _, err := returnToBot(tx, c, route, &s, cause, reason, 0); err != nil {
			return err
		}
		return tx.SetStatus(account, conv, status, tx.Now())
	})
	if err != nil {
		return err
	}
	if err := cw.ToggleStatus(ctx, account, conv, status); err != nil {
		return fmt.Errorf("set conversation %d %s in chatwoot (bridge holds it for the bot; it answers once Chatwoot shows %s): %w", conv, status, status, err)
	}
	return nil
}

// ErrNeverReturns: the conversation's route never gives conversations back
// to the bot (return = never), not even on request.
var ErrNeverReturns = errors.New("its route never returns conversations to the bot")

// routeOfConversation finds the route of a conversation's inbox and its
// lifecycle settings (route 0 and the defaults when it has none).
func routeOfConversation(ctx context.Context, db *store.DB, account, conv int64) (int64, lifecycle.Settings, error) {
	c, err := db.Conversation(ctx, account, conv)
	if errors.Is(err, store.ErrNotFound) {
		return 0, lifecycle.Settings{}, nil
	}
	if err != nil {
		return 0, lifecycle.Settings{}, err
	}
	routes, err := db.Routes(ctx)
	if err != nil {
		return 0, lifecycle.Settings{}, err
	}
	for _, r := range routes {
		if r.InboxID == c.InboxID {
			s, err := SettingsOf(ctx, db, r.ID)
			return r.ID, s, err
		}
	}
	return 0, lifecycle.Settings{}, nil
}
