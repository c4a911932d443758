package ring

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/patch"
)

const ringIndex = "habring-ring" // namespace/ring

var (
	deploymentsGVR = appsv1.SchemeGroupVersion.WithResource("deployments")
	podsGVR        = corev1.SchemeGroupVersion.WithResource("pods")
)

// Cache answers patch.Source from informer caches: StatefulSets (typed), Deployments
// (metadata only), the EndpointSlices labelled habitat.sh/ring, and the ring pods' names
// and deletion timestamps (metadata only, pods labelled habitat.sh/ring). The caches keep only
// what admission reads, so memory grows with the ring workloads rather than the cluster.
// A workload missing from the cache (created a moment before its first pod) is fetched
// from the API server; it is never silently skipped.
type Cache struct {
	client kubernetes.Interface
	meta   metadata.Interface

	statefulSets    appslisters.StatefulSetLister
	statefulSetRing cache.Indexer
	deployments     cache.GenericLister
	slices          cache.Indexer
	pods            cache.Indexer
	synced          []cache.InformerSynced
	start           []func(<-chan struct{})

	// OnLookup, when set, is told of each owner lookup: its kind, and "cache" or "api"
	// (a cache miss answered by a GET). The webhook counts them.
	OnLookup func(kind, source string)
}

// NewCache builds the informers; Start runs them.
func NewCache(client kubernetes.Interface, meta metadata.Interface) (*Cache, error) {
	c := &Cache{client: client, meta: meta}

	all := informers.NewSharedInformerFactory(client, resyncNever)
	sts := all.Apps().V1().StatefulSets()
	if err := sts.Informer().SetTransform(trimStatefulSet); err != nil {
		return nil, fmt.Errorf("statefulset transform: %w", err)
	}
	if err := sts.Informer().AddIndexers(cache.Indexers{ringIndex: statefulSetRing}); err != nil {
		return nil, fmt.Errorf("statefulset index: %w", err)
	}
	c.statefulSets, c.statefulSetRing = sts.Lister(), sts.Informer().GetIndexer()

	ringOnly := informers.NewSharedInformerFactoryWithOptions(client, resyncNever, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = contract.LabelRing
	}))
	es := ringOnly.Discovery().V1().EndpointSlices().Informer()
	if err := es.SetTransform(trimEndpointSlice); err != nil {
		return nil, fmt.Errorf("endpointslice transform: %w", err)
	}
	if err := es.AddIndexers(cache.Indexers{ringIndex: endpointSliceRing}); err != nil {
		return nil, fmt.Errorf("endpointslice index: %w", err)
	}
	c.slices = es.GetIndexer()

	md := metadatainformer.NewSharedInformerFactory(meta, resyncNever)
	dep := md.ForResource(deploymentsGVR)
	if err := dep.Informer().SetTransform(trimMetadata); err != nil {
		return nil, fmt.Errorf("deployment transform: %w", err)
	}
	c.deployments = dep.Lister()

	// A pod being deleted is still a ready endpoint until the EndpointSlice controller
	// catches up; its replacement, admitted in that moment, would be given only the
	// dying (ring chaos: every ring pod deleted at once left a Deployment pod peering with
	// a terminating one, alone in a ring of its own). The deletion timestamp reaches this
	// cache straight from the API server.
	ringPods := metadatainformer.NewFilteredSharedInformerFactory(meta, resyncNever, metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.LabelSelector = contract.LabelRing
	})
	pods := ringPods.ForResource(podsGVR)
	if err := pods.Informer().SetTransform(trimPod); err != nil {
		return nil, fmt.Errorf("pod transform: %w", err)
	}
	c.pods = pods.Informer().GetIndexer()

	c.synced = []cache.InformerSynced{sts.Informer().HasSynced, es.HasSynced, dep.Informer().HasSynced, pods.Informer().HasSynced}
	c.start = []func(<-chan struct{}){all.Start, ringOnly.Start, md.Start, ringPods.Start}
	return c, nil
}

// Start runs the informers until ctx ends.
func (c *Cache) Start(ctx context.Context) {
	for _, s := range c.start {
		s(ctx.Done())
	}
}

// WaitForSync blocks until every cache has synced or ctx ends.
func (c *Cache) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), c.synced...)
}

// Synced reports whether every cache has synced.
func (c *Cache) Synced() bool {
	for _, s := range c.synced {
		if !s() {
			return false
		}
	}
	return true
}

// Workload implements patch.Source.
func (c *Cache) Workload(ctx context.Context, ns string, o patch.Owner, pod *corev1.Pod) (patch.Workload, error) {
	switch o.Kind {
	case patch.KindStatefulSet:
		sts, err := c.statefulSets.StatefulSets(ns).Get(o.Name)
		if apierrors.IsNotFound(err) {
			c.lookup(o.Kind, "api")
			sts, err = c.client.AppsV1().StatefulSets(ns).Get(ctx, o.Name, metav1.GetOptions{})
		} else {
			c.lookup(o.Kind, "cache")
		}
		if err != nil {
			return patch.Workload{}, lookupError(err)
		}
		return patch.StatefulSetWorkload(sts, pod), nil
	case patch.KindDeployment:
		obj, err := c.deployments.ByNamespace(ns).Get(o.Name)
		var m metav1.Object
		if apierrors.IsNotFound(err) {
			c.lookup(o.Kind, "api")
			m, err = c.meta.Resource(deploymentsGVR).Namespace(ns).Get(ctx, o.Name, metav1.GetOptions{})
		} else if err == nil {
			c.lookup(o.Kind, "cache")
			m, err = meta.Accessor(obj)
		}
		if err != nil {
			return patch.Workload{}, lookupError(err)
		}
		return patch.Workload{Kind: patch.KindDeployment, Name: m.GetName(), UID: m.GetUID(), Annotations: m.GetAnnotations(), Ordinal: -1}, nil
	}
	return patch.Workload{}, fmt.Errorf("unsupported owner kind %q", o.Kind)
}

// Ring implements patch.Source from the caches alone: they are the live state, and an
// API server that stops answering leaves them serving what they last saw.
func (c *Cache) Ring(_ context.Context, ns, ring string) (contract.Ring, error) {
	key := ns + "/" + ring
	objs, err := c.slices.ByIndex(ringIndex, key)
	if err != nil {
		return contract.Ring{}, fmt.Errorf("endpointslice index: %w", err)
	}
	slices := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		slices = append(slices, o.(*discoveryv1.EndpointSlice))
	}
	objs, err = c.statefulSetRing.ByIndex(ringIndex, key)
	if err != nil {
		return contract.Ring{}, fmt.Errorf("statefulset index: %w", err)
	}
	sets := make([]*appsv1.StatefulSet, 0, len(objs))
	for _, o := range objs {
		sets = append(sets, o.(*appsv1.StatefulSet))
	}
	dying := map[string]bool{}
	for _, sl := range slices {
		for _, ep := range sl.Endpoints {
			if ep.TargetRef != nil && len(ep.Addresses) > 0 && c.terminating(ns, ep.TargetRef) {
				dying[ep.Addresses[0]] = true
			}
		}
	}
	members := patch.Members(slices)
	live := members[:0]
	for _, m := range members {
		if !dying[m.IP] {
			live = append(live, m)
		}
	}
	return contract.Ring{Members: live, StatefulSets: patch.BootstrapSets(sets)}, nil
}

// terminating: the endpoint's pod has a deletion timestamp. The pod is matched by UID too:
// a StatefulSet pod re-created under the same name is another pod. A pod the cache does
// not know is taken as the EndpointSlice says.
func (c *Cache) terminating(ns string, ref *corev1.ObjectReference) bool {
	if ref.Kind != "Pod" || ref.Name == "" {
		return false
	}
	obj, ok, err := c.pods.GetByKey(ns + "/" + ref.Name) // a miss costs no NotFound error: this runs per member
	if err != nil || !ok {
		return false
	}
	m, err := meta.Accessor(obj)
	if err != nil || (ref.UID != "" && m.GetUID() != ref.UID) {
		return false
	}
	return m.GetDeletionTimestamp() != nil
}

func (c *Cache) lookup(kind, source string) {
	if c.OnLookup != nil {
		c.OnLookup(kind, source)
	}
}

func lookupError(err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: %w", patch.ErrOwnerNotFound, err)
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("API server: %w", err)
	}
	return err
}

func statefulSetRing(obj any) ([]string, error) {
	s, ok := obj.(*appsv1.StatefulSet)
	if !ok {
		return nil, nil
	}
	if r := patch.RingAnnotation(s.Annotations, s.Spec.Template.Annotations); r != "" {
		return []string{s.Namespace + "/" + r}, nil
	}
	return nil, nil
}

func endpointSliceRing(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	return []string{s.Namespace + "/" + s.Labels[contract.LabelRing]}, nil
}

// Transforms: what the caches keep. Admission reads habitat.sh/ annotations, a
// StatefulSet's serviceName, replicas, pod management, ready replicas and template annotations, and EndpointSlice
// endpoints; managedFields, last-applied-configuration and pod templates can each be
// larger than everything else together.

func trimStatefulSet(obj any) (any, error) {
	s, ok := obj.(*appsv1.StatefulSet)
	if !ok {
		return obj, nil
	}
	s.ManagedFields = nil
	s.Annotations = habitatOnly(s.Annotations)
	s.Spec.Template = corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: habitatOnly(s.Spec.Template.Annotations)}}
	s.Spec.VolumeClaimTemplates = nil
	s.Status = appsv1.StatefulSetStatus{ReadyReplicas: s.Status.ReadyReplicas} // whose stable names resolve
	return s, nil
}

func trimEndpointSlice(obj any) (any, error) {
	if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
		s.ManagedFields = nil
		s.Annotations = nil
	}
	return obj, nil
}

func trimMetadata(obj any) (any, error) {
	if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
		m.ManagedFields = nil
		m.Annotations = habitatOnly(m.Annotations)
	}
	return obj, nil
}

// trimPod keeps a ring pod's name, namespace and deletion timestamp.
func trimPod(obj any) (any, error) {
	if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
		m.ObjectMeta = metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
			DeletionTimestamp: m.DeletionTimestamp}
	}
	return obj, nil
}

func habitatOnly(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if strings.HasPrefix(k, "habitat.sh/") {
			if out == nil {
				out = make(map[string]string, 4)
			}
			out[k] = v
		}
	}
	return out
}

// resyncNever documents the informers' resync period: admission reads the caches on
// demand, so periodic resyncs would only cost CPU.
const resyncNever time.Duration = 0
