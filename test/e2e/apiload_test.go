package e2e

import (
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/test/harness"
)

// apiRequests is the API server's apiserver_request_total summed by "VERB resource"
// (every code, scope and subresource together).
func apiRequests(t *testing.T, e *environment) map[string]float64 {
	t.Helper()
	s := scrapeMetrics(t, func() ([]byte, error) {
		return e.client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(t.Context())
	}, nil)
	f, ok := s.families["apiserver_request_total"]
	require.True(t, ok, "the API server exports apiserver_request_total")
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		out[labels["verb"]+" "+labels["resource"]] += m.GetCounter().GetValue()
	}
	return out
}

// requestsPerMinute is what the API server counted between two apiRequests, a minute's
// worth, by "VERB resource", largest first.
func requestsPerMinute(before, after map[string]float64, over time.Duration) (total float64, lines []string) {
	type row struct {
		key string
		n   float64
	}
	var rows []row
	for k, v := range after {
		if d := (v - before[k]) * float64(time.Minute) / float64(over); d > 0 {
			rows = append(rows, row{k, d})
			total += d
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].n > rows[j].n })
	for _, r := range rows {
		lines = append(lines, fmt.Sprintf("%s %.1f", r.key, r.n))
	}
	return total, lines
}

// API server load of rings at rest: rings of three labelers each (a leader holding its
// group's Lease, two followers, each keeping its peer watch file from the ring's
// EndpointSlice), at their default periods, their census answered and unchanging. The
// API server's own count over a quiet span with the labelers running, less the same span
// without them (the control plane's own Leases and controllers), per ring.
func TestBenchAPILoad(t *testing.T) {
	e := requireBench(t)
	outage.Lock()
	defer outage.Unlock()
	const rings = 4
	quiet := 2 * time.Minute
	if s := os.Getenv("HABRING_QUIET"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err)
		quiet = d
	}

	t.Logf("the control plane alone, %s", quiet)
	b0 := apiRequests(t, e)
	time.Sleep(quiet)
	b1 := apiRequests(t, e)
	base, baseLines := requestsPerMinute(b0, b1, quiet)
	t.Logf("without labelers: %.1f requests a minute: %s", base, strings.Join(baseLines, ", "))

	var namespaces []string
	for r := range rings {
		ns := namespace(t, e, false)
		namespaces = append(namespaces, ns)
		ring := fmt.Sprintf("r%d", r)
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: ring, Labels: map[string]string{contract.LabelRing: ring, discoveryv1.LabelManagedBy: "habring-bench"}},
			AddressType: discoveryv1.AddressTypeIPv4,
		}
		for i, role := range []string{"leader", "follower", "follower"} {
			name := fmt.Sprintf("%s-%d", role, i)
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.0.%d.%d", r, 10+i)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: name}})
		}
		_, err := e.client.DiscoveryV1().EndpointSlices(ns).Create(t.Context(), slice, metav1.CreateOptions{})
		require.NoError(t, err)
		for i, role := range []string{"leader", "follower", "follower"} {
			sup := &census{}
			sup.set(t, "census_"+role+".json")
			srv := httptest.NewServer(sup)
			t.Cleanup(srv.Close)
			p, err := e.client.CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", role, i),
				Labels: map[string]string{contract.LabelRing: ring}},
				// Never scheduled: no node's status or taints change the pods while measured.
				Spec: corev1.PodSpec{SchedulerName: "habring-bench-none", Containers: []corev1.Container{container(role)}}}, metav1.CreateOptions{})
			require.NoError(t, err)
			// Every period at its default: what a ring pod's labeler runs with.
			cmd := exec.Command(harness.LabelerBinary(e.binary), "--kubeconfig="+e.cluster.Kubeconfig, "--gateway="+srv.URL, "--pod-name="+p.Name,
				"--namespace="+ns, "--ring="+ring, "--peer-watch-file="+filepath.Join(t.TempDir(), "peers"), "--health-listen=127.0.0.1:0")
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			log, err := os.Create(filepath.Join(e.dir, "apiload-"+ns+"-"+p.Name+"-labeler.log"))
			require.NoError(t, err)
			cmd.Stdout, cmd.Stderr = log, log
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait(); _ = log.Close() })
			require.Eventually(t, func() bool {
				got, err := e.client.CoreV1().Pods(ns).Get(t.Context(), p.Name, metav1.GetOptions{})
				return err == nil && got.Labels[contract.LabelRole] == role
			}, time.Minute, 100*time.Millisecond)
		}
	}
	time.Sleep(10 * time.Second) // past the labels' writes and the first Lease renewals
	t.Logf("%d rings of 3 labelers at rest, %s", rings, quiet)
	a0 := apiRequests(t, e)
	time.Sleep(quiet)
	a1 := apiRequests(t, e)
	with, lines := requestsPerMinute(a0, a1, quiet)
	t.Logf("with labelers: %.1f requests a minute: %s", with, strings.Join(lines, ", "))
	// The Events of the span, by where they came from: what at rest writes them.
	reasons := map[string]int{}
	for _, ns := range namespaces {
		list, err := e.client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{})
		require.NoError(t, err)
		for _, ev := range list.Items {
			if ev.LastTimestamp.After(time.Now().Add(-quiet)) {
				reasons[ev.Source.Component+"/"+ev.Reason] += int(ev.Count)
			}
		}
	}
	t.Logf("Events in the rings' namespaces during the span (source/reason: count): %v", reasons)
	t.Logf("API requests per ring at rest: %.1f a minute (%d rings, %.1f with, %.1f without)", (with-base)/rings, rings, with, base)
}
