package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/habring/habring/contract"
)

// A namespace without habitat.sh/inject: enabled is untouched.
func TestNamespaceNotOptedInIsUntouched(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	ns := namespace(t, e, false)
	_, err := e.client.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "redis", 2, ring("main")), metav1.CreateOptions{})
	require.NoError(t, err)
	for _, p := range readyPods(t, e, ns, "redis", 2, time.Minute) {
		require.NotContains(t, p.Annotations, contract.AnnotationStatus)
		require.Empty(t, p.Spec.InitContainers)
		require.Nil(t, p.Spec.Containers[0].Args)
	}
}

// A bootstrap StatefulSet gets the bootstrap peers (pod N: pods 0..N-1, live IPs first);
// pod 0 re-created while 1 and 2 live peers with them; a Deployment in the ring gets live
// member IPs.
func TestBootstrapStatefulSetThenDeployment(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	ns := namespace(t, e, true)
	ringService(t, e, ns, "redis", "main")
	_, err := e.client.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "redis", 3,
		map[string]string{contract.AnnotationRing: "main", contract.AnnotationTopology: "leader"}), metav1.CreateOptions{})
	require.NoError(t, err)
	pods := readyPods(t, e, ns, "redis", 3, 2*time.Minute)
	ip := map[string]string{}
	for _, p := range pods {
		ip[p.Name] = p.Status.PodIP
	}

	t.Run("pod N peers with pods 0..N-1", func(t *testing.T) {
		for n, p := range pods {
			requireInjected(t, &p)
			got := peers(&p)
			require.Len(t, got, n, "pod %s: %v", p.Name, got)
			for _, peer := range got {
				// Live members (IPs) first, then stable names; which one pod i was depends on
				// whether its endpoint was published when pod N was created.
				require.True(t, slices.ContainsFunc(pods[:n], func(q corev1.Pod) bool {
					return peer == ip[q.Name] || peer == stableName(ns, "redis", podOrdinal(q.Name))
				}), "pod %s: peer %s is not one of pods 0..%d", p.Name, peer, n-1)
			}
			require.Contains(t, p.Spec.Containers[0].Args, "--permanent-peer")
			t.Logf("%s: peers %v (%s)", p.Name, got, p.Annotations[contract.AnnotationPeersReason])
		}
		require.Equal(t, contract.LabelerContainerName, pods[0].Spec.InitContainers[0].Name, "native sidecar on 1.37")
	})

	t.Run("pod 0 re-created peers with the live members", func(t *testing.T) {
		old := pods[0]
		require.NoError(t, e.client.CoreV1().Pods(ns).Delete(t.Context(), old.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}))
		var again *corev1.Pod
		require.Eventually(t, func() bool {
			p, err := e.client.CoreV1().Pods(ns).Get(t.Context(), old.Name, metav1.GetOptions{})
			if err != nil || p.UID == old.UID {
				return false
			}
			again = p
			return true
		}, time.Minute, 100*time.Millisecond)
		requireInjected(t, again)
		require.Equal(t, []string{ip["redis-1"], ip["redis-2"]}, peers(again),
			"the re-created pod 0 must join the live ring, not start a second one")
		t.Logf("re-created redis-0: peers %v", peers(again))
	})

	t.Run("deployment pods get live member IPs", func(t *testing.T) {
		live := readyPods(t, e, ns, "redis", 3, time.Minute)
		ringMembers(t, e, ns, "main", live) // the re-created pod 0's address published
		_, err := e.client.AppsV1().Deployments(ns).Create(t.Context(), deployment(ns, "web", 3, ring("main")), metav1.CreateOptions{})
		require.NoError(t, err)
		for _, p := range readyPods(t, e, ns, "web", 3, 2*time.Minute) {
			requireInjected(t, &p)
			want := []string{live[0].Status.PodIP, live[1].Status.PodIP, live[2].Status.PodIP}
			require.Equal(t, want, peers(&p), "pod %s", p.Name)
			require.NotContains(t, p.Spec.Containers[0].Args, "--permanent-peer")
		}
	})
}

func podOrdinal(name string) int {
	i := strings.LastIndexByte(name, '-')
	n := 0
	for _, c := range name[i+1:] {
		n = n*10 + int(c-'0')
	}
	return n
}
