package labeler

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

const testLease = "habring-main-redis.default"

func lease(t *testing.T, c *fake.Clientset) coordinationv1.LeaseSpec {
	t.Helper()
	l, err := c.CoordinationV1().Leases("shop").Get(t.Context(), testLease, metav1.GetOptions{})
	require.NoError(t, err)
	return l.Spec
}

// electorLabeler is a Labeler of pod, for its elector alone.
func electorLabeler(t *testing.T, c *fake.Clientset, pod string, logs *syncBuffer) *Labeler {
	t.Helper()
	cfg := Defaults()
	cfg.PodName, cfg.Namespace = pod, "shop"
	return New(cfg, c, testingclock.NewFakeClock(time.Now()), slog.New(slog.NewTextHandler(logs, nil)))
}

type round struct{ started, stopped atomic.Int32 }

func (r *round) run(t *testing.T, l *Labeler, d time.Duration) (stop func()) {
	t.Helper()
	run, err := l.elector(testLease, d, func(context.Context) { r.started.Add(1) }, func() { r.stopped.Add(1) })
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); run(ctx) }()
	return func() { cancel(); <-done }
}

// The elector takes the Lease, loses it when renewals fail for the renew deadline (the
// API server refuses writes), and contends again once they succeed: unlike client-go's
// LeaderElector, it does not stop at the first loss. The refused writes are counted
// each, and logged once, with what to do. On stop it releases the Lease.
func TestElectorLosesAndRetakes(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset()
	var refuse atomic.Bool
	c.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if refuse.Load() {
			return true, nil, errors.New("the API server is not answering")
		}
		return false, nil, nil
	})
	var logs syncBuffer
	l := electorLabeler(t, c, "redis-0", &logs)
	var r round
	stop := r.run(t, l, 600*time.Millisecond)
	require.Eventually(t, func() bool { return r.started.Load() == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, "redis-0", ptr.Deref(lease(t, c).HolderIdentity, ""))
	refuse.Store(true)
	require.Eventually(t, func() bool { return r.stopped.Load() == 1 }, 5*time.Second, 10*time.Millisecond, "renewals failing for the deadline lose it")
	refuse.Store(false)
	require.Eventually(t, func() bool { return r.started.Load() == 2 }, 5*time.Second, 10*time.Millisecond, "contends again")
	stop()
	require.Equal(t, int32(2), r.stopped.Load(), "each round ends with a stop, the second at the release")
	spec := lease(t, c)
	require.Empty(t, ptr.Deref(spec.HolderIdentity, ""), "stopping releases the held Lease")
	require.Equal(t, int32(1), ptr.Deref(spec.LeaseDurationSeconds, 0))

	var metrics bytes.Buffer
	l.metrics.set.WritePrometheus(&metrics)
	require.Regexp(t, `habring_labeler_request_failures_total\{request="lease-update"\} [1-9]`, metrics.String())
	require.Equal(t, 1, strings.Count(logs.String(), `msg="leader Lease update failed; will retry"`), logs.String())
	require.Contains(t, logs.String(), `msg="leader Lease update succeeds again"`)
}

// Of two labelers, one holds the Lease while it renews; the other takes it at once when
// the holder releases it (one more transition), never while it is held.
func TestElectorHandsOver(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset()
	var logs syncBuffer
	var a, b round
	// Whole seconds: a Lease says its term in seconds.
	stopA := a.run(t, electorLabeler(t, c, "redis-0", &logs), 2*time.Second)
	require.Eventually(t, func() bool { return a.started.Load() == 1 }, 5*time.Second, 10*time.Millisecond)
	stopB := b.run(t, electorLabeler(t, c, "redis-1", &logs), 2*time.Second)
	defer stopB()
	time.Sleep(5 * time.Second) // two terms and more: the holder renews, the other waits
	require.Zero(t, b.started.Load(), "taken while held")
	require.Equal(t, "redis-0", ptr.Deref(lease(t, c).HolderIdentity, ""))
	stopA()
	require.Eventually(t, func() bool { return b.started.Load() == 1 }, 2*time.Second, 10*time.Millisecond, "released: taken at once")
	spec := lease(t, c)
	require.Equal(t, "redis-1", ptr.Deref(spec.HolderIdentity, ""))
	require.Equal(t, int32(1), ptr.Deref(spec.LeaseTransitions, 0))
	require.NotContains(t, logs.String(), "failed", "a Lease held by another is no failure")
}

// A denied Lease write is logged once, with the fix, however often it is tried.
func TestElectorSaysWhyItIsDenied(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset()
	c.PrependReactor("create", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errForbidden("leases")
	})
	var logs syncBuffer
	var r round
	stop := r.run(t, electorLabeler(t, c, "redis-0", &logs), 600*time.Millisecond)
	time.Sleep(time.Second) // about eight tries
	stop()
	require.Zero(t, r.started.Load())
	require.Equal(t, 1, strings.Count(logs.String(), `msg="leader Lease creation failed; will retry"`), logs.String())
	require.Contains(t, logs.String(), "habring-labeler RoleBinding")
}

func errForbidden(resource string) error {
	return apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: resource}, testLease,
		errors.New(`User "system:serviceaccount:shop:habitat" cannot create resource "leases"`))
}
