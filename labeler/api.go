package labeler

import (
	"context"
	"time"

	"github.com/habring/habring/labeler/kube"
)

// API is every request the labeler makes, all in its own namespace: its pod, the pods
// labelled leader, its group's Lease and its ring's EndpointSlices. *kube.Client answers
// it in the sidecar; the tests answer it from client-go's fake clientset.
type API interface {
	GetPod(ctx context.Context, name string) (*kube.Pod, error)
	// PatchPod patches the pod, or its subresource ("status") when one is named, with a
	// patch of patchType (kube.MergePatch, kube.StrategicMergePatch).
	PatchPod(ctx context.Context, name, patchType string, body []byte, subresource ...string) error
	ListPods(ctx context.Context, labelSelector string) ([]kube.Pod, error)
	GetLease(ctx context.Context, name string) (*kube.Lease, error)
	CreateLease(ctx context.Context, lease *kube.Lease) (*kube.Lease, error)
	UpdateLease(ctx context.Context, lease *kube.Lease) (*kube.Lease, error)
	ListEndpointSlices(ctx context.Context, labelSelector string) (*kube.EndpointSliceList, error)
	// WatchEndpointSlices watches from resourceVersion; the server ends it after timeout.
	WatchEndpointSlices(ctx context.Context, labelSelector, resourceVersion string, timeout time.Duration) (kube.Watch[kube.EndpointSlice], error)
}

// FieldManager names the labeler's writes in managedFields.
const FieldManager = "habring-labeler"
