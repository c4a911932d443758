package patch

import (
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Workload kinds habring injects.
const (
	KindStatefulSet = "StatefulSet"
	KindDeployment  = "Deployment"
)

// Workload is what the webhook learned about the pod's owner.
type Workload struct {
	Kind        string // KindStatefulSet or KindDeployment
	Name        string
	Annotations map[string]string
	// ServiceName is the StatefulSet's governing Service (StatefulSets only).
	ServiceName string
	// Ordinal is the pod's StatefulSet ordinal; -1 for Deployment pods.
	Ordinal int
}

// Member is one ready address of the ring, from an EndpointSlice labelled habitat.sh/ring.
type Member struct {
	IP      string
	PodName string // the endpoint's targetRef name; "" when it has none
}

// BootstrapSet is a StatefulSet of the ring, whose pods have stable DNS names.
type BootstrapSet struct {
	Name        string
	ServiceName string
	Replicas    int32
	// Ready is how many of the lowest ordinals are ready, so that their stable names
	// resolve: a Supervisor fails to start on a --peer name that does not.
	Ready int32
}

// Ring is the live state of one ring in one namespace, as a Source found it.
type Ring struct {
	Members      []Member
	StatefulSets []BootstrapSet
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
	return ordinalOf(sts, pod.Name)
}

func ordinalOf(sts, podName string) int {
	suffix, ok := strings.CutPrefix(podName, sts+"-")
	if !ok || suffix == "" || (len(suffix) > 1 && suffix[0] == '0') {
		return -1
	}
	n, err := strconv.Atoi(suffix)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// RingAnnotation is the ring an object's annotations or its pod template's name; the
// template wins, as in ParseSpec.
func RingAnnotation(objAnnotations, templateAnnotations map[string]string) string {
	if v, ok := templateAnnotations[AnnotationRing]; ok {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(objAnnotations[AnnotationRing])
}

// BootstrapSets converts the ring's StatefulSets. Their ready pods are the lowest
// ordinals under OrderedReady pod management (pod N is created once 0..N-1 are ready);
// under Parallel, which ones are ready is unknown until all are.
func BootstrapSets(sets []*appsv1.StatefulSet) []BootstrapSet {
	out := make([]BootstrapSet, 0, len(sets))
	for _, s := range sets {
		r := int32(1) // the API default when spec.replicas is unset
		if s.Spec.Replicas != nil {
			r = *s.Spec.Replicas
		}
		ready := min(s.Status.ReadyReplicas, r)
		if s.Spec.PodManagementPolicy == appsv1.ParallelPodManagement && ready < r {
			ready = 0
		}
		out = append(out, BootstrapSet{Name: s.Name, ServiceName: s.Spec.ServiceName, Replicas: r, Ready: ready})
	}
	return out
}

// Members returns the ready IPv4 addresses of the slices. Habitat's --sys-ip-address and
// --peer resolution are IPv4-only, so other address types are ignored. An endpoint whose
// ready condition is unset counts as ready, as the EndpointSlice API says it should.
func Members(slices []*discoveryv1.EndpointSlice) []Member {
	var out []Member
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		for _, ep := range s.Endpoints {
			if len(ep.Addresses) == 0 || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			m := Member{IP: ep.Addresses[0]}
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				m.PodName = ep.TargetRef.Name
			}
			out = append(out, m)
		}
	}
	return out
}
