package patch

import (
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/habring/habring/contract"
)

// Workload kinds habring injects.
const (
	KindStatefulSet = "StatefulSet"
	KindDeployment  = "Deployment"
)

// Workload is what the webhook learned about the pod's owner.
type Workload struct {
	Kind string // KindStatefulSet or KindDeployment
	Name string
	// UID is the workload's, so that Events about it show in kubectl describe (which
	// selects them by involvedObject.uid).
	UID         types.UID
	Annotations map[string]string
	// ServiceName is the StatefulSet's governing Service (StatefulSets only).
	ServiceName string
	// Ordinal is the pod's StatefulSet ordinal; -1 for Deployment pods.
	Ordinal int
}

// Scope says where a ring lives: its name, its namespace and the cluster DNS domain,
// which together make StatefulSet pods' stable names and denial messages.
type Scope struct {
	Ring          string
	Namespace     string
	ClusterDomain string
}

// StatefulSetWorkload describes a pod of sts.
func StatefulSetWorkload(sts *appsv1.StatefulSet, pod *corev1.Pod) Workload {
	return Workload{
		Kind:        KindStatefulSet,
		Name:        sts.Name,
		UID:         sts.UID,
		Annotations: sts.Annotations,
		ServiceName: sts.Spec.ServiceName,
		Ordinal:     StatefulSetOrdinal(sts.Name, pod),
	}
}

// StatefulSetOrdinal is the pod's ordinal in the StatefulSet named sts: the
// apps.kubernetes.io/pod-index label (set since Kubernetes 1.28), else the suffix of the
// pod's name. It is -1 when neither says.
func StatefulSetOrdinal(sts string, pod *corev1.Pod) int {
	if v, ok := pod.Labels["apps.kubernetes.io/pod-index"]; ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			return n
		}
	}
	return contract.Ordinal(sts, pod.Name)
}

// RingAnnotation is the ring an object's annotations or its pod template's name; the
// template wins, as in ParseSpec.
func RingAnnotation(objAnnotations, templateAnnotations map[string]string) string {
	if v, ok := templateAnnotations[contract.AnnotationRing]; ok {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(objAnnotations[contract.AnnotationRing])
}

// BootstrapSets converts the ring's StatefulSets. Their ready pods are the lowest
// ordinals under OrderedReady pod management (pod N is created once 0..N-1 are ready);
// under Parallel, which ones are ready is unknown until all are.
func BootstrapSets(sets []*appsv1.StatefulSet) []contract.BootstrapSet {
	out := make([]contract.BootstrapSet, 0, len(sets))
	for _, s := range sets {
		r := int32(1) // the API default when spec.replicas is unset
		if s.Spec.Replicas != nil {
			r = *s.Spec.Replicas
		}
		ready := min(s.Status.ReadyReplicas, r)
		if s.Spec.PodManagementPolicy == appsv1.ParallelPodManagement && ready < r {
			ready = 0
		}
		out = append(out, contract.BootstrapSet{Name: s.Name, ServiceName: s.Spec.ServiceName, Replicas: r, Ready: ready})
	}
	return out
}

// Members returns the ring members the slices' endpoints stand for (contract.EndpointMember).
func Members(slices []*discoveryv1.EndpointSlice) []contract.Member {
	var out []contract.Member
	for _, s := range slices {
		for _, ep := range s.Endpoints {
			var kind, name string
			if ep.TargetRef != nil {
				kind, name = ep.TargetRef.Kind, ep.TargetRef.Name
			}
			if m, ok := contract.EndpointMember(string(s.AddressType), ep.Addresses, ep.Conditions.Ready, kind, name); ok {
				out = append(out, m)
			}
		}
	}
	return out
}
