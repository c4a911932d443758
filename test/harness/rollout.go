package harness

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// DeploymentRolledOut says why a Deployment's rollout is not complete, nil once it is, by
// `kubectl rollout status`'s rules: the controller saw the latest spec, every replica is
// updated and available, and no old one is left.
func DeploymentRolledOut(ctx context.Context, client kubernetes.Interface, namespace, name string) error {
	d, err := client.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	want, s := ptr.Deref(d.Spec.Replicas, 1), d.Status
	if s.ObservedGeneration < d.Generation || s.UpdatedReplicas != want || s.Replicas != want || s.AvailableReplicas != want {
		return fmt.Errorf("deployment %s: %d of %d updated, %d pods, %d available", name, s.UpdatedReplicas, want, s.Replicas, s.AvailableReplicas)
	}
	return nil
}

// StatefulSetRolledOut is DeploymentRolledOut for a StatefulSet with the RollingUpdate
// strategy: every replica updated and ready, and the update revision current.
func StatefulSetRolledOut(ctx context.Context, client kubernetes.Interface, namespace, name string) error {
	st, err := client.AppsV1().StatefulSets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	want, s := ptr.Deref(st.Spec.Replicas, 1), st.Status
	if s.ObservedGeneration < st.Generation || s.UpdatedReplicas != want || s.ReadyReplicas != want || s.Replicas != want || s.CurrentRevision != s.UpdateRevision {
		return fmt.Errorf("statefulset %s: %d of %d updated, %d ready, revision %s of %s", name, s.UpdatedReplicas, want, s.ReadyReplicas, s.CurrentRevision, s.UpdateRevision)
	}
	return nil
}
