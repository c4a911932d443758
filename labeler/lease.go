package labeler

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/ptr"
)

// elector holds the coordination.k8s.io Lease name with client-go's leader election
// (acquire, renew within a deadline) and, unlike client-go's LeaderElector, which returns
// once it has lost, contends again until ctx ends. One LeaderElector serves every round:
// what it observed of another holder's Lease (and when, by this labeler's clock) carries
// over, so a lost Lease is not waited out twice.
//
// The Lease lasts duration; the holder renews every duration/6 and gives up after
// 2*duration/3 without a renewal, when onStopped runs at once. client-go's
// ReleaseOnCancel is off: it releases after a lost renewal too, before onStopped, so the
// fence would count the Lease held for up to another renew deadline, and its release
// writes over the Lease as last read even when another pod has taken it since (its
// IsLeader looks at what this elector last observed). releaseLease gives the Lease up
// instead, once the elector has stopped, and only when it is still this pod's.
func (l *Labeler) elector(name string, duration time.Duration, onStarted func(context.Context), onStopped func()) (run func(context.Context), err error) {
	lock := &countedLock{Interface: &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: name, Namespace: l.cfg.Namespace},
		Client:     l.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: l.cfg.PodName},
	}, get: l.failures("lease-get", "leader Lease read"), create: l.failures("lease-create", "leader Lease creation"),
		update: l.failures("lease-update", "leader Lease update")}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          lock,
		Name:          name,
		LeaseDuration: duration,
		RenewDeadline: duration * 2 / 3,
		RetryPeriod:   duration / 6,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: onStarted, // in a goroutine of its own, with the round's context
			OnStoppedLeading: onStopped, // also when a round ends without having led
		},
	})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) {
		for ctx.Err() == nil {
			le.Run(ctx)
		}
	}, nil
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

const leaseHint = "give the pod's service account the habring-labeler RoleBinding (get, create, update on leases) and install deploy/labeler-policy.yaml of this release"

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
