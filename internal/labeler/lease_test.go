package labeler

import (
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
	e, err := l.elector(testLease, d, func(context.Context) { r.started.Add(1) }, func() { r.stopped.Add(1) })
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); e.run(ctx) }()
	return func() { cancel(); <-done }
}

// refuseLeaseUpdates makes c's Lease updates fail, as an API server out of reach does,
// while the flag it returns is set.
func refuseLeaseUpdates(c *fake.Clientset) *atomic.Bool {
	var refuse atomic.Bool
	c.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if refuse.Load() {
			return true, nil, errors.New("the API server is not answering")
		}
		return false, nil, nil
	})
	return &refuse
}

// The elector takes the Lease, loses it when renewals fail for the renew deadline (the
// API server refuses writes), and contends again once they succeed: unlike client-go's
// LeaderElector, it does not stop at the first loss. The refused writes are counted
// each, and logged once. Once stopped, its Lease is given up (fence.release).
func TestElectorLosesAndRetakes(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset()
	refuse := refuseLeaseUpdates(c)
	var logs syncBuffer
	l := electorLabeler(t, c, "redis-0", &logs)
	var r round
	stop := r.run(t, l, 2*time.Second) // whole seconds: a Lease says its term in seconds
	require.Eventually(t, func() bool { return r.started.Load() == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, "redis-0", ptr.Deref(lease(t, c).HolderIdentity, ""))
	refuse.Store(true)
	require.Eventually(t, func() bool { return r.stopped.Load() == 1 }, 5*time.Second, 10*time.Millisecond, "renewals failing for the deadline lose it")
	refuse.Store(false)
	require.Eventually(t, func() bool { return r.started.Load() == 2 }, 10*time.Second, 10*time.Millisecond, "contends again")
	stop()
	require.Equal(t, int32(2), r.stopped.Load(), "each round ends with a stop")
	require.Equal(t, "redis-0", ptr.Deref(lease(t, c).HolderIdentity, ""), "stopping alone writes nothing")
	l.releaseLease(t.Context(), testLease, time.Second)
	spec := lease(t, c)
	require.Empty(t, ptr.Deref(spec.HolderIdentity, ""), "released")
	require.Equal(t, int32(1), ptr.Deref(spec.LeaseDurationSeconds, 0))

	require.Regexp(t, `habring_labeler_request_failures_total\{request="lease-update"\} [1-9]`, scrape(t, l))
	require.Equal(t, 1, strings.Count(logs.String(), `msg="leader Lease update failed; will retry"`), logs.String())
	require.Contains(t, logs.String(), `msg="leader Lease update succeeds again"`)
}

// A labeler that lost its Lease (its writes refused) while another took it over gives up
// nothing when it stops: the release reads the Lease first, and it is not its own.
func TestReleaseLeavesAnotherHoldersLease(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset()
	c.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if l, ok := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease); ok && ptr.Deref(l.Spec.HolderIdentity, "") == "redis-0" {
			return true, nil, errors.New("the API server is not answering redis-0")
		}
		return false, nil, nil
	})
	var logs syncBuffer
	a := electorLabeler(t, c, "redis-0", &logs)
	var ra, rb round
	stopA := ra.run(t, a, 2*time.Second)
	require.Eventually(t, func() bool { return ra.started.Load() == 1 }, 5*time.Second, 10*time.Millisecond, "created: no update needed")
	stopB := rb.run(t, electorLabeler(t, c, "redis-1", &logs), 2*time.Second)
	defer stopB()
	require.Eventually(t, func() bool { return ra.stopped.Load() == 1 }, 5*time.Second, 10*time.Millisecond, "a's renewals refused: lost")
	require.Eventually(t, func() bool { return rb.started.Load() == 1 }, 10*time.Second, 10*time.Millisecond, "b takes it once it runs out")
	stopA()
	a.releaseLease(t.Context(), testLease, time.Second)
	require.Equal(t, "redis-1", ptr.Deref(lease(t, c).HolderIdentity, ""), "a's release cleared b's Lease")
	require.Equal(t, int32(2), ptr.Deref(lease(t, c).LeaseDurationSeconds, 0))
}

// Of two labelers, one holds the Lease while it renews; the other takes it at once when
// the holder stops and gives it up (one more transition), never while it is held.
func TestElectorHandsOver(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset()
	var logs syncBuffer
	var a, b round
	// Whole seconds: a Lease says its term in seconds.
	la := electorLabeler(t, c, "redis-0", &logs)
	stopA := a.run(t, la, 2*time.Second)
	require.Eventually(t, func() bool { return a.started.Load() == 1 }, 5*time.Second, 10*time.Millisecond)
	stopB := b.run(t, electorLabeler(t, c, "redis-1", &logs), 2*time.Second)
	defer stopB()
	time.Sleep(5 * time.Second) // two terms and more: the holder renews, the other waits
	require.Zero(t, b.started.Load(), "taken while held")
	require.Equal(t, "redis-0", ptr.Deref(lease(t, c).HolderIdentity, ""))
	stopA()
	la.releaseLease(t.Context(), testLease, time.Second) // as fence.release does
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
	l := electorLabeler(t, c, "redis-0", &logs)
	stop := r.run(t, l, 2*time.Second)
	time.Sleep(2 * time.Second) // about five tries, one every 333 ms and more
	stop()
	require.Zero(t, r.started.Load())
	require.Regexp(t, `habring_labeler_request_failures_total\{request="lease-create"\} ([2-9]|[1-9][0-9])`, scrape(t, l), "every try counted")
	require.Equal(t, 1, strings.Count(logs.String(), `msg="leader Lease creation failed; will retry"`), logs.String())
	require.Contains(t, logs.String(), "habring-labeler RoleBinding")
}

func errForbidden(resource string) error {
	return apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: resource}, testLease,
		errors.New(`User "system:serviceaccount:shop:habitat" cannot create resource "leases"`))
}

// fencedLabeler is a Labeler of pod in ring main whose fence follows the Lease of group
// redis.default (testLease), its clock fake: the tests move it.
func fencedLabeler(t *testing.T, c *fake.Clientset, pod string, logs *syncBuffer) (*Labeler, *testingclock.FakeClock) {
	t.Helper()
	l := electorLabeler(t, c, pod, logs)
	l.cfg.Ring = "main"
	l.fence.follow(t.Context(), "redis.default")
	t.Cleanup(func() { l.fence.release(); l.fence.unfollow() })
	w := l.fence.watch
	require.Eventually(t, func() bool { _, _, ok := w.seen(); return ok }, 5*time.Second, 10*time.Millisecond, "the watch lists")
	return l, l.clock.(*testingclock.FakeClock)
}

func heldLease(holder string, term int32) *coordinationv1.Lease {
	now := metav1.NewMicroTime(time.Now())
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: testLease, Namespace: "shop"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder), LeaseDurationSeconds: ptr.To(term),
			AcquireTime: &now, RenewTime: &now, LeaseTransitions: ptr.To[int32](3)}}
}

// A labeler whose Supervisor is elected while its group's Lease has not changed for a
// term (its holder cut off or dead since) takes it at once: its watch has seen it still
// since long before it began contending. client-go's elector alone would wait a whole
// term from its first read (20 s here, by the real clock; the watch's clock is moved).
func TestContenderTakesOverALeaseStillForItsTerm(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset(heldLease("redis-0", 20))
	var logs syncBuffer
	l, clk := fencedLabeler(t, c, "redis-1", &logs)
	clk.Step(19 * time.Second)
	l.fence.contend(t.Context(), "redis.default")
	require.False(t, l.fence.held("redis.default"), "still for less than its term: not taken")
	require.Eventually(t, clk.HasWaiters, 5*time.Second, time.Millisecond, "waits for the term's end")
	clk.Step(2 * time.Second)
	require.Eventually(t, func() bool { return l.fence.held("redis.default") }, 2*time.Second, 10*time.Millisecond, "taken at the term's end")
	spec := lease(t, c)
	require.Equal(t, "redis-1", ptr.Deref(spec.HolderIdentity, ""))
	require.Equal(t, int32(4), ptr.Deref(spec.LeaseTransitions, 0), "one transition more")
	require.Equal(t, int32(20), ptr.Deref(spec.LeaseDurationSeconds, 0))
	require.Contains(t, logs.String(), `msg="took the leader Lease over: its holder had not renewed it for its term"`)
}

// A holder's term is the longer of the contender's and the one its Lease states.
func TestContenderWaitsOutALongerStatedTerm(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset(heldLease("redis-0", 60))
	var logs syncBuffer
	l, clk := fencedLabeler(t, c, "redis-1", &logs)
	clk.Step(30 * time.Second)
	l.fence.contend(t.Context(), "redis.default")
	require.False(t, l.fence.held("redis.default"))
	require.Eventually(t, clk.HasWaiters, 5*time.Second, time.Millisecond, "waits for the term's end")
	clk.Step(31 * time.Second)
	require.Eventually(t, func() bool { return l.fence.held("redis.default") }, 2*time.Second, 10*time.Millisecond)
}

// A Lease written since the watch saw it (a watch fallen behind) is not taken over: the
// takeover reads it fresh first.
func TestTakeOverLeavesALeaseWrittenSince(t *testing.T) {
	t.Parallel()
	seenLease := heldLease("redis-0", 20)
	seenLease.ResourceVersion = "1"
	c := fake.NewClientset(seenLease)
	var logs syncBuffer
	l := electorLabeler(t, c, "redis-1", &logs)
	cur, err := c.CoordinationV1().Leases("shop").Get(t.Context(), testLease, metav1.GetOptions{})
	require.NoError(t, err)
	seen := cur.ResourceVersion
	cur.ResourceVersion = "2" // the fake tracker keeps what it is given
	_, err = c.CoordinationV1().Leases("shop").Update(t.Context(), cur, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.False(t, l.takeOver(t.Context(), testLease, seen, time.Minute))
	require.Equal(t, "redis-0", ptr.Deref(lease(t, c).HolderIdentity, ""))
}

// A contender learns from its watch that the Lease was given up and takes it at once, not
// at its elector's next retry (8 s and more at the default term).
func TestContenderTakesAGivenUpLeaseAtOnce(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset(heldLease("redis-0", 20))
	var logs syncBuffer
	l, _ := fencedLabeler(t, c, "redis-1", &logs)
	l.fence.contend(t.Context(), "redis.default")
	require.False(t, l.fence.held("redis.default"))
	time.Sleep(200 * time.Millisecond) // the elector has tried, and waits for its next retry
	holder := electorLabeler(t, c, "redis-0", &logs)
	holder.releaseLease(t.Context(), testLease, time.Second)
	require.Eventually(t, func() bool { return l.fence.held("redis.default") }, 2*time.Second, 10*time.Millisecond)
}

// A labeler that lost its own Lease to failed renewals (the API server out of reach) and
// is still labelled leader takes it back at once when the API server answers again, not
// at its elector's next retry: its label need not come off and go on again. One whose
// Lease another pod took keeps nothing.
func TestRegainTakesBackOwnLeaseAtOnce(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset()
	refuse := refuseLeaseUpdates(c)
	var logs syncBuffer
	l, _ := fencedLabeler(t, c, "redis-1", &logs)
	l.cfg.LeaseDuration = 5 * time.Second // renewed every 2 s, lost after 2.5 s more
	l.fence.contend(t.Context(), "redis.default")
	require.Eventually(t, func() bool { return l.fence.held("redis.default") }, 5*time.Second, 10*time.Millisecond)
	refuse.Store(true)
	require.Eventually(t, func() bool { return !l.fence.held("redis.default") }, 10*time.Second, 10*time.Millisecond, "renewals refused: lost")
	time.Sleep(100 * time.Millisecond) // the next round's first try has failed; it waits 2 s and more
	refuse.Store(false)
	require.True(t, l.fence.regain("redis.default"), "nobody took it: the label may stay")
	require.Eventually(t, func() bool { return l.fence.held("redis.default") }, time.Second, 10*time.Millisecond, "taken back at once")
	require.Equal(t, "redis-1", ptr.Deref(lease(t, c).HolderIdentity, ""))

	other := heldLease("redis-0", 5)
	cur, err := c.CoordinationV1().Leases("shop").Get(t.Context(), testLease, metav1.GetOptions{})
	require.NoError(t, err)
	other.ResourceVersion = cur.ResourceVersion
	_, err = c.CoordinationV1().Leases("shop").Update(t.Context(), other, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !l.fence.held("redis.default") }, 5*time.Second, 10*time.Millisecond, "the watch shows another holder")
	require.False(t, l.fence.regain("redis.default"), "taken by another: the label comes off")
}
