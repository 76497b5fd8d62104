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
	// sigs sees every signal from the start, so a second one arriving
	// right after the first cannot slip between two registrations.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs // the first starts a graceful stop (ctx ends)
		<-sigs // a second one exits at once
		fmt.Fprintln(os.Stderr, "second signal: exiting now; unfinished events stay in the journal")
		os.Exit(1)
	}()
	code := cmd.Execute(ctx, os.Args[1:], cmd.SystemIO())
	stop()
	os.Exit(code)
}
