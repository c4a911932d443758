package labeler

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/habring/habring/contract"
)

// metrics are the labeler's Prometheus metrics, on the Prometheus client as the webhook's
// are, in a registry of their own (no Go or process collectors).
type metrics struct {
	reg         *prometheus.Registry
	censusFails prometheus.Counter
	// stripped counts leader labels this labeler took off other pods while it held the
	// Lease (their labelers dead or cut off): each is a failover the fence did not wait for.
	stripped     prometheus.Counter
	requestFails *prometheus.CounterVec
	labelWrites  *prometheus.CounterVec
	role         *prometheus.GaugeVec
	members      *prometheus.GaugeVec
	quorumMargin *prometheus.GaugeVec
	// leader and waiting are by service group, for alerts on a group (the chart's
	// PrometheusRule): a group none of whose pods is labelled leader, a pod whose label
	// the fence holds back.
	leader  *prometheus.GaugeVec
	waiting *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		censusFails: prometheus.NewCounter(prometheus.CounterOpts{Name: "habring_labeler_census_failures_total",
			Help: "Census reads from the Supervisor's gateway that failed."}),
		stripped: prometheus.NewCounter(prometheus.CounterOpts{Name: "habring_labeler_stale_leader_labels_removed_total",
			Help: "Leader labels taken off other pods of the group while holding its Lease."}),
		requestFails: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "habring_labeler_request_failures_total",
			Help: "API requests of the labeler that failed, by kind (label, status, leader-list, lease-get, lease-create, lease-update, lease-takeover, lease-watch, endpointslices)."}, []string{"request"}),
		labelWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "habring_labeler_label_writes_total",
			Help: "habitat.sh/role label writes on the labeler's own pod, by the role written."}, []string{"role"}),
		role: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "habring_labeler_role",
			Help: "1 for the role last written on the labeler's own pod, 0 for the others."}, []string{"role"}),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "habring_labeler_members",
			Help: "The service group's members by health, as the pod's Supervisor sees them."}, []string{"group", "health"}),
		quorumMargin: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "habring_labeler_quorum_margin",
			Help: "How many more alive members the service group can lose and still elect; below 0 it elects no leader. Groups with elections only (not standalone)."}, []string{"group"}),
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "habring_labeler_leader",
			Help: "1 while the labeler's own pod is labelled leader of the service group, 0 otherwise."}, []string{"group"}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "habring_labeler_waiting",
			Help: "1 while the pod's Supervisor leads the service group but the fence holds its leader label back (another pod holds the Lease, or its label), 0 otherwise."}, []string{"group"}),
	}
	m.reg.MustRegister(m.censusFails, m.stripped, m.requestFails, m.labelWrites, m.role, m.members, m.quorumMargin, m.leader, m.waiting)
	return m
}

// quorum exports a group's members by health, and its margin when it has elections: a
// standalone group elects nothing, and its margin would only raise alerts.
func (m *metrics) quorum(group string, q Quorum, elections bool) {
	for health, n := range map[string]int{"alive": q.Alive, "suspect": q.Suspect, "confirmed": q.Confirmed, "departed": q.Departed} {
		m.members.WithLabelValues(group, health).Set(float64(n))
	}
	if elections {
		m.quorumMargin.WithLabelValues(group).Set(float64(q.Margin()))
	}
}

// group exports whether the pod is labelled leader of group, and whether the fence holds
// its label back.
func (m *metrics) group(group string, leader, waiting bool) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	m.leader.WithLabelValues(group).Set(b(leader))
	m.waiting.WithLabelValues(group).Set(b(waiting))
}

// requestFailed counts a failed API request of the labeler's, by kind (api.go).
func (m *metrics) requestFailed(request string) { m.requestFails.WithLabelValues(request).Inc() }

func (m *metrics) wrote(role string) {
	m.labelWrites.WithLabelValues(role).Inc()
	for _, r := range []string{contract.RoleLeader, contract.RoleFollower, contract.RoleNone} {
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
	mux.Handle("/metrics", promhttp.HandlerFor(l.metrics.reg, promhttp.HandlerOpts{}))
	return mux
}
