package webhook

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
)

// What an operator must act on is an Event on the workload, as kubectl describe finds it
// (kind, name and UID): a denial with its reason, a pod admitted to bootstrap its ring.
// An injection with peers, a dry run and a skipped pod record nothing.
func TestEvents(t *testing.T) {
	t.Parallel()
	sts := ringSTS("db", 3)
	sts.UID = "uid-db"
	lonely := deploymentMeta("lonely", map[string]string{contract.AnnotationRing: "empty"})
	lonely.UID = "uid-lonely"
	bad := deploymentMeta("bad", map[string]string{contract.AnnotationRing: "main", contract.AnnotationTopology: "chaos"})
	bad.UID = "uid-bad"
	f := newFixture(t, []runtime.Object{sts, readySlice("other", nil)}, lonely, bad)
	events, stop := NewEventRecorder(t.Context(), f.client)
	t.Cleanup(stop)
	f.handler.Events = events

	dryRun := func(r *admissionv1.AdmissionRequest) { r.DryRun = ptr.To(true) }
	for _, body := range [][]byte{
		reviewBody(t, admissionv1.Create, deploymentPod("lonely"), dryRun), // nothing: a dry run
		reviewBody(t, admissionv1.Create, stsPod("db", 0), dryRun),
		reviewBody(t, admissionv1.Create, stsPod("db", 1), nil), // nothing: peers db-0
		reviewBody(t, admissionv1.Create, stsPod("db", 0), nil),
		reviewBody(t, admissionv1.Create, deploymentPod("lonely"), nil),
		reviewBody(t, admissionv1.Create, deploymentPod("bad"), nil),
	} {
		post(t, f.router, body)
	}

	type event struct {
		kind, name           string
		uid                  types.UID
		typ, reason, message string
	}
	want := []event{
		{"StatefulSet", "db", "uid-db", corev1.EventTypeNormal, EventBootstrap,
			`admitted pod db-0 with no peers: it starts ring "main" alone (bootstrap: ordinal 0 of StatefulSet db with no live member starts the ring)`},
		{"Deployment", "lonely", "uid-lonely", corev1.EventTypeWarning, EventDenied,
			`denied pod lonely-abc-* until its ring is up: ring "empty" in namespace "shop" has no live member and no bootstrap StatefulSet`},
		{"Deployment", "bad", "uid-bad", corev1.EventTypeWarning, EventDenied,
			`denied pod bad-abc-*: annotation habitat.sh/topology: "chaos" is not allowed; want one of standalone, leader`},
	}
	var got []event
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		list, err := f.client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{})
		require.NoError(c, err)
		got = got[:0]
		for _, e := range list.Items {
			require.Equal(c, EventComponent, e.Source.Component)
			require.Equal(c, "apps/v1", e.InvolvedObject.APIVersion)
			require.EqualValues(c, 1, e.Count)
			got = append(got, event{e.InvolvedObject.Kind, e.InvolvedObject.Name, e.InvolvedObject.UID, e.Type, e.Reason, e.Message})
		}
		require.Len(c, got, len(want))
	}, 10*time.Second, 50*time.Millisecond)
	for _, w := range want {
		var match *event
		for i := range got {
			if got[i].name == w.name {
				match = &got[i]
			}
		}
		require.NotNil(t, match, "no Event on %s %s; got %+v", w.kind, w.name, got)
		require.Truef(t, len(match.message) >= len(w.message) && match.message[:len(w.message)] == w.message, "Event on %s: %q, want it to start %q", w.name, match.message, w.message)
		match.message = w.message
		require.Equal(t, w, *match)
	}
}
