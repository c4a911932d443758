// Command habring-labeler is the labeler sidecar habring injects into ring pods: it keeps
// its pod's habitat.sh/role label equal to its Supervisor's election role (fenced by a
// Lease), keeps the peer watch file and the ring-joined condition. It is a binary of its
// own, beside habring in the image, because every ring pod runs one: it links client-go's
// typed clients, leader election and reflector and the Prometheus client, but not the
// webhook, render or the check. docs/performance.md has its memory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/habring/habring/internal/labeler"
	"github.com/habring/habring/internal/logging"
)

// gcPercent is the labeler's GOGC unless the environment sets one. Its heap is a few
// hundred KiB live, but Go's default lets garbage grow to a 4 MiB heap before the first
// collection: a leader labeler (census, Lease renewals, the leader list) reached 12.8 MiB
// resident after three minutes, 11.1 MiB with 25 (docs/performance.md). It allocates a
// few KiB a second, so collecting more often costs next to nothing.
const gcPercent = 25

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, labeler.Run, true))
}

// run parses args and runs the labeler; it returns the exit code: 0 on a clean stop and
// for --help, 2 for a usage error, 1 when the labeler failed. global installs the logger
// process-wide (the standard library's log goes through it); tests leave it off.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, label func(context.Context, labeler.Config, *slog.Logger) error, global bool) int {
	fs := flag.NewFlagSet("habring-labeler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	cfg := labeler.Defaults()
	cfg.RegisterFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "habring-labeler: keep this pod's habitat.sh/role label equal to its Supervisor's election role\n\n"+
			"Usage: habring-labeler [flags]  (pod name and namespace from HABRING_POD_NAME, HABRING_POD_NAMESPACE)\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "habring-labeler: unexpected arguments %q; see 'habring-labeler --help'\n", fs.Args())
		return 2
	}
	log, err := logging.New(stderr, *logLevel, *logFormat)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "habring-labeler: %v\nSee 'habring-labeler --help'.\n", err)
		return 2
	}
	if global {
		slog.SetDefault(log) // what the standard library logs (net/http) goes there too
		// client-go's own log (klog) is dropped: its elector and reflector log a failure at
		// every retry, and the labeler counts and logs each of them once per change,
		// with what to do (internal/labeler/api.go).
		klog.SetLogger(logr.Discard())
	}
	if err := label(ctx, cfg, log); err != nil {
		log.Error("habring-labeler failed", "err", err)
		return 1
	}
	return 0
}
