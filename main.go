// Command bridge connects a Chatwoot help desk to Dify AI apps.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/bridge-dev/bridge/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal starts a graceful stop; a second one exits at once.
		<-ctx.Done()
		stop()
		again := make(chan os.Signal, 1)
		signal.Notify(again, os.Interrupt, syscall.SIGTERM)
		<-again
		fmt.Fprintln(os.Stderr, "second signal: exiting now; unfinished events stay in the journal")
		os.Exit(1)
	}()
	code := cmd.Execute(ctx, os.Args[1:], cmd.SystemIO())
	stop()
	os.Exit(code)
}
