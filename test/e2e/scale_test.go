package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A Deployment scaled to 300 replicas: every pod admitted and injected. Prints the API
// server's own view of our webhook's latency.
func TestScaleTo300(t *testing.T) {
	e := requireEnv(t)
	outage.Lock() // alone on the machine's 2 cores, like the rotation burst
	defer outage.Unlock()
	ns := namespace(t, e, true)
	ringService(t, e, ns, "boot", "main")
	_, err := e.client.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "boot", 3, ring("main")), metav1.CreateOptions{})
	require.NoError(t, err)
	readyPods(t, e, ns, "boot", 3, 2*time.Minute)

	start := time.Now()
	_, err = e.client.AppsV1().Deployments(ns).Create(t.Context(), deployment(ns, "big", 300, ring("main")), metav1.CreateOptions{})
	require.NoError(t, err)
	pods := readyPods(t, e, ns, "big", 300, 10*time.Minute)
	took := time.Since(start)
	for _, p := range pods {
		requireInjected(t, &p)
		require.Len(t, peers(&p), 3)
	}
	raw, err := e.client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(t.Context())
	require.NoError(t, err)
	q, n := webhookQuantiles(raw, "inject.habring.habitat.sh")
	t.Logf("300 pods admitted and Ready in %s; the API server's apiserver_admission_webhook_admission_duration_seconds for habring (buckets 5ms, 25ms, 100ms, 500ms: coarse) over %d calls: p50 %s p90 %s p99 %s",
		took.Round(100*time.Millisecond), n, q[0.5], q[0.9], q[0.99])
	require.Positive(t, n)
	own, err := e.webhook.Metrics()
	require.NoError(t, err)
	hq, hn := histogramQuantiles(own, "habring_admission_duration_seconds_bucket{", `outcome="injected"`)
	t.Logf("habring's own habring_admission_duration_seconds{outcome=injected} over %d admissions: p50 %s p90 %s p99 %s", hn, hq[0.5], hq[0.9], hq[0.99])
}

// webhookQuantiles estimates quantiles from the histogram buckets of one webhook, summed
// over its label sets, as Prometheus' histogram_quantile does (linear within a bucket).
func webhookQuantiles(metrics []byte, name string) (map[float64]string, int) {
	return histogramQuantiles(metrics, "apiserver_admission_webhook_admission_duration_seconds_bucket{", `name="`+name+`"`)
}

// histogramQuantiles reads the buckets of lines starting with prefix and containing match.
func histogramQuantiles(metrics []byte, prefix, match string) (map[float64]string, int) {
	buckets := map[float64]float64{}
	sc := bufio.NewScanner(bytes.NewReader(metrics))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) || !strings.Contains(line, match) {
			continue
		}
		i := strings.Index(line, `le="`)
		j := strings.Index(line[i+4:], `"`)
		le, err := strconv.ParseFloat(line[i+4:i+4+j], 64)
		if err != nil && line[i+4:i+4+j] == "+Inf" {
			le = math.Inf(1)
		}
		v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		buckets[le] += v
	}
	les := make([]float64, 0, len(buckets))
	for le := range buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	total := 0.0
	if len(les) > 0 {
		total = buckets[les[len(les)-1]]
	}
	out := map[float64]string{}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		rank := q * total
		prevLe, prevCount := 0.0, 0.0
		for _, le := range les {
			if buckets[le] >= rank {
				if math.IsInf(le, 1) {
					out[q] = fmt.Sprintf(">%gs", prevLe)
				} else {
					v := prevLe + (le-prevLe)*(rank-prevCount)/math.Max(buckets[le]-prevCount, 1)
					out[q] = time.Duration(v * float64(time.Second)).Round(10 * time.Microsecond).String()
				}
				break
			}
			prevLe, prevCount = le, buckets[le]
		}
	}
	return out, int(total)
}
