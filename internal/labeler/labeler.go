package labeler

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/habring/habring/internal/connlimit"
)

// Run builds the client and labels until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	client, err := Connect(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	log = log.With("pod", cfg.PodName, "namespace", cfg.Namespace)
	log.Info("labeling", "gateway", cfg.Gateway, "group", cfg.ServiceGroup, "peerWatchFile", cfg.PeerWatchFile)
	return New(cfg, client, clock.RealClock{}, log).Run(ctx)
}

// Labeler keeps one pod's role label true.
type Labeler struct {
	cfg     Config
	kube    Client
	gateway *Gateway
	clock   clock.Clock
	log     *slog.Logger
	metrics *metrics
	fence   *fence
	// Failed requests, counted, and logged once per change (api.go).
	labelFails, statusFails, leaderListFails, takeOverFails *failures
	// recorder records Events on self, the labeler's pod (events.go); nil when it could
	// not read its pod.
	recorder record.EventRecorder
	self     *corev1.ObjectReference

	censusOK   atomic.Bool // last census read succeeded (/healthz)
	peersReady atomic.Bool // the watch file was written at least once (/readyz)
}

// New builds a Labeler; Run starts it. clk paces the census loop and the stale deadline
// (clock.RealClock{} outside tests).
func New(cfg Config, client Client, clk clock.Clock, log *slog.Logger) *Labeler {
	l := &Labeler{
		cfg: cfg, kube: client, clock: clk, log: log, metrics: newMetrics(),
		gateway: &Gateway{URL: cfg.Gateway, Token: cfg.GatewayToken, Client: &http.Client{Timeout: 2 * time.Second}},
	}
	l.labelFails = l.failures("label", "role label update")
	l.statusFails = l.failures("status", "ring-joined condition update")
	l.leaderListFails = l.failures("leader-list", "list of the pods labelled leader")
	l.takeOverFails = l.failures("lease-takeover", "takeover of a leader Lease run out")
	l.fence = newFence(l)
	return l
}

// maxHealthConnections caps the health server's open connections: probes and a scraper
// need a handful.
const maxHealthConnections = 32

// Run labels until ctx ends; it returns nil on a clean stop.
func (l *Labeler) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", l.cfg.HealthListen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (change --health-listen)", l.cfg.HealthListen, err)
	}
	// Its clients are kubelet's probes and a metrics scraper: small, quick requests. Every
	// phase is bounded and the connections are capped, so nothing that can reach the pod
	// grows the sidecar's memory.
	limited := connlimit.New(ln, maxHealthConnections)
	srv := &http.Server{
		Handler:           l.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnState:         limited.ConnState,
	}
	own := l.ownPod(ctx)
	defer l.startEvents(context.WithoutCancel(ctx), own)() // before anything that records one
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(limited) })
	if l.cfg.PeerWatchFile == "" {
		l.peersReady.Store(true)
	} else {
		wg.Go(func() { l.keepPeerFile(ctx) })
	}
	l.keepRole(ctx, own)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	wg.Wait()
	l.log.Info("stopped")
	return nil
}
