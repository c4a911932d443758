package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/discovery"

	"github.com/habring/habring/internal/certs"
	"github.com/habring/habring/internal/connlimit"
	"github.com/habring/habring/internal/patch"
	"github.com/habring/habring/internal/ring"
)

// Readiness says whether this replica should be sent requests.
type Readiness func() error

// NewRouter serves /mutate, /healthz, /readyz and /metrics. Every route recovers from a
// panic with HTTP 500 and a count in habring_panics_total: a bug answers one request
// badly, it never takes the server down or admits a half-mutated pod.
func NewRouter(h http.Handler, ready Readiness, m *Metrics, log *slog.Logger) *mux.Router {
	r := mux.NewRouter()
	r.Use(recoverer(m, log))
	r.Handle("/mutate", h)
	r.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	r.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	r.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	return r
}

func recoverer(m *Metrics, log *slog.Logger) mux.MiddlewareFunc {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if p := recover(); p != nil {
					if p == http.ErrAbortHandler { //nolint:errorlint // a sentinel panic value, compared as net/http does
						panic(p)
					}
					m.Panics.Inc()
					log.Error("panic serving request", "path", r.URL.Path, "panic", fmt.Sprint(p))
					http.Error(w, "internal error", http.StatusInternalServerError)
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// Run serves the webhook until ctx ends, then shuts down gracefully: /readyz fails for
// ShutdownDelay, the listener closes, and in-flight requests finish.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	clients, err := ring.Connect(cfg.Kubeconfig, "habring-webhook")
	if err != nil {
		return err
	}
	native, err := nativeSidecars(cfg.SidecarMode, clients.Kube.Discovery())
	if err != nil {
		return err
	}
	m := NewMetrics()
	reloader, err := certs.NewReloader(cfg.TLSCertFile, cfg.TLSKeyFile, log)
	if err != nil {
		return fmt.Errorf("serving certificate: %w (is the cert-manager Certificate ready and its Secret mounted?)", err)
	}
	reloader.OnLoad = func(leaf *x509.Certificate) { m.CertNotAfter.Set(float64(leaf.NotAfter.Unix())) }
	m.CertNotAfter.Set(float64(reloader.Leaf().NotAfter.Unix()))

	cluster, err := ring.NewCache(clients.Kube, clients.Meta)
	if err != nil {
		return err
	}
	cluster.OnLookup = m.ownerLookup
	events, stopEvents := NewEventRecorder(context.WithoutCancel(ctx), clients.Kube)
	defer stopEvents()
	h := &Handler{Source: cluster, Metrics: m, Log: log, Timeout: cfg.RequestTimeout, Events: events,
		Injector: patch.NewInjector(patch.Options{MaxPeers: cfg.MaxPeers, ClusterDomain: cfg.ClusterDomain, LabelerImage: cfg.LabelerImage, NativeSidecar: native})}

	var stopping atomic.Bool
	ready := func() error {
		switch {
		case stopping.Load():
			return errors.New("shutting down")
		case !cluster.Synced():
			return errors.New("caches not synced yet")
		}
		return certReady(reloader.Leaf(), time.Now())
	}
	raw, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another process using the port? change --listen)", cfg.Listen, err)
	}
	srv, ln := NewServer(cfg, raw, reloader.GetCertificate, NewRouter(h, ready, m, log), log)
	m.watchConnections(ln)

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		if err := reloader.Run(runCtx); err != nil {
			log.Error("certificate watch stopped; relying on restarts for rotation", "err", err)
		}
	}()
	cluster.Start(runCtx)
	go func() {
		if cluster.WaitForSync(runCtx) {
			m.CacheSynced.Set(1)
			log.Info("caches synced")
		}
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String(), "nativeSidecar", native, "maxPeers", cfg.MaxPeers,
		"maxConnections", cfg.MaxConnections, "http2", cfg.EnableHTTP2)

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "delay", cfg.ShutdownDelay)
	stopping.Store(true)
	time.Sleep(cfg.ShutdownDelay)
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// MaxHeaderBytes bounds a request's header block. The API server sends a few hundred
// bytes (content type, length, user agent, trace context); 64 KiB leaves room for proxies
// and refuses the megabyte net/http would otherwise read, with 431 as HTTP says.
const MaxHeaderBytes = 64 << 10

// NewServer returns the webhook's HTTP server and the TLS listener it serves on raw with
// every phase bounded, derived from cfg.RequestTimeout so the API server's own calls
// (answered within it) are never cut:
//   - the TLS handshake and the request headers: ReadHeaderTimeout, at most 5s;
//   - the whole request, body included: ReadTimeout, RequestTimeout + 1s;
//   - reading, handling and writing the response: WriteTimeout, ReadTimeout + RequestTimeout;
//   - an idle keep-alive connection: IdleTimeout, 120s, longer than the 90s after which
//     client-go's transport closes its own idle connections, so the client closes first
//     and never sends into a connection the server is closing;
//   - headers: MaxHeaderBytes;
//   - open connections: cfg.MaxConnections (connlimit: unused ones shed first).
//
// HTTP/2 is offered only with cfg.EnableHTTP2: like controller-runtime, habring turns it off
// by default after the HTTP/2 rapid-reset and stream-cancellation advisories
// (CVE-2023-44487, CVE-2023-39325); the API server's client (client-go's transport)
// offers h2 and http/1.1 in ALPN and uses HTTP/1.1 when that is all the webhook offers.
func NewServer(cfg Config, raw net.Listener, cert func(*tls.ClientHelloInfo) (*tls.Certificate, error), h http.Handler, log *slog.Logger) (*http.Server, *connlimit.Listener) {
	tc := &tls.Config{GetCertificate: cert, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	read := cfg.RequestTimeout + time.Second
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tc,
		ReadHeaderTimeout: min(5*time.Second, read),
		ReadTimeout:       read,
		WriteTimeout:      read + cfg.RequestTimeout,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug), // TLS handshake noise from probes
	}
	if cfg.EnableHTTP2 {
		tc.NextProtos = []string{"h2", "http/1.1"}
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetHTTP2(true)
	} else {
		// An empty, non-nil TLSNextProto is net/http's documented way to turn HTTP/2 off.
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	ln := connlimit.New(tls.NewListener(raw, tc), cfg.MaxConnections)
	srv.ConnState = ln.ConnState
	return srv, ln
}

// certReady fails for a certificate that is missing, not yet valid or expired: the API
// server would refuse the handshake with an x509 error that does not say what to fix.
func certReady(leaf *x509.Certificate, now time.Time) error {
	switch {
	case leaf == nil:
		return errors.New("no serving certificate loaded")
	case now.After(leaf.NotAfter):
		return fmt.Errorf("serving certificate expired at %s; check the cert-manager Certificate and its Issuer", leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("serving certificate not valid before %s; check this node's clock", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// nativeSidecars resolves --sidecar-mode. Native sidecars (restartPolicy: Always on an
// init container) are on by default since Kubernetes 1.29.
func nativeSidecars(mode string, d discovery.ServerVersionInterface) (bool, error) {
	switch mode {
	case patch.SidecarNative:
		return true, nil
	case patch.SidecarContainer:
		return false, nil
	}
	info, err := d.ServerVersion()
	if err != nil {
		return false, fmt.Errorf("read the API server version for --sidecar-mode=auto: %w (or set --sidecar-mode=native|container)", err)
	}
	v, err := version.ParseGeneric(info.GitVersion)
	if err != nil {
		return false, fmt.Errorf("parse API server version %q: %w (set --sidecar-mode=native|container)", info.GitVersion, err)
	}
	return v.AtLeast(version.MajorMinor(1, 29)), nil
}
