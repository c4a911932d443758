package helm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/kube"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/test/harness"
)

// previousRelease is the tree the upgrade starts from: the last release's. habring has no
// tagged releases yet; this is the last landed tree before the Lease watch, whose
// labelers hold 15-second Leases they cannot watch and whose ClusterRole lacks
// list/watch on Leases, so that the upgrade runs two labeler versions in one service
// group. Move it to the last release when one is cut.
const previousRelease = "81d237060b46d0f633c04b67b3a502523cfb9a75"

// TestUpgrade installs the previous release's chart with its own images, runs the example
// ring on it, and upgrades to this chart while pods are admitted (a dry-run create of a
// ring pod every 100 ms; a follower deleted mid-rollout and created again through
// whichever webhook answers). From before the upgrade to after a failover in a service
// group whose labelers are of both releases (the leader, of the previous one, deleted): no
// admission fails and no two pods are ever labelled leader (sampled every 200 ms); the
// failover elects and labels one leader, and `habring check` passes. Then `helm
// uninstall`: the ring keeps running, its labels, Leases and RoleBinding stay until
// README's cleanup removes them, and a pod created then is not injected.
func TestUpgrade(t *testing.T) {
	var prev *harness.PreviousRelease
	e := start(t, func(ctx context.Context, dir string) map[string]string {
		start := time.Now()
		p, err := harness.BuildPrevious(ctx, previousRelease, dir)
		if errors.Is(err, harness.ErrShallow) {
			t.Skip(err)
		}
		require.NoError(t, err)
		t.Logf("previous release %s extracted and built in %s", previousRelease[:7], time.Since(start).Round(time.Second))
		prev = p
		return map[string]string{"previous": p.Habring}
	})
	ctx, client := e.ctx, e.client
	oldChart, err := loader.LoadDir(prev.Chart)
	require.NoError(t, err)
	in := action.NewInstall(e.helm(t))
	in.ReleaseName, in.Namespace = release, releaseNS
	in.WaitStrategy, in.Timeout = kube.StatusWatcherStrategy, 3*time.Minute
	_, err = in.RunWithContext(ctx, oldChart, e.values(t, "previous"))
	e.explainFailure(t, err, "helm install of the previous chart")

	e.ring(t)
	leader := e.waitRing(t, "")
	t.Logf("the ring runs on the previous release, %s labelled leader", leader)

	// Admissions throughout: a dry run goes through the webhook as a create does, and
	// creates nothing (the webhook's sideEffects: NoneOnDryRun).
	sts, err := client.AppsV1().StatefulSets("shop").Get(ctx, "hab-bastion", metav1.GetOptions{})
	require.NoError(t, err)
	probe := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hab-bastion-7", Namespace: "shop",
		Labels: sts.Spec.Template.Labels, Annotations: sts.Spec.Template.Annotations,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: sts.Name, UID: sts.UID, Controller: ptr.To(true)}}},
		Spec: sts.Spec.Template.Spec}
	admit := func() error {
		p, err := client.CoreV1().Pods("shop").Create(ctx, probe.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return err
		}
		if p.Annotations[contract.AnnotationStatus] != contract.StatusInjected {
			return fmt.Errorf("admitted without %s: %s", contract.AnnotationStatus, contract.StatusInjected)
		}
		return nil
	}
	require.NoError(t, admit())
	var admitted, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	leaders := map[int]int{} // pods labelled leader in a sample → samples
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for tick := time.Tick(100 * time.Millisecond); ; {
			select {
			case <-stop:
				return
			case <-tick:
			}
			if err := admit(); err != nil {
				failed.Add(1)
				mu.Lock()
				failures = append(failures, time.Now().Format(time.TimeOnly)+" "+err.Error())
				mu.Unlock()
				continue
			}
			admitted.Add(1)
		}
	})
	wg.Go(func() {
		for tick := time.Tick(200 * time.Millisecond); ; {
			select {
			case <-stop:
				return
			case <-tick:
			}
			list, err := client.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: contract.LabelRole + "=" + contract.RoleLeader})
			if err == nil {
				mu.Lock()
				leaders[len(list.Items)]++
				mu.Unlock()
			}
		}
	})
	stopLoad := func() {
		close(stop)
		wg.Wait()
	}
	defer func() {
		select {
		case <-stop:
		default:
			stopLoad()
		}
	}()

	// Upgrade to this chart and its images; mid-rollout a follower is deleted, and its
	// ReplicaSet creates it again through whichever webhook answers then.
	follower := e.follower(t, leader)
	up := action.NewUpgrade(e.helm(t))
	up.Namespace, up.WaitStrategy, up.Timeout = releaseNS, kube.StatusWatcherStrategy, 3*time.Minute
	deleted := make(chan error, 1)
	go func() {
		time.Sleep(time.Second)
		deleted <- client.CoreV1().Pods("shop").Delete(ctx, follower, metav1.DeleteOptions{})
	}()
	begin := time.Now()
	_, err = up.RunWithContext(ctx, release, loadChart(t), e.values(t, "local"))
	e.explainFailure(t, err, "helm upgrade to this chart")
	require.NoError(t, <-deleted)
	t.Logf("helm upgrade --wait: %s", time.Since(begin).Round(time.Millisecond))
	leader = e.waitRing(t, "")
	t.Logf("admissions until the ring is whole again: %d admitted, %d failed", admitted.Load(), failed.Load())

	// The webhook runs this release; the ring pods the upgrade did not touch keep the
	// previous labeler, the recreated one runs this one.
	hooks, err := client.CoreV1().Pods(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=habring"})
	require.NoError(t, err)
	for _, p := range hooks.Items {
		if p.DeletionTimestamp == nil {
			require.Equal(t, harness.LabelerImageRepo+":local", p.Spec.Containers[0].Image, p.Name)
		}
	}
	t.Logf("labeler images of the redis pods after the upgrade: %v", e.labelerImages(t))
	// A follower created now gets this release's labeler, beside the previous one's.
	require.NoError(t, client.CoreV1().Pods("shop").Delete(ctx, e.follower(t, leader), metav1.DeleteOptions{}))
	require.Equal(t, leader, e.waitRing(t, ""), "a follower's delete leaves the leader label where it is")
	byImage := e.labelerImages(t)
	t.Logf("labeler images of the redis pods: %v", byImage)
	require.NotEmpty(t, byImage[harness.LabelerImageRepo+":previous"], "pods the upgrade did not touch")
	require.Len(t, byImage[harness.LabelerImageRepo+":local"], 1, "the follower created after the upgrade")

	// A failover with both labeler versions in the group: one leader elected and labelled.
	require.NoError(t, client.CoreV1().Pods("shop").Delete(ctx, leader, metav1.DeleteOptions{}))
	next := e.waitRing(t, leader)
	t.Logf("leader %s deleted: %s labelled leader (labelers: %v)", leader, next, e.labelerImages(t))
	stopLoad()
	mu.Lock()
	t.Logf("admissions from before the upgrade to after the failover: %d admitted, %d failed; pods labelled leader per sample: %v",
		admitted.Load(), failed.Load(), leaders)
	require.Empty(t, failures, "failed admissions")
	for n := range leaders {
		require.LessOrEqual(t, n, 1, "samples with %d pods labelled leader: %v", n, leaders)
	}
	mu.Unlock()
	require.Greater(t, admitted.Load(), int64(100))
	out, code := e.checker(t)("--wait=1m")
	require.Equal(t, 0, code, out)

	// Uninstall: what runs and what is left.
	un := action.NewUninstall(e.helm(t))
	un.WaitStrategy, un.Timeout = kube.StatusWatcherStrategy, 2*time.Minute
	_, err = un.Run(release)
	require.NoError(t, err)
	_, err = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, release, metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "webhook configuration removed: %v", err)
	_, err = client.RbacV1().ClusterRoles().Get(ctx, release+"-labeler", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "labeler ClusterRole removed: %v", err)
	out, code = e.checker(t)()
	require.Equal(t, 1, code)
	require.Contains(t, out, "habring is not installed")
	// A Lease term and more later: the ring still runs, the label where it was.
	time.Sleep(25 * time.Second)
	require.Equal(t, next, e.waitRing(t, ""), "the leader label stays where it was")
	p, err := client.CoreV1().Pods("shop").Create(ctx, probe.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	require.NoError(t, err)
	require.Empty(t, p.Annotations[contract.AnnotationStatus], "a pod created after the uninstall is not injected")
	left := e.leftovers(t)
	t.Logf("left after helm uninstall: %v", left)
	require.NotEmpty(t, left["leases"])
	require.Equal(t, []string{"habring-labeler"}, left["rolebindings"])
	require.Equal(t, []string{next}, left["labelled"])

	// README's cleanup, as client-go calls.
	require.NoError(t, client.RbacV1().RoleBindings("shop").Delete(ctx, "habring-labeler", metav1.DeleteOptions{}))
	for _, l := range left["leases"] {
		require.NoError(t, client.CoordinationV1().Leases("shop").Delete(ctx, l, metav1.DeleteOptions{}))
	}
	for _, name := range left["roles"] {
		_, err := client.CoreV1().Pods("shop").Patch(ctx, name, types.JSONPatchType,
			[]byte(`[{"op":"remove","path":"/metadata/labels/habitat.sh~1role"}]`), metav1.PatchOptions{})
		require.NoError(t, err)
	}
	left = e.leftovers(t)
	require.Empty(t, left["leases"])
	require.Empty(t, left["rolebindings"])
	require.Empty(t, left["roles"])
}

// waitRing waits for the example ring's six pods ready and injected, one redis pod
// labelled leader and not gone; it returns that pod.
func (e *env) waitRing(t *testing.T, gone string) string {
	var leader string
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		list, err := e.client.CoreV1().Pods("shop").List(e.ctx, metav1.ListOptions{LabelSelector: contract.LabelRing + "=main"})
		require.NoError(ct, err)
		var leaders, live []string
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			live = append(live, p.Name)
			require.True(ct, harness.PodReady(&p), "pod %s ready", p.Name)
			if p.Labels[contract.LabelRole] == contract.RoleLeader {
				leaders = append(leaders, p.Name)
			}
		}
		require.Len(ct, live, 6)
		require.Len(ct, leaders, 1, "pods labelled leader")
		require.NotEqual(ct, gone, leaders[0])
		leader = leaders[0]
	}, 3*time.Minute, time.Second, "the example ring runs, one redis pod labelled leader")
	return leader
}

// follower is a redis pod that is not leader.
func (e *env) follower(t *testing.T, leader string) string {
	list, err := e.client.CoreV1().Pods("shop").List(e.ctx, metav1.ListOptions{LabelSelector: "app=redis"})
	require.NoError(t, err)
	for _, p := range list.Items {
		if p.Name != leader && p.DeletionTimestamp == nil {
			return p.Name
		}
	}
	t.Fatal("no redis follower")
	return ""
}

// labelerImages are the redis pods by their labeler's image.
func (e *env) labelerImages(t *testing.T) map[string][]string {
	list, err := e.client.CoreV1().Pods("shop").List(e.ctx, metav1.ListOptions{LabelSelector: "app=redis"})
	require.NoError(t, err)
	out := map[string][]string{}
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
			if c.Name == contract.LabelerContainerName {
				out[c.Image] = append(out[c.Image], p.Name)
			}
		}
	}
	return out
}

// leftovers are what habring leaves in namespace shop: its Leases, the labeler's
// RoleBinding, the pods with a role label (roles) and those labelled leader.
func (e *env) leftovers(t *testing.T) map[string][]string {
	out := map[string][]string{}
	leases, err := e.client.CoordinationV1().Leases("shop").List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, l := range leases.Items {
		if strings.HasPrefix(l.Name, "habring-") {
			out["leases"] = append(out["leases"], l.Name)
		}
	}
	rbs, err := e.client.RbacV1().RoleBindings("shop").List(e.ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, rb := range rbs.Items {
		if rb.RoleRef.Name == release+"-labeler" {
			out["rolebindings"] = append(out["rolebindings"], rb.Name)
		}
	}
	pods, err := e.client.CoreV1().Pods("shop").List(e.ctx, metav1.ListOptions{LabelSelector: contract.LabelRole})
	require.NoError(t, err)
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		out["roles"] = append(out["roles"], p.Name)
		if p.Labels[contract.LabelRole] == contract.RoleLeader {
			out["labelled"] = append(out["labelled"], p.Name)
		}
	}
	return out
}
