package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/patch"
	"github.com/habring/habring/test/harness"
	"github.com/habring/habring/test/runner"
)

var (
	nsMu      sync.Mutex
	nsCounter int // guarded by nsMu
)

// namespace creates a fresh namespace, opted in or not, deleted when the test ends.
func namespace(t *testing.T, e *environment, optIn bool) string {
	t.Helper()
	return namespaceWith(t, e, optIn, nil)
}

// runningNamespace is an opted-in namespace whose pods run on the runner's node.
func runningNamespace(t *testing.T, e *environment) string {
	t.Helper()
	if e.runner == nil {
		t.Skipf("pods cannot run here: %v", e.noRunner)
	}
	return namespaceWith(t, e, true, runner.NamespaceAnnotations())
}

func namespaceWith(t *testing.T, e *environment, optIn bool, annotations map[string]string) string {
	t.Helper()
	nsMu.Lock()
	nsCounter++
	name := fmt.Sprintf("e2e-%d-%s", nsCounter, strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	nsMu.Unlock()
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
	if optIn {
		ns.Labels = map[string]string{contract.LabelInject: contract.InjectEnabled}
	}
	_, err := e.client.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = e.client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	// Service accounts come from a controller; pods are refused until "default" exists.
	require.Eventually(t, func() bool {
		_, err := e.client.CoreV1().ServiceAccounts(name).Get(t.Context(), "default", metav1.GetOptions{})
		return err == nil
	}, 30*time.Second, 100*time.Millisecond)
	return name
}

func container(name string) corev1.Container {
	return corev1.Container{Name: name, Image: "habitat/" + name + ":e2e"}
}

// ringService is a headless Service labelled with the ring, selecting app=<name>.
func ringService(t *testing.T, e *environment, ns, name, ring string) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{contract.LabelRing: ring}},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "gossip", Port: 9638}}},
	}
	_, err := e.client.CoreV1().Services(ns).Create(t.Context(), svc, metav1.CreateOptions{})
	require.NoError(t, err)
}

func statefulSet(ns, name string, replicas int32, ann map[string]string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann},
		Spec: appsv1.StatefulSetSpec{
			ServiceName: name, Replicas: ptr.To(replicas), PodManagementPolicy: appsv1.OrderedReadyPodManagement,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{container(name)}},
			},
		},
	}
}

func deployment(ns, name string, replicas int32, ann map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{container(name)}},
			},
		},
	}
}

func ring(name string) map[string]string { return map[string]string{contract.AnnotationRing: name} }

// readyPods waits until n pods with app=<app> are Ready with an IP, and returns them by name.
func readyPods(t *testing.T, e *environment, ns, app string, n int, timeout time.Duration) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		list, err := e.client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=" + app})
		require.NoError(c, err)
		pods = pods[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && p.Status.PodIP != "" && harness.PodReady(&p) {
				pods = append(pods, p)
			}
		}
		assert.Len(c, pods, n, "ready pods of %s/%s", ns, app)
	}, timeout, 200*time.Millisecond)
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods
}

// ringMembers waits until the EndpointSlices labelled habitat.sh/ring=<ring> hold exactly
// the ready IPs of pods, as the webhook reads them (patch.Members): a pod is Ready a moment
// before the EndpointSlice controller publishes its address, and under the suite's load
// (the 300-pod scale test runs beside this) the controller's retries of a Service whose
// pod was re-created ("Node Not Found" while it is unbound, then "EndpointSlice informer
// cache is out of date") were seen to back off past a minute.
func ringMembers(t *testing.T, e *environment, ns, ring string, pods []corev1.Pod) {
	t.Helper()
	want := make([]string, 0, len(pods))
	for _, p := range pods {
		want = append(want, p.Status.PodIP)
	}
	slices.Sort(want)
	// EventuallyWithT reports the last attempt's failure (plain Eventually would format its
	// message with the values this function had when it was called).
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		list, err := e.client.DiscoveryV1().EndpointSlices(ns).List(t.Context(), metav1.ListOptions{LabelSelector: contract.LabelRing + "=" + ring})
		require.NoError(c, err)
		got := []string{}
		for _, m := range patch.Members(slicesOf(list.Items)) {
			got = append(got, m.IP)
		}
		slices.Sort(got)
		assert.Equal(c, want, got, "ring %s/%s: ready members", ns, ring)
	}, 3*time.Minute, 100*time.Millisecond)
}

func slicesOf(items []discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	out := make([]*discoveryv1.EndpointSlice, 0, len(items))
	for i := range items {
		out = append(out, &items[i])
	}
	return out
}

func peers(p *corev1.Pod) []string {
	v, ok := p.Annotations[contract.AnnotationPeers]
	if !ok || v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

func peerArgs(p *corev1.Pod) []string {
	var out []string
	for _, a := range p.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--peer="); ok {
			out = append(out, v)
		}
	}
	return out
}

// requireInjected checks the pod went through habring and its args match its annotation.
func requireInjected(t *testing.T, p *corev1.Pod) {
	t.Helper()
	require.Equal(t, contract.StatusInjected, p.Annotations[contract.AnnotationStatus], "pod %s was not injected", p.Name)
	require.Equal(t, peers(p), peerArgs(p), "pod %s: --peer args differ from %s", p.Name, contract.AnnotationPeers)
}

func stableName(ns, sts string, i int) string {
	return fmt.Sprintf("%s-%d.%s.%s.svc.cluster.local", sts, i, sts, ns)
}

// described is what `kubectl describe` lists under Events for obj: client-go's Search,
// which selects by the object's kind, namespace, name and UID, as kubectl does.
func described(c require.TestingT, e *environment, obj runtime.Object) []string {
	m, err := meta.Accessor(obj)
	require.NoError(c, err)
	list, err := e.client.CoreV1().Events(m.GetNamespace()).SearchWithContext(context.Background(), scheme.Scheme, obj)
	require.NoError(c, err)
	var out []string
	for _, ev := range list.Items {
		out = append(out, ev.Type+" "+ev.Reason+" ("+ev.Source.Component+"): "+ev.Message)
	}
	return out
}

func events(t *testing.T, e *environment, ns, kind string) []string {
	t.Helper()
	list, err := e.client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.kind=" + kind})
	require.NoError(t, err)
	var out []string
	for _, ev := range list.Items {
		out = append(out, ev.Reason+": "+ev.Message)
	}
	return out
}
