package labeler

import (
	"net/http"

	"strings"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/habring/habring/contract"
)

// metrics are the labeler's Prometheus metrics, in VictoriaMetrics/metrics: the
// Prometheus client registers its collectors and descriptors at start, MiB that every ring
// pod would pay for five metrics.
type metrics struct {
	set         *vm.Set
	censusFails *vm.Counter
	// stripped counts leader labels this labeler took off other pods while it held the
	// Lease (their labelers dead or cut off): each is a failover the fence did not wait for.
	stripped *vm.Counter
}

func init() { vm.ExposeMetadata(true) } // # TYPE lines, as Prometheus clients write them

func newMetrics() *metrics {
	m := &metrics{set: vm.NewSet()}
	m.censusFails = m.set.NewCounter("habring_labeler_census_failures_total")
	m.stripped = m.set.NewCounter("habring_labeler_stale_leader_labels_removed_total")
	return m
}

// labelValue makes a census group name safe as a label value: a name the metrics library
// refuses would stop the labeler.
func labelValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '.' || r == '-' || r == '@' || r == ':' || r == '/' ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, s)
}

func (m *metrics) quorum(group string, q Quorum) {
	group = labelValue(group)
	for health, n := range map[string]int{"alive": q.Alive, "suspect": q.Suspect, "confirmed": q.Confirmed, "departed": q.Departed} {
		m.set.GetOrCreateGauge(`habring_labeler_members{group="`+group+`",health="`+health+`"}`, nil).Set(float64(n))
	}
	m.set.GetOrCreateGauge(`habring_labeler_quorum_margin{group="`+group+`"}`, nil).Set(float64(q.Margin()))
}

// requestFailed counts a failed API request of the labeler's, by kind (api.go).
func (m *metrics) requestFailed(request string) {
	m.set.GetOrCreateCounter(`habring_labeler_request_failures_total{request="` + labelValue(request) + `"}`).Inc()
}

func (m *metrics) wrote(role string) {
	m.set.GetOrCreateCounter(`habring_labeler_label_writes_total{role="` + labelValue(role) + `"}`).Inc()
	for _, r := range []string{contract.RoleLeader, contract.RoleFollower, contract.RoleNone} {
		v := 0.0
		if r == role {
			v = 1
		}
		m.set.GetOrCreateGauge(`habring_labeler_role{role="`+r+`"}`, nil).Set(v)
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
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		l.metrics.set.WritePrometheus(w)
	})
	return mux
}
