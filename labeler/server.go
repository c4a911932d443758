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
	members     *prometheus.GaugeVec
	margin      *prometheus.GaugeVec
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
	m.members = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "habring_labeler_members", Help: "Members of the service group by health, as this pod's Supervisor sees them (confirmed: dead, not departed, still counted in the quorum).",
	}, []string{"group", "health"})
	m.margin = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "habring_labeler_quorum_margin", Help: "Alive members the service group can lose and keep its quorum: alive - floor(not departed/2) - 1; below 0 no leader is elected.",
	}, []string{"group"})
	m.registry.MustRegister(m.writes, m.censusFails, m.role, m.members, m.margin)
	return m
}

// quorum records a group's members by health and its margin.
func (m *metrics) quorum(group string, q Quorum) {
	for health, n := range map[string]int{"alive": q.Alive, "suspect": q.Suspect, "confirmed": q.Confirmed, "departed": q.Departed} {
		m.members.WithLabelValues(group, health).Set(float64(n))
	}
	m.margin.WithLabelValues(group).Set(float64(q.Margin()))
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
