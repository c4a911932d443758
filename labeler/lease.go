package labeler

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// elector holds the coordination.k8s.io Lease name with client-go's leader election
// (acquire, renew within a deadline, release on stop) and, unlike client-go's
// LeaderElector, which returns once it has lost, contends again until ctx ends. One
// LeaderElector serves every round: what it observed of another holder's Lease (and when,
// by this labeler's clock) carries over, so a lost Lease is not waited out twice.
//
// The Lease lasts duration; the holder renews every duration/6 and gives up after
// 2*duration/3 without a renewal; a release clears the holder and shortens the term to a
// second. A release only writes when this labeler observed itself the holder; the
// policy deploy/labeler-policy.yaml denies a labeler clearing another pod's Lease besides.
func (l *Labeler) elector(name string, duration time.Duration, onStarted func(context.Context), onStopped func()) (run func(context.Context), err error) {
	lock := &countedLock{Interface: &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: name, Namespace: l.cfg.Namespace},
		Client:     l.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: l.cfg.PodName},
	}, get: l.failures("lease-get", "leader Lease read"), create: l.failures("lease-create", "leader Lease creation"),
		update: l.failures("lease-update", "leader Lease update")}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		Name:            name,
		LeaseDuration:   duration,
		RenewDeadline:   duration * 2 / 3,
		RetryPeriod:     duration / 6,
		ReleaseOnCancel: true,
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

func (c *countedLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	r, raw, err := c.Interface.Get(ctx)
	if !apierrors.IsNotFound(err) {
		c.get.observe(err, leaseHint)
	}
	return r, raw, err
}

func (c *countedLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	err := c.Interface.Create(ctx, r)
	c.create.observe(err, leaseHint)
	return err
}

func (c *countedLock) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	err := c.Interface.Update(ctx, r)
	if !apierrors.IsConflict(err) { // another contender wrote first: the election at work
		c.update.observe(err, leaseHint)
	}
	return err
}

const leaseHint = "give the pod's service account the habring-labeler RoleBinding (get, create, update on leases) and install deploy/labeler-policy.yaml of this release"
