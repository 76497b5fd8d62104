package cmd

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/bridge-dev/bridge/pkg/bridge"
	"github.com/bridge-dev/bridge/pkg/chatwoot"
	"github.com/bridge-dev/bridge/pkg/store"
	"github.com/spf13/cobra"
)

// findConversation resolves a display id to the one conversation bridge
// knows by it, in account when given.
// conversationArg opens the store and finds the conversation an ID
// argument names (in --account when that id exists in several accounts).
func (a *app) conversationArg(ctx context.Context, arg string, account int64, use storeUse) (*store.DB, store.Conversation, error) {
	id, err := parseID(arg, "conversation")
	if err != nil {
		return nil, store.Conversation{}, err
	}
	db, err := a.openStore(ctx, use)
	if err != nil {
		return nil, store.Conversation{}, err
	}
	cv, err := findConversation(ctx, db, id, account)
	if err != nil {
		_ = db.Close() // the lookup's error is the one to report
		return nil, store.Conversation{}, err
	}
	return db, cv, nil
}

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
			cfg, err := a.config()
			if err != nil {
				return err
			}
			db, cv, err := a.conversationArg(c.Context(), args[0], account, writeStore)
			if err != nil {
				return err
			}
			defer db.Close()
			id := cv.ConversationID
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
			db, cv, err := a.conversationArg(c.Context(), args[0], account, writeStore)
			if err != nil {
				return err
			}
			defer db.Close()
			id := cv.ConversationID
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
			cfg, err := a.config()
			if err != nil {
				return err
			}
			db, cv, err := a.conversationArg(c.Context(), args[0], account, writeStore)
			if err != nil {
				return err
			}
			defer db.Close()
			id := cv.ConversationID
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

// ownershipView is one entry of a conversation's ownership journal.
type ownershipView struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	Owner   string    `json:"owner"`
	Cause   string    `json:"cause"`
	Detail  string    `json:"detail,omitempty"`
	EventID int64     `json:"event_id,omitempty"`
}

func newConversationsShowCmd(a *app) *cobra.Command {
	var account int64
	c := &cobra.Command{
		Use:   "show ID",
		Short: "Show a conversation: who holds it, and every change of holder with its cause",
		Long: `Show bridge's record of a Chatwoot conversation and its ownership journal:
each handoff (with its reason), takeover by an agent, keep, return to the
bot (Chatwoot status, idle, give-back) and the memory the bot came back
with, and the resolves and reopenings Chatwoot reported.`,
		Example: "  bridge conversations show 42\n  bridge conversations show 42 --json",
		Args:    exactArgs(1, "bridge conversations show 42"),
		RunE: func(c *cobra.Command, args []string) error {
			db, cv, err := a.conversationArg(c.Context(), args[0], account, readStore)
			if err != nil {
				return err
			}
			defer db.Close()
			own, err := db.OwnershipOf(c.Context(), cv.AccountID, cv.ConversationID, 200)
			if err != nil {
				return err
			}
			views := make([]ownershipView, 0, len(own))
			for _, o := range own {
				views = append(views, ownershipView{At: o.At, Kind: o.Kind, Owner: o.Owner, Cause: o.Cause, Detail: o.Detail, EventID: o.EventID})
			}
			if a.json {
				return a.printJSON(struct {
					conversationView
					Ownership []ownershipView `json:"ownership"`
				}{convView(cv), views})
			}
			w := a.io.Out
			fmt.Fprintf(w, "Conversation %d (account %d, inbox %d)\n", cv.ConversationID, cv.AccountID, cv.InboxID)
			fmt.Fprintf(w, "  held by:   %s since %s (%s)\n", cv.State, a.localTime(cv.StateAt).Format("2006-01-02 15:04:05"), orDash(cv.StateReason))
			fmt.Fprintf(w, "  chatwoot:  %s\n", orDash(cv.Status))
			fmt.Fprintf(w, "  dify:      %s\n", orDash(cv.DifyConversationID))
			fmt.Fprintf(w, "  counts:    %d messages, %d answers, %d handoffs\n", cv.MessagesIn, cv.Answers, cv.Handoffs)
			if len(views) == 0 {
				fmt.Fprintln(w, "\nNo change of holder journaled.")
				return nil
			}
			fmt.Fprintln(w)
			rows := make([][]string, 0, len(views))
			for _, v := range views {
				ev := ""
				if v.EventID != 0 {
					ev = strconv.FormatInt(v.EventID, 10)
				}
				rows = append(rows, []string{a.localTime(v.At).Format("2006-01-02 15:04:05"), v.Kind, v.Owner, orDash(v.Cause), orDash(ev), orDash(v.Detail)})
			}
			a.table([]string{"at", "change", "holder", "cause", "event", "detail"}, rows, 5)
			return nil
		},
	}
	c.Flags().Int64Var(&account, "account", 0, "the account, when the id exists in several")
	return c
}
