// Command hab-sup-double is the Habitat Supervisor double: it takes the `hab sup run`
// arguments and environment habring injects and behaves as test/supervisor/README.md
// says. SIGTERM departs the ring and exits 0; SIGKILL leaves a Confirmed member behind.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/habring/habring/test/supervisor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && (os.Args[1] == "--help" || os.Args[1] == "-h") {
		fmt.Println("usage: hab-sup-double [run|start <origin>/<name>] [--peer HOST[:PORT]]... [--peer-watch-file F] [--permanent-peer]\n" +
			"  [--listen-gossip IP:PORT] [--listen-http IP:PORT] [--sys-ip-address IP] [--topology standalone|leader] [--group G] [--bind B]...\n" +
			"The Habitat Supervisor double of habring's tests; see test/supervisor/README.md.")
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	os.Exit(run(ctx, log))
}

func run(ctx context.Context, log *slog.Logger) int {
	opts, err := supervisor.Parse(ctx, os.Args[1:], os.Getenv, net.DefaultResolver)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	s, err := supervisor.Start(ctx, opts, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	select {
	case <-ctx.Done():
		log.Info("gracefully departing from butterfly network")
		if err := s.Depart(5 * time.Second); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("departure not confirmed by the ring", "err", err)
		}
		return 0
	case err := <-s.Done():
		log.Error("stopping", "err", err)
		s.Kill()
		return 1
	}
}
