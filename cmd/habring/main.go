// Command habring is the Habitat ring webhook, its labeler sidecar and its offline
// renderer, in one binary. See `habring --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/habring/habring/labeler"
	"github.com/habring/habring/render"
	"github.com/habring/habring/webhook"
)

func main() {
	// The one place signals are handled: SIGTERM from kubelet starts a graceful shutdown.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(cli(ctx, os.Args[1:], os.Stdout, os.Stderr, runners{
		webhook: webhook.Run, labeler: labeler.Run, render: render.Run, stdin: os.Stdin, stdout: os.Stdout,
		global: klog.SetSlogLogger, // client-go logs through klog: one logger for everything
	}))
}
