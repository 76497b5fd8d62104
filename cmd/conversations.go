package cmd

import (
	"fmt"
	"strconv"
	"time"

	"github.com/bridge-dev/bridge/pkg/store"
	"github.com/spf13/cobra"
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

func convView(cv store.Conversation) conversationView {
	return conversationView{AccountID: cv.AccountID, ConversationID: cv.ConversationID, InboxID: cv.InboxID, RouteID: cv.RouteID,
		DifyConversationID: cv.DifyConversationID, State: cv.State, StateReason: cv.StateReason, Status: cv.Status,
		MessagesIn: cv.MessagesIn, Answers: cv.Answers, Handoffs: cv.Handoffs, LastActivityAt: cv.LastActivityAt}
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
