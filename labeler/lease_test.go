package labeler

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

func newElector(api API, id string, clk clock.Clock) *elector {
	return &elector{api: api, name: "habring-main-redis.default", id: id, clock: clk,
		duration: 15 * time.Second, renewDeadline: 10 * time.Second, retry: 2500 * time.Millisecond,
		onStarted: func() {}, onStopped: func() {}}
}

func lease(t *testing.T, c *fake.Clientset) coordinationv1.LeaseSpec {
	t.Helper()
	l, err := c.CoordinationV1().Leases("shop").Get(t.Context(), "habring-main-redis.default", metav1.GetOptions{})
	require.NoError(t, err)
	return l.Spec
}

// The rules of client-go's leader election: the first takes the Lease; another waits
// until it has not changed for its term by its own clock, then takes it over (one more
// transition); a holder renews; a release clears the holder and shortens the term.
func TestElectorRules(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset()
	api := clientsetAPI{c, "shop"}
	clk := testingclock.NewFakeClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	a, b := newElector(api, "redis-0", clk), newElector(api, "redis-1", clk)
	ctx := t.Context()

	require.True(t, a.tryAcquireOrRenew(ctx))
	require.Equal(t, "redis-0", *lease(t, c).HolderIdentity)
	require.Equal(t, int32(15), *lease(t, c).LeaseDurationSeconds)
	require.False(t, b.tryAcquireOrRenew(ctx), "held and fresh")
	clk.Step(10 * time.Second)
	require.True(t, a.tryAcquireOrRenew(ctx), "the holder renews")
	require.True(t, clk.Now().Equal(lease(t, c).RenewTime.Time))
	clk.Step(14 * time.Second)
	require.False(t, b.tryAcquireOrRenew(ctx), "b sees the renewal only now: the term runs from this read, by b's clock")
	clk.Step(15 * time.Second)
	require.True(t, b.tryAcquireOrRenew(ctx), "unchanged for a whole term: b takes it over")
	spec := lease(t, c)
	require.Equal(t, "redis-1", *spec.HolderIdentity)
	require.Equal(t, int32(1), *spec.LeaseTransitions)
	require.True(t, clk.Now().Equal(spec.AcquireTime.Time))
	require.False(t, a.tryAcquireOrRenew(ctx), "a lost it")

	b.release()
	spec = lease(t, c)
	require.Empty(t, ptr.Deref(spec.HolderIdentity, ""))
	require.Equal(t, int32(1), *spec.LeaseDurationSeconds)
	require.True(t, a.tryAcquireOrRenew(ctx), "released: free at once")
	require.Equal(t, int32(2), *lease(t, c).LeaseTransitions)
}

// Of two contenders writing on the same read, the API server's resourceVersion check lets
// one win: the loser's update conflicts and it does not think it holds the Lease.
func TestElectorConflictLoses(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset(&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "habring-main-redis.default", Namespace: "shop", ResourceVersion: "1"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("")}})
	c.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New(`Operation cannot be fulfilled on leases.coordination.k8s.io "habring-main-redis.default": the object has been modified`)
	})
	e := newElector(clientsetAPI{c, "shop"}, "redis-0", clock.RealClock{})
	require.False(t, e.tryAcquireOrRenew(t.Context()))
	require.False(t, e.held)
}

// run takes the Lease, loses it when renewals fail for the renew deadline (the API server
// refuses writes), and contends again once they succeed: unlike client-go's
// LeaderElector, it does not stop at the first loss. On stop it releases the Lease.
func TestElectorRunLosesAndRetakes(t *testing.T) {
	t.Parallel()
	c := fake.NewClientset()
	var refuse atomic.Bool
	c.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if refuse.Load() {
			return true, nil, errors.New("the API server is not answering")
		}
		return false, nil, nil
	})
	var started, stopped atomic.Int32
	e := &elector{api: clientsetAPI{c, "shop"}, name: "habring-main-redis.default", id: "redis-0", clock: clock.RealClock{},
		duration: 600 * time.Millisecond, renewDeadline: 400 * time.Millisecond, retry: 50 * time.Millisecond,
		onStarted: func() { started.Add(1) }, onStopped: func() { stopped.Add(1) }}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); e.run(ctx) }()
	require.Eventually(t, func() bool { return started.Load() == 1 }, 5*time.Second, 10*time.Millisecond)
	refuse.Store(true)
	require.Eventually(t, func() bool { return stopped.Load() == 1 }, 5*time.Second, 10*time.Millisecond, "renewals failing for the deadline lose it")
	refuse.Store(false)
	require.Eventually(t, func() bool { return started.Load() == 2 }, 5*time.Second, 10*time.Millisecond, "contends again")
	cancel()
	<-done
	require.Equal(t, int32(2), stopped.Load(), "stopping releases the held Lease")
	require.Empty(t, ptr.Deref(lease(t, c).HolderIdentity, ""))
}
