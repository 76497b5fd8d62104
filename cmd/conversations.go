package cmd

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/store"
)

func newConversationsCmd(a *app) *cobra.Command {
	c := &cobra.Command{
		Use:     "conversations",
		Aliases: []string{"conv"},
		Short:   "Chatwoot to Dify conversation mappings",
		Long: `Each Chatwoot conversation bridge works on maps to one Dify conversation, so
the app keeps the context. State "bot" means bridge answers; "human" means a
person took over (or bridge handed off) and bridge stays quiet until Chatwoot
puts the conversation back in a bot status (a conversation_status_changed,
Chatwoot 4.13+) or an operator gives it back (give-back). The same actions
are buttons of the Dashboard App (/app/, with dashboard.key).`,
		Example: `  bridge conversations list --state human
  bridge conversations reset 42
  bridge conversations give-back 42
  bridge conversations keep 42
  bridge conversations ask-again 42`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	c.AddCommand(newConversationsListCmd(a), newConversationsShowCmd(a), newConversationsResetCmd(a), newConversationsGiveBackCmd(a),
		newConversationsKeepCmd(a), newConversationsAskAgainCmd(a))
	return c
}

type conversationView struct {
	AccountID          int64     `json:"account_id"`
	ConversationID     int64     `json:"conversation_id"`
	InboxID            int64     `json:"inbox_id"`
	RouteID            int64     `json:"route_id,omitempty"`
	DifyConversationID string    `json:"dify_conversation_id"`
	State              string    `json:"state"`
	StateReason        string    `json:"state_reason,omitempty"`
	Status             string    `json:"chatwoot_status,omitempty"`
	MessagesIn         int       `json:"messages"`
	Answers            int       `json:"answers"`
	Handoffs           int       `json:"handoffs"`
	LastActivityAt     time.Time `json:"last_activity_at"`
}

func newConversationsListCmd(a *app) *cobra.Command {
	var inbox int64
	var state string
	var limit int
	c := &cobra.Command{
		Use:     "list",
		Short:   "List conversations, most recently active first",
		Example: "  bridge conversations list\n  bridge conversations list --inbox 3 --state bot --json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if state != "" && state != store.StateBot && state != store.StateHuman {
				return usagef("--state bot or --state human", "bad --state %q", state)
			}
			db, err := a.openStore(c.Context(), readStore)
			if err != nil {
				return err
			}
			defer db.Close()
			cs, err := db.ListConversations(c.Context(), store.ConversationFilter{InboxID: inbox, State: state, Limit: limit})
			if err != nil {
				return err
			}
			if a.json {
				out := make([]conversationView, 0, len(cs))
				for _, cv := range cs {
					out = append(out, conversationView{AccountID: cv.AccountID, ConversationID: cv.ConversationID,
						InboxID: cv.InboxID, RouteID: cv.RouteID, DifyConversationID: cv.DifyConversationID, State: cv.State,
						StateReason: cv.StateReason, Status: cv.Status, MessagesIn: cv.MessagesIn, Answers: cv.Answers,
						Handoffs: cv.Handoffs, LastActivityAt: cv.LastActivityAt})
				}
				return a.printJSON(out)
			}
			if len(cs) == 0 {
				fmt.Fprintln(a.io.Out, "No conversations yet.")
				return nil
			}
			rows := make([][]string, 0, len(cs))
			for _, cv := range cs {
				rows = append(rows, []string{strconv.FormatInt(cv.ConversationID, 10), strconv.FormatInt(cv.InboxID, 10),
					cv.State, orDash(cv.Status), orDash(cv.DifyConversationID), strconv.Itoa(cv.MessagesIn),
					strconv.Itoa(cv.Answers), strconv.Itoa(cv.Handoffs), a.localTime(cv.LastActivityAt).Format("2006-01-02 15:04:05")})
			}
			a.table([]string{"conv", "inbox", "state", "status", "dify conversation", "msgs", "answers", "handoffs", "last activity"}, rows, 4)
			return nil
		},
	}
	c.Flags().Int64Var(&inbox, "inbox", 0, "only this inbox")
	c.Flags().StringVar(&state, "state", "", "only bot or human")
	c.Flags().IntVar(&limit, "limit", 100, "at most this many")
	return c
}

func newConversationsResetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "reset ID",
		Short: "Forget the Dify conversation so the next message starts fresh",
		Long: `Forget the Dify conversation mapped to Chatwoot conversation ID; the next
customer message starts a new Dify conversation (without the earlier context).`,
		Example: "  bridge conversations reset 42",
		Args:    exactArgs(1, "bridge conversations reset 42"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := a.byID(c.Context(), writeStore, args[0], "conversation", "bridge conversations list", (*store.DB).ResetConversation)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"conversation_id": id, "reset": true})
			}
			fmt.Fprintf(a.io.Out, "Conversation %d will start a new Dify conversation with its next message.\n", id)
			return nil
		},
	}
}

func newConversationsGiveBackCmd(a *app) *cobra.Command {
	var account int64
	c := &cobra.Command{
		Use:   "give-back ID",
		Short: "Return a conversation a human holds to the bot",
		Long: `Return Chatwoot conversation ID to the bot: bridge sets its Chatwoot status
to the first of chatwoot.bot_statuses (pending) with chatwoot.api_token and
answers the customer's next message again.

Chatwoot 4.13 and later tell the bot when an agent puts a conversation back
to pending, and bridge takes it back by itself; on older Chatwoot this
command (or an account webhook pointing at bridge, which receives
conversation_status_changed on every version) is the way back.`,
		Example: "  bridge conversations give-back 42\n  bridge conversations give-back 42 --account 2",
		Args:    exactArgs(1, "bridge conversations give-back 42"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := parseID(args[0], "conversation")
			if err != nil {
				return err
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			db, err := a.openStore(c.Context(), writeStore)
			if err != nil {
				return err
			}
			defer db.Close()
			cv, err := findConversation(c.Context(), db, id, account)
			if err != nil {
				return err
			}
			cw := chatwoot.NewClient(chatwoot.Options{BaseURL: cfg.Chatwoot.BaseURL, Token: cfg.Chatwoot.APIToken.Reveal()})
			if err := bridge.GiveBack(c.Context(), db, cw, cfg.Chatwoot.BotStatuses, cv.AccountID, id); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"account_id": cv.AccountID, "conversation_id": id, "state": store.StateBot})
			}
			fmt.Fprintf(a.io.Out, "Conversation %d is the bot's again; its next customer message is answered.\n", id)
			return nil
		},
	}
	c.Flags().Int64Var(&account, "account", 0, "the Chatwoot account, when the id exists in several")
	return c
}

// findConversation resolves a display id to the one conversation bridge
// knows by it, in account when given.
func findConversation(ctx context.Context, db *store.DB, id, account int64) (store.Conversation, error) {
	cs, err := db.ConversationsByID(ctx, id)
	if err != nil {
		return store.Conversation{}, err
	}
	var matches []store.Conversation
	for _, cv := range cs {
		if account == 0 || cv.AccountID == account {
			matches = append(matches, cv)
		}
	}
	switch {
	case len(matches) == 0:
		return store.Conversation{}, &failedError{msg: fmt.Sprintf("no conversation %d (bridge conversations list)", id)}
	case len(matches) > 1:
		return store.Conversation{}, usagef("add --account N", "conversation %d exists in %d accounts", id, len(matches))
	}
	return matches[0], nil
}

func newConversationsKeepCmd(a *app) *cobra.Command {
	var account int64
	c := &cobra.Command{
		Use:   "keep ID",
		Short: "Keep a conversation for humans: the bot stays silent in it",
		Long: `Keep Chatwoot conversation ID for humans: bridge stops answering it (state
"human", reason "kept for humans by an operator") until it is given back,
whatever its Chatwoot status. Chatwoot is not called.`,
		Example: "  bridge conversations keep 42\n  bridge conversations keep 42 --account 2",
		Args:    exactArgs(1, "bridge conversations keep 42"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := parseID(args[0], "conversation")
			if err != nil {
				return err
			}
			db, err := a.openStore(c.Context(), writeStore)
			if err != nil {
				return err
			}
			defer db.Close()
			cv, err := findConversation(c.Context(), db, id, account)
			if err != nil {
				return err
			}
			if err := bridge.Keep(c.Context(), db, cv.AccountID, id, bridge.Operator); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"account_id": cv.AccountID, "conversation_id": id, "state": store.StateHuman})
			}
			fmt.Fprintf(a.io.Out, "Conversation %d is kept for humans; the bot stays silent until it is given back.\n", id)
			return nil
		},
	}
	c.Flags().Int64Var(&account, "account", 0, "the Chatwoot account, when the id exists in several")
	return c
}

func newConversationsAskAgainCmd(a *app) *cobra.Command {
	var account int64
	c := &cobra.Command{
		Use:   "ask-again ID",
		Short: "Ask the AI again about the customer's last message; the answer is a private note",
		Long: `Ask the route's Dify app again about the last customer message of Chatwoot
conversation ID, and post the answer as a private note "AI draft: ..." for an
agent to copy. Nothing reaches the customer and the holder of the
conversation does not change. The question is journaled as an ask_again event
and answered here; a running bridge serve may answer it first.`,
		Example: "  bridge conversations ask-again 42",
		Args:    exactArgs(1, "bridge conversations ask-again 42"),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := parseID(args[0], "conversation")
			if err != nil {
				return err
			}
			cfg, err := a.config()
			if err != nil {
				return err
			}
			db, err := a.openStore(c.Context(), writeStore)
			if err != nil {
				return err
			}
			defer db.Close()
			cv, err := findConversation(c.Context(), db, id, account)
			if err != nil {
				return err
			}
			eventID, err := bridge.AskAgain(c.Context(), db, cv.AccountID, id, bridge.Operator)
			if err != nil {
				if errors.Is(err, bridge.ErrNoCustomerMessage) {
					return &failedError{msg: err.Error()}
				}
				return err
			}
			core := bridge.New(bridgeOptions(cfg, db, replayLogger(a, cfg)))
			e, err := core.ProcessNow(c.Context(), eventID)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"account_id": cv.AccountID, "conversation_id": id, "event_id": eventID,
					"status": e.Status, "posted_message_id": e.PostedMessageID, "error": e.LastError})
			}
			switch e.Status {
			case store.StatusAnswered:
				fmt.Fprintf(a.io.Out, "Draft posted to conversation %d as private note %d (event %d).\n", id, e.PostedMessageID, eventID)
			case store.StatusFailed:
				return &failedError{msg: fmt.Sprintf("event %d failed: %s (bridge events show %d)", eventID, e.LastError, eventID)}
			default:
				fmt.Fprintf(a.io.Out, "Event %d is %s: a running bridge serve answers it (bridge events show %d).\n", eventID, e.Status, eventID)
			}
			return nil
		},
	}
	c.Flags().Int64Var(&account, "account", 0, "the Chatwoot account, when the id exists in several")
	return c
}
