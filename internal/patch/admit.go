package patch

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/habring/habring/contract"
)

// ErrOwnerNotFound is wrapped by a Source when the pod's StatefulSet or Deployment does
// not exist (deleted while its controller was creating the pod).
var ErrOwnerNotFound = errors.New("owner not found")

// Source answers the questions admission asks about the cluster. The webhook answers from
// informer caches (falling back to the API server), render and the golden tests from files.
type Source interface {
	// Workload describes the pod's owner; an error wrapping ErrOwnerNotFound means it does
	// not exist.
	Workload(ctx context.Context, namespace string, owner Owner, pod *corev1.Pod) (Workload, error)
	// Ring returns the ready members and the StatefulSets of the ring in the namespace.
	Ring(ctx context.Context, namespace, ring string) (contract.Ring, error)
}

// Reasons a pod is admitted unchanged (also the "reason" label of the skip metric).
const (
	SkipOptedOut        = "opted-out"
	SkipAlreadyInjected = "already-injected"
	SkipNoOwner         = "no-workload-owner"
	SkipNoRing          = "no-ring"
)

// Decision is the outcome of Admit: either Skip says why the pod is left alone, or Result
// holds the injection.
type Decision struct {
	Skip  string
	Owner Owner
	// Workload is the pod's StatefulSet or Deployment, once found (its Name is empty
	// before).
	Workload Workload
	Spec     Spec
	Result   *Result
}

// Admit decides what happens to pod, created in namespace. An error is a denial:
// *AnnotationError and *NoPeersError (errors.Is ErrNoBootstrap) are the user's to fix,
// ErrOwnerNotFound the controller's to retry; anything else came from the Source or is
// habring's own failure (a patch it could not encode).
func (inj *Injector) Admit(ctx context.Context, pod *corev1.Pod, namespace string, src Source) (Decision, error) {
	if OptedOut(pod) {
		return Decision{Skip: SkipOptedOut}, nil
	}
	if Injected(pod) {
		return Decision{Skip: SkipAlreadyInjected}, nil
	}
	owner, ok := OwnerOf(pod)
	if !ok {
		return Decision{Skip: SkipNoOwner}, nil
	}
	d := Decision{Owner: owner}
	w, err := src.Workload(ctx, namespace, owner, pod)
	if err != nil {
		return d, fmt.Errorf("%s %s/%s: %w", owner.Kind, namespace, owner.Name, err)
	}
	d.Workload = w
	d.Spec, err = ParseSpec(w.Annotations, pod)
	if errors.Is(err, ErrNotInRing) {
		d.Skip = SkipNoRing
		return d, nil
	}
	if err != nil {
		return d, err
	}
	ring, err := src.Ring(ctx, namespace, d.Spec.Ring)
	if err != nil {
		return d, fmt.Errorf("ring %q in namespace %q: %w", d.Spec.Ring, namespace, err)
	}
	d.Result, err = inj.Inject(pod, w, d.Spec, namespace, ring)
	return d, err
}
