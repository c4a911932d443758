package patch

import (
	"context"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
)

// Objects is a Source over objects held in memory: render's input files and the golden
// tests. It answers exactly as the webhook's caches would for the same objects.
type Objects struct {
	StatefulSets   []*appsv1.StatefulSet
	Deployments    []*appsv1.Deployment
	EndpointSlices []*discoveryv1.EndpointSlice
}

// Workload implements Source.
func (o *Objects) Workload(_ context.Context, ns string, owner Owner, pod *corev1.Pod) (Workload, error) {
	switch owner.Kind {
	case KindStatefulSet:
		for _, s := range o.StatefulSets {
			if s.Name == owner.Name && s.Namespace == ns {
				return StatefulSetWorkload(s, pod), nil
			}
		}
	case KindDeployment:
		for _, d := range o.Deployments {
			if d.Name == owner.Name && d.Namespace == ns {
				return Workload{Kind: KindDeployment, Name: d.Name, UID: d.UID, Annotations: d.Annotations, Ordinal: -1}, nil
			}
		}
	}
	return Workload{}, fmt.Errorf("%w: %w", ErrOwnerNotFound, apierrors.NewNotFound(appsv1.Resource(strings.ToLower(owner.Kind)+"s"), owner.Name))
}

// Ring implements Source.
func (o *Objects) Ring(_ context.Context, ns, ring string) (contract.Ring, error) {
	var sets []*appsv1.StatefulSet
	for _, s := range o.StatefulSets {
		if s.Namespace == ns && RingAnnotation(s.Annotations, s.Spec.Template.Annotations) == ring {
			if s.Status.ObservedGeneration == 0 && s.Status.ReadyReplicas == 0 {
				// A manifest, not a live object: preview the steady state, every pod ready.
				s = s.DeepCopy()
				s.Status.ReadyReplicas = ptr.Deref(s.Spec.Replicas, 1)
			}
			sets = append(sets, s)
		}
	}
	var slices []*discoveryv1.EndpointSlice
	for _, es := range o.EndpointSlices {
		if es.Namespace == ns && es.Labels[contract.LabelRing] == ring {
			slices = append(slices, es)
		}
	}
	return contract.Ring{Members: Members(slices), StatefulSets: BootstrapSets(sets)}, nil
}
