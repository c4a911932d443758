package labeler

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/habring/habring/patch"
)

type metrics struct {
	registry    *prometheus.Registry
	writes      *prometheus.CounterVec
	censusFails prometheus.Counter
	role        *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "habring_labeler_label_writes_total", Help: "Writes of this pod's habitat.sh/role label, by new value.",
		}, []string{"role"}),
		censusFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "habring_labeler_census_failures_total", Help: "Failed /census reads.",
		}),
		role: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "habring_labeler_role", Help: "1 for the role this pod's label holds.",
		}, []string{"role"}),
	}
	m.registry.MustRegister(m.writes, m.censusFails, m.role)
	return m
}

// wrote records a label write of role.
func (m *metrics) wrote(role string) {
	m.writes.WithLabelValues(role).Inc()
	for _, r := range []string{patch.RoleLeader, patch.RoleFollower, patch.RoleNone} {
		v := 0.0
		if r == role {
			v = 1
		}
		m.role.WithLabelValues(r).Set(v)
	}
}

// Handler serves /healthz (200 while the last census read succeeded), /readyz (200 once
// the peer file was written, or at once without one) and /metrics.
func (l *Labeler) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !l.censusOK.Load() {
			http.Error(w, "last census read failed", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !l.peersReady.Load() {
			http.Error(w, "peer watch file not written yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(l.metrics.registry, promhttp.HandlerOpts{}))
	return mux
}
