package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// outage serializes the tests that stop or stress the shared webhook process.
var outage sync.Mutex

// With the webhook stopped and failurePolicy: Fail, pod creation in opted-in namespaces
// fails with a clear error and other namespaces are unaffected; restarted, the ReplicaSet
// recovers by itself. SIGTERM is a graceful shutdown: exit 0.
func TestWebhookDown(t *testing.T) {
	e := requireEnv(t)
	outage.Lock()
	defer outage.Unlock()
	in := namespace(t, e, true)
	out := namespace(t, e, false)
	ringService(t, e, in, "boot", "main")
	_, err := e.client.AppsV1().StatefulSets(in).Create(t.Context(), statefulSet(in, "boot", 1, ring("main")), metav1.CreateOptions{})
	require.NoError(t, err)
	readyPods(t, e, in, "boot", 1, time.Minute)

	e.webhook.Stop()
	require.Equal(t, 0, e.webhook.ExitCode(), "SIGTERM must be a clean exit")
	restarted := false
	defer func() {
		if !restarted { // keep the other tests working whatever happens here
			_ = e.webhook.Start(context.Background())
		}
	}()

	_, err = e.client.AppsV1().Deployments(in).Create(t.Context(), deployment(in, "web", 2, ring("main")), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = e.client.AppsV1().Deployments(out).Create(t.Context(), deployment(out, "web", 2, ring("main")), metav1.CreateOptions{})
	require.NoError(t, err)
	readyPods(t, e, out, "web", 2, time.Minute) // unaffected
	var msg string
	require.Eventually(t, func() bool {
		for _, ev := range events(t, e, in, "ReplicaSet") {
			if strings.Contains(ev, "failed calling webhook") {
				msg = ev
				return true
			}
		}
		return false
	}, time.Minute, 250*time.Millisecond)
	t.Logf("while down: %s", msg)
	require.Contains(t, msg, "inject.habring.habitat.sh")

	require.NoError(t, e.webhook.Start(t.Context()))
	restarted = true
	start := time.Now()
	for _, p := range readyPods(t, e, in, "web", 2, 3*time.Minute) {
		requireInjected(t, &p)
	}
	t.Logf("ReplicaSet recovered %s after the webhook came back", time.Since(start).Round(time.Second))
}

// The serving certificate is rotated on disk during a burst of 200 pod creations:
// zero failed admissions.
func TestCertificateRotationUnderLoad(t *testing.T) {
	e := requireEnv(t)
	outage.Lock()
	defer outage.Unlock()
	ns := namespace(t, e, true)
	ringService(t, e, ns, "boot", "main")
	_, err := e.client.AppsV1().StatefulSets(ns).Create(t.Context(), statefulSet(ns, "boot", 1, ring("main")), metav1.CreateOptions{})
	require.NoError(t, err)
	readyPods(t, e, ns, "boot", 1, time.Minute)

	ctx, cancel := context.WithCancel(t.Context())
	rotations := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
				if e.webhook.Rotate() == nil {
					rotations++
				}
			}
		}
	}()
	start := time.Now()
	_, err = e.client.AppsV1().Deployments(ns).Create(t.Context(), deployment(ns, "burst", 200, ring("main")), metav1.CreateOptions{})
	require.NoError(t, err)
	pods := readyPods(t, e, ns, "burst", 200, 5*time.Minute)
	cancel()
	<-done
	t.Logf("200 pods admitted in %s across %d certificate rotations", time.Since(start).Round(time.Second), rotations)
	require.GreaterOrEqual(t, rotations, 3)
	for _, p := range pods {
		requireInjected(t, &p)
	}
	for _, ev := range events(t, e, ns, "ReplicaSet") {
		require.NotContains(t, ev, "FailedCreate", "an admission failed during rotation: %s", ev)
	}
}
