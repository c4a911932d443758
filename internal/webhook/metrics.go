package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/habring/habring/internal/connlimit"
)

// Outcomes of an admission request (the "outcome" label).
const (
	OutcomeInjected = "injected"
	OutcomeSkipped  = "skipped"
	OutcomeDenied   = "denied"
	OutcomeErrored  = "errored" // the request itself was bad, or the server failed
)

// Metrics are the webhook's Prometheus metrics, in their own registry so tests can
// read them and nothing global is shared.
type Metrics struct {
	Registry *prometheus.Registry

	Requests     *prometheus.CounterVec   // outcome, reason
	Duration     *prometheus.HistogramVec // outcome
	Panics       prometheus.Counter
	CacheSynced  prometheus.Gauge
	CertNotAfter prometheus.Gauge
	OwnerLookups *prometheus.CounterVec // kind, source (cache or api)
}

// NewMetrics registers the metrics, plus the Go and process collectors.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "habring_admission_requests_total",
			Help: "Admission requests by outcome (injected, skipped, denied, errored) and reason.",
		}, []string{"outcome", "reason"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "habring_admission_duration_seconds",
			Help: "Time from request received to response written, by outcome.",
			// Admission is in the path of every pod creation: most answers should take
			// well under a millisecond; the API server gives up at timeoutSeconds.
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1, 2.5, 5},
		}, []string{"outcome"}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "habring_panics_total",
			Help: "Requests that panicked (answered with HTTP 500); any value above zero is a bug.",
		}),
		CacheSynced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "habring_cache_synced",
			Help: "1 once the StatefulSet, Deployment and EndpointSlice caches have synced.",
		}),
		CertNotAfter: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "habring_certificate_expiry_timestamp_seconds",
			Help: "NotAfter of the serving certificate, as a Unix time.",
		}),
		OwnerLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "habring_owner_lookups_total",
			Help: "Owner lookups by kind and where they were answered (cache, or api after a cache miss).",
		}, []string{"kind", "source"}),
	}
	r.MustRegister(m.Requests, m.Duration, m.Panics, m.CacheSynced, m.CertNotAfter, m.OwnerLookups,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ownerLookup counts one owner lookup (ring.Cache.OnLookup).
func (m *Metrics) ownerLookup(kind, source string) {
	m.OwnerLookups.WithLabelValues(kind, source).Inc()
}

// watchConnections exports the connection cap's counts: habring_connections_open,
// habring_connections_max, and habring_connections_closed_total{reason} (shed: unused
// connections closed to make room; rejected: new ones closed while every slot served a
// request). A rising rejected count means a flood of slow requests; raise
// --max-connections or find the client.
func (m *Metrics) watchConnections(l *connlimit.Listener) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "habring_connections_open", Help: "Open connections to the webhook server."},
			func() float64 { return float64(l.Stats().Open) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "habring_connections_max", Help: "The cap on open connections (--max-connections)."},
			func() float64 { return float64(l.Stats().Max) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "habring_connections_closed_total", Help: "Connections closed by the cap, by reason.",
			ConstLabels: prometheus.Labels{"reason": "shed"}}, func() float64 { return float64(l.Stats().Shed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "habring_connections_closed_total", Help: "Connections closed by the cap, by reason.",
			ConstLabels: prometheus.Labels{"reason": "rejected"}}, func() float64 { return float64(l.Stats().Rejected) }),
	)
}
