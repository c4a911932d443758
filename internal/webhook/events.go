package webhook

import (
	"context"
	"fmt"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/habring/habring/internal/patch"
)

// Reasons of the Events the webhook records on a workload: what its operator must act on,
// seen in `kubectl describe statefulset|deployment`.
const (
	// EventDenied: a pod of the workload was denied (an invalid annotation, no peers and
	// no way to bootstrap the ring); its controller retries, and the Event says what to fix.
	EventDenied = "HabringDenied"
	// EventBootstrap: a pod was admitted with no peers, to start its ring alone.
	EventBootstrap = "HabringBootstrap"
)

// EventComponent is the source of the webhook's Events.
const EventComponent = "habring-webhook"

// NewEventRecorder returns a recorder that writes Events through client and a function
// that flushes and stops it. It is client-go's: Events about one object with one reason
// and message are counted on one Event, similar ones are aggregated, and a burst is rate
// limited (record.EventCorrelator); writes are queued, never blocking an admission, and
// dropped when the queue is full.
func NewEventRecorder(ctx context.Context, client kubernetes.Interface) (record.EventRecorder, func()) {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: EventComponent}), b.Shutdown
}

// event records on the pod's workload what an operator must act on. Nothing is recorded
// for a dry run: the webhook's sideEffects are NoneOnDryRun.
func (h *Handler) event(req *admissionv1.AdmissionRequest, d *patch.Decision, eventType, reason, format string, args ...any) {
	if h.Events == nil || d.Workload.Name == "" || (req.DryRun != nil && *req.DryRun) {
		return
	}
	ref := &corev1.ObjectReference{APIVersion: "apps/v1", Kind: d.Workload.Kind, Namespace: req.Namespace,
		Name: d.Workload.Name, UID: d.Workload.UID}
	h.Events.Event(ref, eventType, reason, fmt.Sprintf(format, args...))
}

// podName names the pod of a request: a Deployment's pods have no name yet, only the
// prefix the API server completes.
func podName(req *admissionv1.AdmissionRequest, pod *corev1.Pod) string {
	switch {
	case req.Name != "":
		return req.Name
	case pod.Name != "":
		return pod.Name
	case pod.GenerateName != "":
		return pod.GenerateName + "*"
	}
	return "(unnamed)"
}
