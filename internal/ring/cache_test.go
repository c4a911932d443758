package ring

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/patch"
)

func TestCache(t *testing.T) {
	t.Parallel()
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "redis", Namespace: "shop",
			Annotations:   map[string]string{contract.AnnotationRing: "main", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: appsv1.StatefulSetSpec{ServiceName: "redis", Replicas: ptr.To[int32](3), Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{contract.AnnotationGroup: "prod", "other": "x"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "redis", Image: "habitat/redis"}}}}},
	}
	other := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "cache", Namespace: "shop", Annotations: map[string]string{contract.AnnotationRing: "other"}}}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "redis-x", Namespace: "shop", Labels: map[string]string{contract.LabelRing: "main"}, Annotations: map[string]string{"a": "b"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.10"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "redis-0", UID: "uid-0"}},
			// Still ready in the slice, but its pod is being deleted.
			{Addresses: []string{"10.0.0.11"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "redis-1", UID: "uid-1"}},
			// Re-created under the name of a pod being deleted (the cache still holds the
			// old one): another pod, a member.
			{Addresses: []string{"10.0.0.12"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "redis-2", UID: "uid-2-new"}}},
	}
	podMeta := func(name, uid string, deleting bool) *metav1.PartialObjectMetadata {
		m := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID(uid), Labels: map[string]string{contract.LabelRing: "main"},
				Annotations: map[string]string{"big": "x"}}}
		if deleting {
			m.DeletionTimestamp = ptr.To(metav1.Now())
		}
		return m
	}
	notRing := slice.DeepCopy()
	notRing.Name, notRing.Labels = "web-x", nil
	client := fake.NewClientset(sts, other, slice, notRing)
	scheme := metadatafake.NewTestScheme()
	require.NoError(t, metav1.AddMetaToScheme(scheme))
	c, err := NewCache(client, metadatafake.NewSimpleMetadataClient(scheme,
		podMeta("redis-0", "uid-0", false), podMeta("redis-1", "uid-1", true), podMeta("redis-2", "uid-2-old", true)))
	require.NoError(t, err)
	var lookups []string
	c.OnLookup = func(kind, source string) { lookups = append(lookups, kind+"/"+source) }
	c.Start(t.Context())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.True(t, c.WaitForSync(ctx))
	require.True(t, c.Synced())

	t.Run("the ring's members and StatefulSets, from the caches; a terminating pod is no member", func(t *testing.T) {
		r, err := c.Ring(t.Context(), "shop", "main")
		require.NoError(t, err)
		require.Equal(t, contract.Ring{
			Members:      []contract.Member{{IP: "10.0.0.10", PodName: "redis-0"}, {IP: "10.0.0.12", PodName: "redis-2"}},
			StatefulSets: []contract.BootstrapSet{{Name: "redis", ServiceName: "redis", Replicas: 3}},
		}, r)
		r, err = c.Ring(t.Context(), "elsewhere", "main")
		require.NoError(t, err)
		require.Equal(t, contract.Ring{Members: nil, StatefulSets: []contract.BootstrapSet{}}, r)
	})
	t.Run("the caches keep only what admission reads", func(t *testing.T) {
		got, err := c.statefulSets.StatefulSets("shop").Get("redis")
		require.NoError(t, err)
		require.Nil(t, got.ManagedFields)
		require.Equal(t, map[string]string{contract.AnnotationRing: "main"}, got.Annotations)
		require.Equal(t, corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{contract.AnnotationGroup: "prod"}}}, got.Spec.Template)
		objs, err := c.slices.ByIndex(ringIndex, "shop/main")
		require.NoError(t, err)
		require.Len(t, objs, 1)
		require.Nil(t, objs[0].(*discoveryv1.EndpointSlice).Annotations)
		require.Len(t, c.slices.List(), 1, "an EndpointSlice without the ring label was cached")
	})
	t.Run("owners: cache, then a GET, then not found", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "redis-2", Labels: map[string]string{"apps.kubernetes.io/pod-index": "2"}}}
		w, err := c.Workload(t.Context(), "shop", patch.Owner{Kind: patch.KindStatefulSet, Name: "redis"}, pod)
		require.NoError(t, err)
		require.Equal(t, patch.Workload{Kind: patch.KindStatefulSet, Name: "redis", Annotations: map[string]string{contract.AnnotationRing: "main"}, ServiceName: "redis", Ordinal: 2}, w)
		_, err = c.Workload(t.Context(), "shop", patch.Owner{Kind: patch.KindStatefulSet, Name: "gone"}, pod)
		require.ErrorIs(t, err, patch.ErrOwnerNotFound)
		_, err = c.Workload(t.Context(), "shop", patch.Owner{Kind: patch.KindDeployment, Name: "gone"}, pod)
		require.ErrorIs(t, err, patch.ErrOwnerNotFound)
		require.Equal(t, []string{"StatefulSet/cache", "StatefulSet/api", "Deployment/api"}, lookups)
	})
}
