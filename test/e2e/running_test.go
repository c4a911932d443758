package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/test/harness"
	"github.com/habring/habring/test/supervisor"
)

// requireOneRing waits until every pod's Supervisor holds exactly these pods alive: one
// ring, seen the same from everywhere.
func requireOneRing(t *testing.T, pods []corev1.Pod, timeout time.Duration) {
	t.Helper()
	want := make([]string, 0, len(pods))
	for _, p := range pods {
		want = append(want, p.Status.PodIP)
	}
	slices.Sort(want)
	start := time.Now()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for _, p := range pods {
			view, err := harness.RingView(t.Context(), p.Status.PodIP)
			require.NoError(c, err, "pod %s", p.Name)
			assert.Equal(c, want, view, "the alive members pod %s's Supervisor sees", p.Name)
		}
	}, timeout, 250*time.Millisecond)
	t.Logf("one ring of %d members, seen alike by every member, %s after the pods were ready", len(pods), time.Since(start).Round(time.Millisecond))
}

// requireOneLeader waits until exactly one of the app's pods is labelled leader and the rest
// follower, the leader's own Supervisor says it is the group's leader, and the Service
// selecting the leader holds exactly its address. It returns the leader.
func requireOneLeader(t *testing.T, e *environment, ns, app, leaderService string, n int, timeout time.Duration) corev1.Pod {
	t.Helper()
	var leader corev1.Pod
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		list, err := e.client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=" + app})
		require.NoError(c, err)
		roles := map[string][]string{}
		var leaders []corev1.Pod
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			role := p.Labels[contract.LabelRole]
			roles[role] = append(roles[role], p.Name)
			if role == contract.RoleLeader {
				leaders = append(leaders, p)
			}
		}
		require.Len(c, leaders, 1, "pods by role: %v", roles)
		assert.Len(c, roles[contract.RoleFollower], n-1, "pods by role: %v", roles)
		leader = leaders[0]
		census, err := harness.Gateway[supervisor.Census](t.Context(), leader.Status.PodIP, "/census")
		require.NoError(c, err)
		group := census.CensusGroups[app+".default"]
		require.NotNil(c, group.LeaderID, "census of %s: no leader", leader.Name)
		assert.Equal(c, census.LocalMemberID, *group.LeaderID, "the labelled leader %s is its Supervisor's elected leader", leader.Name)
		assert.Equal(c, []string{leader.Status.PodIP}, serviceAddresses(t, e, ns, leaderService), "%s holds the leader", leaderService)
	}, timeout, 100*time.Millisecond)
	return leader
}

// serviceAddresses lists the ready addresses of a Service's EndpointSlices.
func serviceAddresses(t *testing.T, e *environment, ns, svc string) []string {
	list, err := e.client.DiscoveryV1().EndpointSlices(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
	if err != nil {
		return []string{err.Error()}
	}
	out := []string{}
	for _, s := range list.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				out = append(out, ep.Addresses...)
			}
		}
	}
	slices.Sort(out)
	return out
}

// examples/ring.yaml, applied as its comments say, runs the HA Redis: the bastion
// StatefulSet and the redis Deployment form ONE ring, exactly one redis pod is labelled
// leader and redis-master holds exactly it; its Redis (the real redis-server, run by the
// Supervisor double from examples/redis) is the master and the others replicate it, so a
// write through redis-master is read back from both replicas. Deleting the leader pod
// moves the label, the Service and the master: the new leader's Redis becomes master with
// the data, the other follows it, and the pod that replaces the deleted one replicates it.
func TestExampleRingRuns(t *testing.T) {
	e := requireEnv(t)
	ns := runningNamespace(t, e)
	require.NoError(t, harness.RedisSupported(), "the example's pods run redis-server")
	t.Parallel()
	labelerPermissions(t, e, ns)
	password, err := harness.ExampleSecrets(t.Context(), e.client, ns)
	require.NoError(t, err)
	applyFile(t, e, "examples/ring.yaml", ns)

	bastion := readyPods(t, e, ns, "hab-bastion", 3, 3*time.Minute)
	redis := readyPods(t, e, ns, "redis", 3, 3*time.Minute)
	for _, p := range append(slices.Clone(bastion), redis...) {
		requireInjected(t, &p)
	}
	requireOneRing(t, append(slices.Clone(bastion), redis...), 2*time.Minute)
	leader := requireOneLeader(t, e, ns, "redis", "redis-master", 3, 2*time.Minute)
	t.Logf("leader %s (%s); roles and redis-master agree", leader.Name, leader.Status.PodIP)
	requireReplication(t, e, ns, leader, password, 3, time.Minute)

	// A write through redis-master, read back from both replicas.
	master := serviceAddresses(t, e, ns, "redis-master")
	require.Len(t, master, 1)
	c := harness.Redis(master[0], password)
	defer func() { _ = c.Close() }()
	require.NoError(t, c.Set(t.Context(), "habring:e2e", "written through redis-master", 0).Err())
	n, err := c.Wait(t.Context(), 2, 5*time.Second).Result()
	require.NoError(t, err)
	require.EqualValues(t, 2, n, "both replicas acknowledged the write")
	for _, p := range redis {
		if p.Name != leader.Name {
			requireValue(t, p.Status.PodIP, password, "habring:e2e", "written through redis-master")
		}
	}

	start := time.Now()
	require.NoError(t, e.client.CoreV1().Pods(ns).Delete(t.Context(), leader.Name, metav1.DeleteOptions{}))
	var moved corev1.Pod
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		moved = requireOneLeaderNow(c, t, e, ns, leader.Name)
		role, err := harness.Role(t.Context(), moved.Status.PodIP, password)
		require.NoError(c, err)
		require.Equal(c, "master", role.Role, "the new leader's Redis")
	}, 2*time.Minute, 100*time.Millisecond)
	t.Logf("leader pod %s deleted: %s labelled leader, alone in redis-master and its Redis master %s later", leader.Name, moved.Name,
		time.Since(start).Round(time.Millisecond))
	requireValue(t, moved.Status.PodIP, password, "habring:e2e", "written through redis-master")
	// The deleted leader's Redis stopped taking writes (examples/ring.yaml's preStop) before
	// its Supervisor departed and the ring elected the new one.
	logs, err := e.runner.Logs(ns, leader.Name, "redis")
	require.NoError(t, err)
	require.Regexp(t, `(?s)runner: preStop .*CLIENT PAUSE.*\nOK\n--- runner: preStop hook done`, string(logs))
	redis = readyPods(t, e, ns, "redis", 3, 3*time.Minute)
	requireOneRing(t, append(slices.Clone(bastion), redis...), 2*time.Minute)
	leader = requireOneLeader(t, e, ns, "redis", "redis-master", 3, 2*time.Minute)
	require.Equal(t, moved.Name, leader.Name)
	requireReplication(t, e, ns, leader, password, 3, 2*time.Minute)
	t.Logf("the replacement pod replicates the new master %s after the delete", time.Since(start).Round(time.Millisecond))
	for _, p := range redis {
		requireValue(t, p.Status.PodIP, password, "habring:e2e", "written through redis-master")
	}
}

// requireReplication waits until the leader's Redis is a master with n-1 replicas and
// every other ready redis pod's Redis is a connected replica of it.
func requireReplication(t *testing.T, e *environment, ns string, leader corev1.Pod, password string, n int, timeout time.Duration) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		role, err := harness.Role(t.Context(), leader.Status.PodIP, password)
		require.NoError(c, err)
		require.Equal(c, "master", role.Role, "leader %s", leader.Name)
		assert.Len(c, role.Replicas, n-1, "replicas of the master")
		list, err := e.client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=redis"})
		require.NoError(c, err)
		for _, p := range list.Items {
			if p.Name == leader.Name || p.DeletionTimestamp != nil || !harness.PodReady(&p) {
				continue
			}
			r, err := harness.Role(t.Context(), p.Status.PodIP, password)
			require.NoError(c, err, "pod %s", p.Name)
			assert.Equal(c, "slave", r.Role, "pod %s", p.Name)
			assert.Equal(c, leader.Status.PodIP+":6379", r.Master, "pod %s replicates the leader", p.Name)
			assert.Equal(c, "connected", r.Link, "pod %s", p.Name)
		}
	}, timeout, 200*time.Millisecond)
}

// requireValue reads key from the Redis at ip and wants value.
func requireValue(t *testing.T, ip, password, key, value string) {
	t.Helper()
	c := harness.Redis(ip, password)
	defer func() { _ = c.Close() }()
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		got, err := c.Get(t.Context(), key).Result()
		require.NoError(ct, err, "GET %s at %s", key, ip)
		assert.Equal(ct, value, got, "at %s", ip)
	}, 10*time.Second, 100*time.Millisecond)
}

// requireOneLeaderNow checks once that a pod other than old is the only one labelled
// leader and redis-master holds just it.
func requireOneLeaderNow(c *assert.CollectT, t *testing.T, e *environment, ns, old string) corev1.Pod {
	list, err := e.client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=redis," + contract.LabelRole + "=" + contract.RoleLeader})
	require.NoError(c, err)
	var names []string
	for _, p := range list.Items {
		names = append(names, p.Name)
	}
	require.Len(c, list.Items, 1, "pods labelled leader: %v", names)
	p := list.Items[0]
	require.NotEqual(c, old, p.Name, "the deleted pod still holds the label")
	require.Equal(c, []string{p.Status.PodIP}, serviceAddresses(t, e, ns, "redis-master"))
	return p
}

// A Deployment created before its bootstrap StatefulSet: its pods are denied while the ring
// has nothing to peer with, then created by their ReplicaSet once the StatefulSet's pod 0
// is ready, and everything ends in one ring.
func TestDeploymentBeforeStatefulSetRunsOneRing(t *testing.T) {
	e := requireEnv(t)
	ns := runningNamespace(t, e)
	t.Parallel()
	ringService(t, e, ns, "bastion", "main")
	dep, err := e.client.AppsV1().Deployments(ns).Create(t.Context(), deployment(ns, "web", 3, ring("main")), metav1.CreateOptions{})
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.True(c, slices.ContainsFunc(events(t, e, ns, "ReplicaSet"), func(ev string) bool {
			return strings.Contains(ev, "FailedCreate") && strings.Contains(ev, "no live member")
		}), "the ReplicaSet's pods are denied while the ring has no member")
		// kubectl describe deployment web says so, from habring itself.
		assert.True(c, slices.ContainsFunc(described(c, e, dep), func(ev string) bool {
			return strings.HasPrefix(ev, "Warning HabringDenied (habring-webhook): denied pod web-") &&
				strings.Contains(ev, "until its ring is up: ") && strings.Contains(ev, "no live member")
		}), "kubectl describe deployment web: %v", described(c, e, dep))
	}, time.Minute, 200*time.Millisecond)
	list, err := e.client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=web"})
	require.NoError(t, err)
	require.Empty(t, list.Items, "no pod of web may start a ring of its own")

	start := time.Now()
	sts, err := e.client.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "bastion", 2, ring("main")), metav1.CreateOptions{})
	require.NoError(t, err)
	bastion := readyPods(t, e, ns, "bastion", 2, 3*time.Minute)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Contains(c, described(c, e, sts), `Normal HabringBootstrap (habring-webhook): admitted pod bastion-0 with no peers: it starts ring "main" alone `+
			`(bootstrap: ordinal 0 of StatefulSet bastion with no live member starts the ring)`)
	}, 10*time.Second, 200*time.Millisecond)
	web := readyPods(t, e, ns, "web", 3, 5*time.Minute)
	t.Logf("StatefulSet created: its 2 pods and the Deployment's 3 running %s later", time.Since(start).Round(time.Millisecond))
	requireOneRing(t, append(bastion, web...), 2*time.Minute)
}

// Watch-file mode: the Supervisor container of the ring's pod 0 is killed and restarted in
// place, with a fresh file system (a new member id) and the same args. In args mode pod 0
// has no --peer and would start a ring of its own; here it reads the peer file the labeler
// keeps full of live members, and rejoins the same ring.
func TestWatchFileMemberRestartedInPlaceRejoins(t *testing.T) {
	e := requireEnv(t)
	ns := runningNamespace(t, e)
	t.Parallel()
	labelerPermissions(t, e, ns)
	ringService(t, e, ns, "redis", "main")
	sts := statefulSet(ns, "redis", 3, map[string]string{contract.AnnotationRing: "main", contract.AnnotationTopology: "leader",
		contract.AnnotationPeerMode: contract.PeerModeWatchFile})
	sts.Spec.Template.Spec.ServiceAccountName = "habitat"
	_, err := e.client.AppsV1().StatefulSets(ns).Create(t.Context(), sts, metav1.CreateOptions{})
	require.NoError(t, err)
	pods := readyPods(t, e, ns, "redis", 3, 3*time.Minute)
	requireOneRing(t, pods, 2*time.Minute)
	before, err := harness.Gateway[supervisor.Census](t.Context(), pods[0].Status.PodIP, "/census")
	require.NoError(t, err)

	start := time.Now()
	require.NoError(t, e.runner.Kill(ns, "redis-0", "redis"), "crash redis-0's Supervisor")
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		p, err := e.client.CoreV1().Pods(ns).Get(t.Context(), "redis-0", metav1.GetOptions{})
		require.NoError(c, err)
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Name == "redis" {
				assert.Equal(c, int32(1), cs.RestartCount)
				assert.NotNil(c, cs.State.Running)
			}
		}
	}, time.Minute, 100*time.Millisecond)
	var after supervisor.Census
	require.EventuallyWithT(t, func(c *assert.CollectT) { // running: its gateway listens a moment later
		after, err = harness.Gateway[supervisor.Census](t.Context(), pods[0].Status.PodIP, "/census")
		require.NoError(c, err)
	}, 30*time.Second, 100*time.Millisecond)
	require.NotEqual(t, before.LocalMemberID, after.LocalMemberID, "the restarted container is a new member (fresh file system)")
	requireOneRing(t, pods, 2*time.Minute)
	t.Logf("redis-0's Supervisor killed: restarted and back in the one ring %s later", time.Since(start).Round(time.Millisecond))
}

// The ring-joined readiness gate (habitat.sh/readiness-gate: ring-joined) on a running
// ring: each pod turns Ready only once its labeler saw its Supervisor join, and a rolling
// update whose new pod cannot join (another ring key) waits, the old pods kept serving.
func TestRingJoinedGateHoldsARollingUpdate(t *testing.T) {
	e := requireEnv(t)
	ns := runningNamespace(t, e)
	t.Parallel()
	labelerPermissions(t, e, ns)
	ringService(t, e, ns, "hab", "main")
	_, err := e.client.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "hab", 1, ring("main")), metav1.CreateOptions{})
	require.NoError(t, err)
	web := deployment(ns, "web", 2, map[string]string{contract.AnnotationRing: "main", contract.AnnotationReadinessGate: contract.ReadinessGateRingJoined})
	web.Spec.Template.Spec.ServiceAccountName = "habitat"
	web.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
		MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1))}}
	_, err = e.client.AppsV1().Deployments(ns).Create(t.Context(), web, metav1.CreateOptions{})
	require.NoError(t, err)
	pods := readyPods(t, e, ns, "web", 2, 3*time.Minute)
	for _, p := range pods {
		require.Contains(t, p.Spec.ReadinessGates, corev1.PodReadinessGate{ConditionType: contract.ConditionRingJoined})
		joined, ready := condition(&p, contract.ConditionRingJoined), condition(&p, string(corev1.PodReady))
		require.NotNil(t, joined, "pod %s has no ring-joined condition", p.Name)
		require.Equal(t, corev1.ConditionTrue, joined.Status)
		require.Equal(t, "Joined", joined.Reason)
		require.False(t, ready.LastTransitionTime.Before(&joined.LastTransitionTime), "pod %s Ready before it joined", p.Name)
	}

	// A new template that cannot join: the ring's members have no key, it has one.
	key := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other-key", Namespace: ns}, StringData: map[string]string{"ring-key": "SYM-SEC-1\nother-1\n\nb3RoZXI="}}
	_, err = e.client.CoreV1().Secrets(ns).Create(t.Context(), key, metav1.CreateOptions{})
	require.NoError(t, err)
	d, err := e.client.AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	d.Spec.Template.Annotations = map[string]string{contract.AnnotationRingKeySecret: "other-key"}
	_, err = e.client.AppsV1().Deployments(ns).Update(t.Context(), d, metav1.UpdateOptions{})
	require.NoError(t, err)
	var stuck corev1.Pod
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		list, err := e.client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=web"})
		require.NoError(c, err)
		var fresh []corev1.Pod
		for _, p := range list.Items {
			if p.Annotations[contract.AnnotationRingKeySecret] == "other-key" {
				fresh = append(fresh, p)
			}
		}
		require.Len(c, fresh, 1, "one new pod (maxSurge 1)")
		joined := condition(&fresh[0], contract.ConditionRingJoined)
		require.NotNil(c, joined)
		assert.Equal(c, corev1.ConditionFalse, joined.Status)
		assert.Equal(c, "Alone", joined.Reason)
		stuck = fresh[0]
	}, 2*time.Minute, 200*time.Millisecond)
	time.Sleep(5 * time.Second) // the rollout does not move on
	d, err = e.client.AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	require.EqualValues(t, 1, d.Status.UpdatedReplicas, "the rollout went past a pod that has not joined")
	require.EqualValues(t, 2, d.Status.AvailableReplicas, "the old pods keep serving")
	p, err := e.client.CoreV1().Pods(ns).Get(t.Context(), stuck.Name, metav1.GetOptions{})
	require.NoError(t, err)
	require.False(t, harness.PodReady(p), "pod %s is Ready without having joined", p.Name)
	t.Logf("rollout held: %s is %s (%s)", p.Name, condition(p, contract.ConditionRingJoined).Reason, condition(p, contract.ConditionRingJoined).Message)
}

func condition(p *corev1.Pod, t string) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if string(p.Status.Conditions[i].Type) == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}
