package e2e

import (
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/test/harness"
)

func requireBench(t *testing.T) *environment {
	t.Helper()
	e := requireEnv(t)
	if os.Getenv("HABRING_BENCH") == "" {
		t.Skip("a measurement, not a test: HABRING_BENCH=1 (make bench)")
	}
	return e
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Memory of habring webhook with 1,000 workloads and 1,000 EndpointSlices holding 5,000
// ring pods' endpoints in its caches, and of an idle labeler.
func TestBenchMemory(t *testing.T) {
	e := requireBench(t)
	outage.Lock()
	defer outage.Unlock()
	ns := namespace(t, e, true)
	before, err := harness.RSS(e.webhook.Pid())
	require.NoError(t, err)

	create := func(n int, f func(i int) error) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for i := range n {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				require.NoError(t, f(i))
			})
		}
		wg.Wait()
	}
	start := time.Now()
	create(500, func(i int) error {
		s := statefulSet(ns, fmt.Sprintf("sts-%d", i), 0, ring(fmt.Sprintf("r%d", i%100)))
		_, err := e.client.AppsV1().StatefulSets(ns).Create(t.Context(), s, metav1.CreateOptions{})
		return err
	})
	create(500, func(i int) error {
		d := deployment(ns, fmt.Sprintf("dep-%d", i), 0, ring(fmt.Sprintf("r%d", i%100)))
		// What a kubectl-applied workload carries and the cache must not keep.
		d.Annotations["kubectl.kubernetes.io/last-applied-configuration"] = string(make([]byte, 2048))
		_, err := e.client.AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{})
		return err
	})
	create(1000, func(i int) error {
		s := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("es-%d", i), Namespace: ns, Labels: map[string]string{
				contract.LabelRing: fmt.Sprintf("r%d", i%100), discoveryv1.LabelManagedBy: "habring-bench"}},
			AddressType: discoveryv1.AddressTypeIPv4,
		}
		for j := range 5 {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 100+i/250, i%250, j)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: fmt.Sprintf("pod-%d-%d", i, j), Namespace: ns}})
		}
		_, err := e.client.DiscoveryV1().EndpointSlices(ns).Create(t.Context(), s, metav1.CreateOptions{})
		return err
	})
	t.Logf("created 500 StatefulSets, 500 Deployments, 1,000 EndpointSlices (5,000 endpoints) in %s", time.Since(start).Round(time.Second))
	time.Sleep(5 * time.Second) // watch events reach the caches
	// A probe admission proves the objects are in the caches.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "dep-7-x", Namespace: ns, Labels: map[string]string{"app": "dep-7", "pod-template-hash": "h"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "dep-7-h", UID: "u", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{container("dep-7")}}}
	got, err := e.client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	require.NoError(t, err)
	require.Len(t, peers(got), contract.DefaultMaxPeers)
	after, err := harness.RSS(e.webhook.Pid())
	require.NoError(t, err)
	t.Logf("habring webhook RSS: %s before, %s with the caches full", mib(before), mib(after))

	// Idle labelers, as a ring pod runs them: a follower keeping its peer watch file from
	// its ring's EndpointSlices, and a leader that also holds its group's Lease. Census
	// answered, label written once, then nothing to do but read, renew and watch. Aged
	// fast: the census read and the Lease renewed 25 times as often as by default, so the
	// 40 s measured stand for about 17 minutes of their garbage (a Go heap grows to its
	// first collection for minutes at the default rates).
	cs := namespace(t, e, false)
	_, err = e.client.DiscoveryV1().EndpointSlices(cs).Create(t.Context(), &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "main", Labels: map[string]string{contract.LabelRing: "main", discoveryv1.LabelManagedBy: "habring-bench"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.10"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "leader"}},
			{Addresses: []string{"10.0.0.11"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "follower"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	for _, c := range []struct{ pod, census string }{{"follower", "census_follower.json"}, {"leader", "census_leader.json"}} {
		sup := &census{}
		sup.set(t, c.census)
		srv := httptest.NewServer(sup)
		defer srv.Close()
		lp, err := e.client.CoreV1().Pods(cs).Create(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: c.pod, Labels: map[string]string{contract.LabelRing: "main"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{container(c.pod)}}}, metav1.CreateOptions{})
		require.NoError(t, err)
		cmd := exec.Command(harness.LabelerBinary(e.binary), "--kubeconfig="+e.cluster.Kubeconfig, "--gateway="+srv.URL, "--pod-name="+lp.Name,
			"--namespace="+cs, "--ring=main", "--peer-watch-file="+filepath.Join(t.TempDir(), "peers"), "--health-listen=127.0.0.1:0",
			"--interval=200ms", "--lease-duration=3s", "--stale-after=10s")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		log, err := os.Create(filepath.Join(e.dir, "idle-"+c.pod+"-labeler.log"))
		require.NoError(t, err)
		defer log.Close()
		cmd.Stdout, cmd.Stderr = log, log
		start = time.Now()
		require.NoError(t, cmd.Start())
		defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
		require.Eventually(t, func() bool {
			p, err := e.client.CoreV1().Pods(cs).Get(t.Context(), lp.Name, metav1.GetOptions{})
			return err == nil && p.Labels[contract.LabelRole] == c.pod
		}, 30*time.Second, 20*time.Millisecond)
		t.Logf("labeler (%s): first label written %s after exec", c.pod, time.Since(start).Round(time.Millisecond))
		defer func() {
			m, err := harness.ReadMemory(cmd.Process.Pid)
			require.NoError(t, err)
			t.Logf("habring-labeler RSS, idle %s: %s", c.pod, m)
		}()
	}
	time.Sleep(40 * time.Second)
}

// The whole-cluster figure: a 300-replica scale-up with the webhook in the path, and
// without it (a namespace not opted in), on the same control plane.
func TestBenchScaleUpRatio(t *testing.T) {
	e := requireBench(t)
	outage.Lock()
	defer outage.Unlock()
	timeIt := func(optIn bool) time.Duration {
		ns := namespace(t, e, optIn)
		ringService(t, e, ns, "boot", "main")
		_, err := e.client.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "boot", 1, ring("main")), metav1.CreateOptions{})
		require.NoError(t, err)
		readyPods(t, e, ns, "boot", 1, time.Minute)
		start := time.Now()
		_, err = e.client.AppsV1().Deployments(ns).Create(t.Context(), deployment(ns, "big", 300, ring("main")), metav1.CreateOptions{})
		require.NoError(t, err)
		readyPods(t, e, ns, "big", 300, 10*time.Minute)
		return time.Since(start)
	}
	without := timeIt(false)
	with := timeIt(true)
	again := timeIt(false)
	t.Logf("300-replica scale-up to Ready: without habring %s and %s, with habring %s: ratio %.2f",
		without.Round(100*time.Millisecond), again.Round(100*time.Millisecond), with.Round(100*time.Millisecond),
		float64(with)/float64((without+again)/2))
}
