// Command habring is the Habitat ring webhook, its offline renderer and its checks, in one
// binary (the labeler sidecar is cmd/habring-labeler). See `habring --help`. Installed as
// kubectl-habring on PATH it is also a kubectl plugin: `kubectl habring check`.
package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/habring/habring/internal/check"
	"github.com/habring/habring/internal/render"
	"github.com/habring/habring/internal/webhook"
)

func main() {
	// The one place signals are handled: SIGTERM from kubelet starts a graceful shutdown.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(cli(ctx, os.Args[1:], os.Stdout, os.Stderr, runners{
		webhook: webhook.Run, render: render.Run, check: check.Run, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr,
		prog:   progName(os.Args[0]),
		global: klog.SetSlogLogger, // client-go logs through klog: one logger for everything
	}))
}

// progName is "kubectl habring" when kubectl runs this binary as its plugin kubectl-habring.
func progName(argv0 string) string {
	if strings.TrimSuffix(filepath.Base(argv0), ".exe") == "kubectl-habring" {
		return "kubectl habring"
	}
	return "habring"
}
