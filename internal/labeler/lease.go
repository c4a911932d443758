package labeler

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/ptr"
)

// The Lease's periods, from its duration d: the holder renews every 2d/5 and gives up
// after d/2 without a renewal (client-go checks the deadline is over 1.2 periods, its
// jitter). A holder cut off at its last renewal T has given up by T + 9d/10, before
// anyone, having seen that renewal no earlier than T, may take the Lease at T + d.
//
// The renewal is what a ring costs the API server at rest: one PUT per 2d/5, 7.5 a
// minute at the default 20 s. Followers do not poll: the leader's renewals reach them on
// one watch each (leaseWatch), which is also how a new leader knows how long a dead
// holder's Lease has been still.
func leaseTimes(d time.Duration) (renewDeadline, retryPeriod time.Duration) {
	return d / 2, d * 2 / 5
}

// elector holds the coordination.k8s.io Lease name with client-go's leader election
// (acquire, renew within a deadline) and, unlike client-go's LeaderElector, which returns
// once it has lost, contends again until ctx ends. One LeaderElector serves every round:
// what it observed of another holder's Lease (and when, by this labeler's clock) carries
// over, so a lost Lease is not waited out twice.
//
// client-go's ReleaseOnCancel is off: it releases after a lost renewal too, before
// onStopped, so the fence would count the Lease held for up to another renew deadline,
// and its release writes over the Lease as last read even when another pod has taken it
// since (its IsLeader looks at what this elector last observed). releaseLease gives the
// Lease up instead, once the elector has stopped, and only when it is still this pod's.
type elector struct {
	le      *leaderelection.LeaderElector
	mu      sync.Mutex
	round   context.CancelFunc // ends the round running; nil between rounds
	leading atomic.Bool        // from client-go's OnStartedLeading to its OnStoppedLeading
}

func (l *Labeler) elector(name string, duration time.Duration, onStarted func(context.Context), onStopped func()) (*elector, error) {
	lock := &countedLock{Interface: &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: name, Namespace: l.cfg.Namespace},
		Client:     l.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: l.cfg.PodName},
	}, get: l.failures("lease-get", "leader Lease read"), create: l.failures("lease-create", "leader Lease creation"),
		update: l.failures("lease-update", "leader Lease update")}
	renewDeadline, retryPeriod := leaseTimes(duration)
	e := &elector{}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          lock,
		Name:          name,
		LeaseDuration: duration,
		RenewDeadline: renewDeadline,
		RetryPeriod:   retryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) { // in a goroutine of its own, with the round's context
				e.leading.Store(true)
				onStarted(ctx)
			},
			OnStoppedLeading: func() { // also when a round ends without having led
				e.leading.Store(false)
				onStopped()
			},
		},
	})
	if err != nil {
		return nil, err
	}
	e.le = le
	return e, nil
}

// run contends in rounds until ctx ends.
func (e *elector) run(ctx context.Context) {
	for ctx.Err() == nil {
		round, cancel := context.WithCancel(ctx)
		e.mu.Lock()
		e.round = cancel
		e.mu.Unlock()
		e.le.Run(round)
		cancel()
	}
}

// kick makes a contending elector try again now rather than at its next retry (a period
// and up to 1.2 more, jittered): its round ends, and the next one tries at once. A leading
// elector is left alone. One that lost its own Lease (its renewals failed for the renew
// deadline) is kicked too: client-go's IsLeader still says true then, as the Lease it
// last saw is its own, and its next try renews that Lease if nobody took it.
func (e *elector) kick() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.round != nil && !e.leading.Load() {
		e.round()
	}
}

// countedLock is the Lease lock with every failed request counted and logged once per
// change (failures): client-go's elector reads a failure as "not the leader" and says why
// only at a klog verbosity nobody runs with, so a missing RoleBinding or a policy denial
// would leave a group with no leader and no word why. A Lease not found is no failure:
// the first contender creates it.
type countedLock struct {
	resourcelock.Interface
	get, create, update *failures
}

// Each request is bounded by requestTimeout: client-go's elector gives an acquisition's
// requests no deadline of their own.
func (c *countedLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	r, raw, err := c.Interface.Get(ctx)
	if !apierrors.IsNotFound(err) {
		c.get.observe(err, leaseHint)
	}
	return r, raw, err
}

func (c *countedLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	err := c.Interface.Create(ctx, r)
	if !apierrors.IsAlreadyExists(err) { // another contender created it first
		c.create.observe(err, leaseHint)
	}
	return err
}

func (c *countedLock) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	err := c.Interface.Update(ctx, r)
	if !apierrors.IsConflict(err) { // another contender wrote first: the election at work
		c.update.observe(err, leaseHint)
	}
	return err
}

const leaseHint = "give the pod's service account the habring-labeler RoleBinding (get, list, watch, create, update on leases) and install deploy/labeler-policy.yaml of this release"

// releaseLease gives the Lease name up if this pod still holds it: no holder and a
// one-second term, so the next contender takes it at once. It reads the Lease first and
// writes on that read's resourceVersion, so a Lease another pod has taken is never
// touched. Call it once the elector has stopped (fence.release).
func (l *Labeler) releaseLease(ctx context.Context, name string, renewDeadline time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, renewDeadline)
	defer cancel()
	leases := l.kube.CoordinationV1().Leases(l.cfg.Namespace)
	cur, err := leases.Get(ctx, name, metav1.GetOptions{})
	if err != nil || ptr.Deref(cur.Spec.HolderIdentity, "") != l.cfg.PodName {
		return // gone, another's, or unreadable: nothing of this pod's to give up
	}
	now := metav1.NewMicroTime(time.Now())
	cur.Spec.HolderIdentity, cur.Spec.LeaseDurationSeconds = ptr.To(""), ptr.To[int32](1)
	cur.Spec.AcquireTime, cur.Spec.RenewTime = &now, &now
	_, err = leases.Update(ctx, cur, metav1.UpdateOptions{FieldManager: FieldManager})
	if err != nil && !apierrors.IsConflict(err) {
		l.log.Warn("could not give the leader Lease up; the next leader waits for it to run out", "lease", name, "err", err)
		return
	}
	if err == nil {
		l.log.Info("gave the leader Lease up", "lease", name)
	}
}

// takeOver takes the Lease name for this pod when it is still as the watch saw it run out
// (resourceVersion rv): the record client-go's elector writes when it acquires a Lease
// whose holder has not renewed it for its term, and by the same rule, only judged from
// the watch (leaseWatch), which may have seen it still since long before this labeler
// began contending. It reads the Lease fresh first and writes on that read: a watch that
// fell behind cannot make a live holder's renewals look absent, and a Lease anyone
// wrote since is left alone. The elector, kicked, then finds the Lease its own and renews
// it; the record is taken whole (holder, term, times, one more transition), as
// ValidatingAdmissionPolicy habring-labeler-own-lease-only lets a pod write a Lease only
// to hold it itself.
func (l *Labeler) takeOver(ctx context.Context, name, rv string, still time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	leases := l.kube.CoordinationV1().Leases(l.cfg.Namespace)
	cur, err := leases.Get(ctx, name, metav1.GetOptions{})
	if err != nil || cur.ResourceVersion != rv {
		l.takeOverFails.observe(ignoreNotFound(err), leaseHint)
		return false // gone (the elector creates it), written since, or unreadable
	}
	old := resourcelock.LeaseSpecToLeaderElectionRecord(&cur.Spec)
	now := metav1.NewTime(time.Now())
	cur.Spec = resourcelock.LeaderElectionRecordToLeaseSpec(&resourcelock.LeaderElectionRecord{
		HolderIdentity: l.cfg.PodName, LeaseDurationSeconds: int(l.cfg.LeaseDuration / time.Second),
		AcquireTime: now, RenewTime: now, LeaderTransitions: old.LeaderTransitions + 1,
	})
	_, err = leases.Update(ctx, cur, metav1.UpdateOptions{FieldManager: FieldManager})
	if apierrors.IsConflict(err) {
		return false // written since the read: the election at work
	}
	l.takeOverFails.observe(err, leaseHint)
	if err != nil {
		return false
	}
	l.log.Info("took the leader Lease over: its holder had not renewed it for its term", "lease", name, "holder", old.HolderIdentity, "stillFor", still.Round(100*time.Millisecond))
	return true
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
