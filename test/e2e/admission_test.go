package e2e

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
)

// A Deployment in a ring with nothing live is denied (visible in its ReplicaSet's
// events); once the ring's StatefulSet is up, the ReplicaSet creates the pods and they are
// injected. No pod is ever admitted without peers.
func TestDeploymentWaitsForTheRing(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	ns := namespace(t, e, true)
	// Watch every pod of the namespace from the start: none may ever exist without peers.
	w, err := e.client.CoreV1().Pods(ns).Watch(t.Context(), metav1.ListOptions{LabelSelector: "app=lonely"})
	require.NoError(t, err)
	defer w.Stop()
	var seen, withoutPeers atomic.Int32
	go func() {
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type == watch.Added {
				seen.Add(1)
				if p.Annotations[contract.AnnotationStatus] != contract.StatusInjected || len(peers(p)) == 0 {
					withoutPeers.Add(1)
				}
			}
		}
	}()

	_, err = e.client.AppsV1().Deployments(ns).Create(t.Context(), deployment(ns, "lonely", 2, ring("lonely")), metav1.CreateOptions{})
	require.NoError(t, err)
	const want = `has no live member and no bootstrap StatefulSet`
	var msg string
	require.Eventually(t, func() bool {
		for _, ev := range events(t, e, ns, "ReplicaSet") {
			if strings.Contains(ev, want) {
				msg = ev
				return true
			}
		}
		return false
	}, time.Minute, 250*time.Millisecond, "no ReplicaSet event says %q", want)
	t.Logf("ReplicaSet event: %s", msg)
	require.Contains(t, msg, `admission webhook "inject.habring.habitat.sh" denied the request`)
	require.Zero(t, seen.Load(), "a pod was admitted while the ring had no member")

	start := time.Now()
	ringService(t, e, ns, "boot", "lonely")
	_, err = e.client.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "boot", 1, ring("lonely")), metav1.CreateOptions{})
	require.NoError(t, err)
	boot := readyPods(t, e, ns, "boot", 1, time.Minute)
	pods := readyPods(t, e, ns, "lonely", 2, 3*time.Minute)
	t.Logf("deployment pods appeared %s after the bootstrap StatefulSet was created", time.Since(start).Round(time.Second))
	for _, p := range pods {
		requireInjected(t, &p)
		got := peers(&p)
		require.True(t, got[0] == boot[0].Status.PodIP || got[0] == stableName(ns, "boot", 0), "pod %s peers %v", p.Name, got)
	}
	require.Zero(t, withoutPeers.Load(), "a pod was admitted without peers")
}

// A dry-run create returns the injected pod and persists nothing.
func TestDryRun(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	ns := namespace(t, e, true)
	sts, err := e.client.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "db", 0, ring("dry")), metav1.CreateOptions{})
	require.NoError(t, err)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: ns, Labels: map[string]string{"app": "db"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db", UID: sts.UID, Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{container("db")}},
	}
	got, err := e.client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	require.NoError(t, err)
	require.Equal(t, contract.StatusInjected, got.Annotations[contract.AnnotationStatus])
	require.Equal(t, "dry", got.Labels[contract.LabelRing])
	require.Contains(t, got.Spec.Containers[0].Args, "--permanent-peer")
	_, err = e.client.CoreV1().Pods(ns).Get(t.Context(), "db-0", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "a dry-run pod was persisted: %v", err)
}
