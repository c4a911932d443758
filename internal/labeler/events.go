package labeler

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// Reasons of the Events the labeler records on its own pod, where `kubectl describe pod`
// shows them: what an operator of the ring wants to see without reading its log.
const (
	EventLeader     = "HabringLeader"     // labelled leader of its group, holding the Lease
	EventFollower   = "HabringFollower"   // labelled follower
	EventNotLeader  = "HabringNotLeader"  // was leader, now labelled none
	EventWaiting    = "HabringWaiting"    // the census says leader, but the label waits (another pod's label, the Lease)
	EventQuorumEdge = "HabringQuorumEdge" // the group can lose no more alive member and still elect
	EventQuorumOK   = "HabringQuorumOK"   // the group has a margin again
	EventDenied     = "HabringDenied"     // the API server denied one of its requests
	EventAllowed    = "HabringAllowed"    // requests of a kind that was denied succeed again
)

// EventComponent is the source of the labeler's Events.
const EventComponent = "habring-labeler"

// startEvents starts the recorder of the labeler's Events about pod: client-go's, which
// counts repeats on one Event, aggregates similar ones, rate limits bursts and never
// blocks the labeler (a full queue drops). It returns the function that stops it.
func (l *Labeler) startEvents(ctx context.Context, pod *corev1.Pod) func() {
	if pod.UID == "" { // its own pod could not be read: no object to attach Events to
		return func() {}
	}
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: l.kube.CoreV1().Events(l.cfg.Namespace)})
	l.recorder = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: EventComponent})
	l.self = &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
	return b.Shutdown
}

// event records an Event on the labeler's pod, when a recorder runs.
func (l *Labeler) event(eventType, reason, format string, args ...any) {
	if l.recorder != nil {
		l.recorder.Event(l.self, eventType, reason, fmt.Sprintf(format, args...))
	}
}
