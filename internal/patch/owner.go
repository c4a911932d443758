package patch

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Owner is the workload the webhook must find for a pod.
type Owner struct {
	Kind string // KindStatefulSet or KindDeployment
	Name string
}

// OwnerOf names the pod's StatefulSet or Deployment from its controller reference alone.
// A ReplicaSet's Deployment is the ReplicaSet's name without the "-<pod-template-hash>"
// suffix the Deployment controller gives it, so no ReplicaSet is ever fetched. ok is false
// for pods of anything else (a bare ReplicaSet, a Job, no controller at all).
func OwnerOf(pod *corev1.Pod) (o Owner, ok bool) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil || !strings.HasPrefix(ref.APIVersion, appsv1.GroupName+"/") {
		return Owner{}, false
	}
	switch ref.Kind {
	case KindStatefulSet:
		return Owner{Kind: KindStatefulSet, Name: ref.Name}, true
	case "ReplicaSet":
		hash := pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
		name, found := strings.CutSuffix(ref.Name, "-"+hash)
		if hash == "" || !found || name == "" {
			return Owner{}, false
		}
		return Owner{Kind: KindDeployment, Name: name}, true
	}
	return Owner{}, false
}
