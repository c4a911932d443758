package e2e

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/test/harness"
)

// census is an httptest Supervisor gateway whose /census the test switches.
type census struct {
	mu   sync.Mutex
	body []byte
	cmd  *exec.Cmd // the labeler reading it (runLabeler)
}

func (c *census) set(t *testing.T, file string) {
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "internal", "labeler", "testdata", file))
	require.NoError(t, err)
	c.mu.Lock()
	c.body = b
	c.mu.Unlock()
}

// setIPs makes the census name real pods: the local member's address becomes self, the
// other members' the others, in member-id order.
func (c *census) setIPs(t *testing.T, self string, others ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var doc map[string]any
	require.NoError(t, json.Unmarshal(c.body, &doc))
	local := doc["local_member_id"].(string)
	for _, g := range doc["census_groups"].(map[string]any) {
		pop := g.(map[string]any)["population"].(map[string]any)
		i := 0
		for _, id := range slices.Sorted(maps.Keys(pop)) {
			sys := pop[id].(map[string]any)["sys"].(map[string]any)
			switch {
			case id == local:
				sys["ip"] = self
			case i < len(others):
				sys["ip"] = others[i]
				i++
			}
		}
	}
	b, err := json.Marshal(doc)
	require.NoError(t, err)
	c.body = b
}

func (c *census) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = w.Write(c.body)
}

func applyFile(t *testing.T, e *environment, path, ns string) {
	t.Helper()
	require.NoError(t, harness.ApplyFile(t.Context(), e.cluster.Config, path, ns))
}

// labelerPermissions installs deploy/'s labeler ClusterRole and policies and, in ns, the
// example's ServiceAccount habitat with its RoleBinding, as a user does.
func labelerPermissions(t *testing.T, e *environment, ns string) {
	t.Helper()
	applyFile(t, e, "deploy/labeler-rbac.yaml", "")
	applyFile(t, e, "deploy/labeler-policy.yaml", "")
	applyFile(t, e, "examples/labeler-rolebinding.yaml", ns) // ServiceAccount habitat + RoleBinding
}

// podToken is a service-account token bound to the pod, as the labeler's projected
// volume holds: it carries authentication.kubernetes.io/pod-name.
func podToken(t *testing.T, e *environment, pod *corev1.Pod) string {
	t.Helper()
	tr, err := e.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(t.Context(), pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return tr.Status.Token
}

func kubeconfigFor(t *testing.T, e *environment, token string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: e.cluster.Config.Host, CertificateAuthorityData: e.cluster.Config.CAData}
	cfg.AuthInfos["pod"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "pod"}
	cfg.CurrentContext = "local"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*cfg, path))
	return path
}

// runLabeler runs habring-labeler for pod with a token bound to it, reading a census
// gateway that serves file (switch it with set), and stops it (SIGTERM) when the test ends.
// Its process is returned through the census for tests that kill it.
func runLabeler(t *testing.T, e *environment, ns string, p *corev1.Pod, file string) *census {
	t.Helper()
	return runLabelerBinary(t, e, harness.LabelerBinary(e.binary), ns, p, file)
}

// runLabelerBinary is runLabeler with the labeler binary at path, and flags after the
// test's own (a flag given twice takes the last).
func runLabelerBinary(t *testing.T, e *environment, binary, ns string, p *corev1.Pod, file string, flags ...string) *census {
	t.Helper()
	c := &census{}
	c.set(t, file)
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	cmd := exec.Command(binary, "--kubeconfig="+kubeconfigFor(t, e, podToken(t, e, p)),
		"--gateway="+srv.URL, "--pod-name="+p.Name, "--namespace="+ns, "--ring=main", "--interval=200ms", "--stale-after=2s",
		"--lease-duration=3s", "--health-listen=127.0.0.1:0", "--log-format=text")
	cmd.Args = append(cmd.Args, flags...)
	log, err := os.Create(filepath.Join(e.dir, ns+"-"+p.Name+"-labeler.log"))
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	c.cmd = cmd
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = log.Close()
	})
	return c
}

// Labelers, one per ring pod with a token bound to that pod, read Supervisors whose
// census names one leader: redis-master's EndpointSlice holds exactly the leader; when
// the leadership moves, it follows. The ValidatingAdmissionPolicy from deploy/ lets a
// pod's credentials change only its own habitat.sh/role label.
func TestLabelersMoveTheLeaderService(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	ns := labelledRing(t, e, 3)
	master := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "redis-master", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "redis", contract.LabelRole: contract.RoleLeader},
			Ports: []corev1.ServicePort{{Name: "redis", Port: 6379}}}}
	_, err := e.client.CoreV1().Services(ns).Create(t.Context(), master, metav1.CreateOptions{})
	require.NoError(t, err)
	pods := readyPods(t, e, ns, "redis", 3, 2*time.Minute)

	gateways := map[string]*census{}
	for i, p := range pods {
		gateways[p.Name] = runLabeler(t, e, ns, &p, map[bool]string{true: "census_leader.json", false: "census_follower.json"}[i == 0])
	}

	leaderIPs := func() []string { return serviceAddresses(t, e, ns, "redis-master") }
	// The EndpointSlice controller's retries of a Service back off past a minute under the
	// suite's load (see ringMembers): the labels are checked on their own below, and the
	// Service gets three minutes.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, []string{pods[0].Status.PodIP}, leaderIPs(), "redis-master endpoints: want only redis-0")
	}, 3*time.Minute, 100*time.Millisecond)
	for i, want := range []string{contract.RoleLeader, contract.RoleFollower, contract.RoleFollower} {
		require.Eventually(t, func() bool {
			p, err := e.client.CoreV1().Pods(ns).Get(t.Context(), pods[i].Name, metav1.GetOptions{})
			return err == nil && p.Labels[contract.LabelRole] == want
		}, 30*time.Second, 100*time.Millisecond, "%s should be %s", pods[i].Name, want)
	}

	// The election moves to redis-1 (its census now names it leader; redis-0's names a
	// follower: in the examples, the follower file's local member is not the leader).
	start := time.Now()
	gateways["redis-0"].set(t, "census_follower.json")
	gateways["redis-1"].set(t, "census_leader.json")
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, []string{pods[1].Status.PodIP}, leaderIPs(), "redis-master endpoints: want only redis-1")
	}, 3*time.Minute, 50*time.Millisecond)
	t.Logf("redis-master followed the new leader in %s", time.Since(start).Round(10*time.Millisecond))

	// The policy: redis-1's own credentials.
	token := podToken(t, e, &pods[1])
	rc := rest.CopyConfig(e.cluster.Config)
	rc.BearerToken, rc.BearerTokenFile = token, ""
	as, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	patchOpts := metav1.PatchOptions{}
	mergePatch := func(name string, body map[string]any) error {
		b, _ := json.Marshal(body)
		_, err := as.CoreV1().Pods(ns).Patch(context.Background(), name, types.MergePatchType, b, patchOpts)
		return err
	}
	labels := func(kv map[string]string) map[string]any {
		return map[string]any{"metadata": map[string]any{"labels": kv}}
	}
	// The API server takes a new ValidatingAdmissionPolicy into force asynchronously: wait
	// for it with dry runs (they pass through admission and change nothing).
	patchOpts.DryRun = []string{metav1.DryRunAll}
	require.Eventually(t, func() bool {
		err := mergePatch("redis-0", labels(map[string]string{contract.LabelRole: contract.RoleLeader}))
		return apierrors.IsForbidden(err) || apierrors.IsInvalid(err)
	}, time.Minute, 200*time.Millisecond, "the labeler policy never took effect")
	patchOpts.DryRun = nil
	require.NoError(t, mergePatch("redis-1", labels(map[string]string{contract.LabelRole: contract.RoleLeader})), "own role label")
	// Clients without pod-bound credentials (a token with no extra at all: this admin's)
	// are not the policy's business.
	b, _ := json.Marshal(labels(map[string]string{"team": "storage"}))
	_, err = e.client.CoreV1().Pods(ns).Patch(t.Context(), "redis-0", types.MergePatchType, b, metav1.PatchOptions{})
	require.NoError(t, err, "an admin labelling a ring pod")
	// Another pod's leader label may be taken off (to none), nothing else: a pod of the
	// ring that never runs (no node), labelled leader by an admin.
	parked := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "parked", Namespace: ns,
		Labels: map[string]string{contract.LabelRing: "main", contract.LabelRole: contract.RoleLeader}},
		Spec: corev1.PodSpec{NodeName: "nowhere", Containers: []corev1.Container{{Name: "c", Image: "parked"}}}}
	_, err = e.client.CoreV1().Pods(ns).Create(t.Context(), parked, metav1.CreateOptions{})
	require.NoError(t, err)
	for _, role := range []string{contract.RoleFollower, ""} {
		err := mergePatch("parked", labels(map[string]string{contract.LabelRole: role}))
		require.True(t, apierrors.IsForbidden(err) || apierrors.IsInvalid(err), "another pod's leader label to %q: want denied, got %v", role, err)
	}
	require.NoError(t, mergePatch("parked", labels(map[string]string{contract.LabelRole: contract.RoleNone})), "another pod's leader label off")
	require.NoError(t, e.client.CoreV1().Pods(ns).Delete(t.Context(), "parked", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	for name, tc := range map[string]struct {
		pod  string
		body map[string]any
	}{
		"another pod's role":     {pod: "redis-0", body: labels(map[string]string{contract.LabelRole: contract.RoleLeader})},
		"another pod's role off": {pod: "redis-0", body: labels(map[string]string{contract.LabelRole: contract.RoleNone})},
		"another label":          {pod: "redis-1", body: labels(map[string]string{"app": "hijacked"})},
		"an annotation":          {pod: "redis-1", body: map[string]any{"metadata": map[string]any{"annotations": map[string]string{"x": "y"}}}},
		"the spec":               {pod: "redis-1", body: map[string]any{"spec": map[string]any{"activeDeadlineSeconds": 5}}},
	} {
		err := mergePatch(tc.pod, tc.body)
		require.True(t, apierrors.IsForbidden(err) || apierrors.IsInvalid(err), "%s: want denied, got %v", name, err)
		t.Logf("denied %s: %v", name, err)
	}
}

// Fencing, against the real API server with pod-bound tokens and deploy/'s RBAC and
// policies: two Supervisors both claim the group (both censuses name their own member
// leader). At no instant do two pods carry the leader label (a watch sees every change).
// The labelled leader's labeler is killed (SIGKILL, its label left behind): once the dead
// one's Lease runs out, the other pod's labeler takes that label off (the policy lets a
// pod take another's leader label off, nothing else) and labels its own pod; never before.
func TestLabelersFenceTheLeader(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	ns := labelledRing(t, e, 2)
	pods := readyPods(t, e, ns, "redis", 2, 2*time.Minute)

	other := requireFencedHandover(t, e, ns, pods, [2]string{harness.LabelerBinary(e.binary), harness.LabelerBinary(e.binary)})

	// The Lease policy: a pod's credentials hold habring Leases only as the pod itself.
	survivor, err := e.client.CoreV1().Pods(ns).Get(t.Context(), other, metav1.GetOptions{})
	require.NoError(t, err)
	// kubectl describe pod says so, from the labeler itself (with the pod's own token).
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Contains(c, described(c, e, survivor),
			"Normal HabringLeader (habring-labeler): labelled leader of service group redis.default, holding the Lease habring-main-redis.default")
	}, 10*time.Second, 100*time.Millisecond)
	rc := rest.CopyConfig(e.cluster.Config)
	rc.BearerToken, rc.BearerTokenFile = podToken(t, e, survivor), ""
	as, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	leaseAs := func(name, holder string, dryRun bool) error {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder)}}
		opts := metav1.CreateOptions{}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		_, err := as.CoordinationV1().Leases(ns).Create(t.Context(), l, opts)
		return err
	}
	require.Eventually(t, func() bool { return apierrors.IsForbidden(leaseAs("not-habring", other, true)) }, time.Minute, 200*time.Millisecond,
		"the Lease policy never took effect")
	require.NoError(t, leaseAs("habring-main-web.default", other, true), "a habring Lease held by the pod itself")
	err = leaseAs("habring-main-web.default", "someone-else", true)
	require.True(t, apierrors.IsForbidden(err), "a Lease held in another's name: %v", err)
	t.Logf("denied: %v", err)
}

// requireFencedHandover runs the labelers binaries[i] for pods[i], both told their
// Supervisor leads, pods[0]'s first: pods[0] is labelled leader and stays the one while
// both claim, then its labeler is killed and pods[1]'s takes over once the Lease runs out,
// never two at once. It returns the pod labelled leader at the end.
func requireFencedHandover(t *testing.T, e *environment, ns string, pods []corev1.Pod, binaries [2]string) string {
	t.Helper()
	// Every change of a ring pod's labels, in order: how many pods are labelled leader.
	w, err := e.client.CoreV1().Pods(ns).Watch(t.Context(), metav1.ListOptions{LabelSelector: "app=redis", ResourceVersion: pods[1].ResourceVersion})
	require.NoError(t, err)
	defer w.Stop()
	var mu sync.Mutex
	leaders, most := map[string]bool{}, 0
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			mu.Lock()
			leaders[p.Name] = ev.Type != watch.Deleted && p.Labels[contract.LabelRole] == contract.RoleLeader
			n := 0
			for _, l := range leaders {
				if l {
					n++
				}
			}
			most = max(most, n)
			mu.Unlock()
		}
	}()
	labelled := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for name, l := range leaders {
			if l {
				out = append(out, name)
			}
		}
		slices.Sort(out)
		return out
	}

	// Both claim; pods[0]'s labeler starts first and is labelled, then pods[1]'s.
	labelers := map[string]*census{}
	for i, p := range pods {
		labelers[p.Name] = runLabelerBinary(t, e, binaries[i], ns, &p, "census_leader.json")
		labelers[p.Name].setIPs(t, p.Status.PodIP, pods[1-i].Status.PodIP)
		if i == 0 {
			require.Eventually(t, func() bool { return slices.Equal(labelled(), []string{p.Name}) }, time.Minute, 50*time.Millisecond,
				"%s, its labeler alone, never labelled leader", p.Name)
		}
	}
	time.Sleep(3 * time.Second) // both keep claiming, renewing, re-reading
	require.Len(t, labelled(), 1, "both claimed: %v", labelled())
	first := labelled()[0]
	lease, err := e.client.CoordinationV1().Leases(ns).Get(t.Context(), "habring-main-redis.default", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, first, *lease.Spec.HolderIdentity, "the labelled pod holds the Lease")

	require.NoError(t, labelers[first].cmd.Process.Kill(), "SIGKILL the leader's labeler: its label stays")
	start := time.Now()
	other := pods[0].Name
	if other == first {
		other = pods[1].Name
	}
	// Its Lease (3 s) runs out; the other pod's labeler, holding it then, takes the dead
	// one's label off and labels its own pod, in that order.
	require.Eventually(t, func() bool { return slices.Equal(labelled(), []string{other}) }, 30*time.Second, 50*time.Millisecond,
		"%s never labelled leader (labelled: %v)", other, labelled())
	took := time.Since(start)
	require.GreaterOrEqual(t, took, 2*time.Second, "labelled before the dead labeler's Lease (3 s, renewed every 0.5 s) ran out")
	t.Logf("leader's labeler killed: its label taken off and %s labelled leader %s later", other, took.Round(10*time.Millisecond))
	dead, err := e.client.CoreV1().Pods(ns).Get(t.Context(), first, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, contract.RoleNone, dead.Labels[contract.LabelRole], "the dead labeler's pod")
	mu.Lock()
	require.Equal(t, 1, most, "two pods were labelled leader at once")
	mu.Unlock()

	return other
}

// labelledRing makes a namespace with the labelers' RBAC and policies and a StatefulSet
// redis of n pods in ring main, run by the service account habitat (bound to the
// labeler's role), and returns the namespace.
func labelledRing(t *testing.T, e *environment, n int32) string {
	t.Helper()
	ns := namespace(t, e, true)
	labelerPermissions(t, e, ns)
	ringService(t, e, ns, "redis", "main")
	sts := statefulSet(ns, "redis", n, map[string]string{contract.AnnotationRing: "main", contract.AnnotationTopology: "leader"})
	sts.Spec.Template.Spec.ServiceAccountName = "habitat"
	_, err := e.client.AppsV1().StatefulSets(ns).Create(t.Context(), sts, metav1.CreateOptions{})
	require.NoError(t, err)
	return ns
}

// lastOwnClient is the last revision whose labeler had an API client and elector of its
// own (labeler/kube), before client-go's: the labelers of the rings that run while
// habring is upgraded past it.
const lastOwnClient = "b6edaff"

// A labeler of lastOwnClient and one of this tree contend for one Lease, as a ring's pods
// do while habring is upgraded: whichever holds it, never two leaders, and the Lease
// passes from either to the other when its holder dies.
func TestOldAndNewLabelersShareTheLease(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	old := buildAt(t, e, lastOwnClient, "./cmd/habring-labeler")
	current := harness.LabelerBinary(e.binary)
	for name, binaries := range map[string][2]string{"old to new": {old, current}, "new to old": {current, old}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := labelledRing(t, e, 2)
			pods := readyPods(t, e, ns, "redis", 2, 2*time.Minute)
			t.Logf("%s: %s labelled leader at the end", name, requireFencedHandover(t, e, ns, pods, binaries))
		})
	}
}

// buildAt builds the package pkg as it was at revision rev of this repository, static and
// stripped as the image holds it, and returns the binary's path.
func buildAt(t *testing.T, e *environment, rev, pkg string) string {
	t.Helper()
	root := harness.RepoRoot()
	wt := filepath.Join(t.TempDir(), "src")
	out := filepath.Join(e.dir, "labeler-"+rev)
	git := exec.Command("git", "-C", root, "worktree", "add", "--detach", wt, rev)
	b, err := git.CombinedOutput()
	require.NoError(t, err, "git worktree add %s (the test needs this repository's history back to %s: clone without --depth): %s", rev, rev, b)
	t.Cleanup(func() { _ = exec.Command("git", "-C", root, "worktree", "remove", "--force", wt).Run() })
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o", out, pkg)
	build.Dir, build.Env = wt, append(os.Environ(), "CGO_ENABLED=0")
	b, err = build.CombinedOutput()
	require.NoError(t, err, "build %s at %s: %s", pkg, rev, b)
	return out
}
