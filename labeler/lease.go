package labeler

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"time"

	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/labeler/kube"
)

// elector holds one coordination.k8s.io Lease as client-go's leaderelection does
// (acquire, renew within a deadline, release on stop), over the labeler's small API:
// client-go's package links the typed clientset, several MiB in every ring pod. Unlike
// client-go's LeaderElector, which returns once it has lost, it contends again.
//
// The rules are client-go's: a Lease held by another is free only once it has not
// changed for its leaseDurationSeconds by this labeler's own clock (no clock skew between
// pods matters); every write carries the resourceVersion read, so of two contenders
// one wins; a release clears the holder and shortens the duration to a second.
type elector struct {
	api      API
	name, id string
	// duration is the Lease's term; renewDeadline how long the holder keeps trying to
	// renew before it gives up; retry the time between attempts.
	duration, renewDeadline, retry time.Duration
	clock                          clock.Clock
	onStarted, onStopped           func()

	observed     kube.LeaseSpec // the spec last read or written
	observedTime time.Time      // when it last changed, by this clock
	held         bool           // the last write was ours and succeeded
}

// run contends until ctx ends, then gives a held Lease up.
func (e *elector) run(ctx context.Context) {
	defer e.release()
	for {
		// Acquire: try every retry period (jittered) until it is ours.
		for !e.tryAcquireOrRenew(ctx) {
			if !e.sleep(ctx, jitter(e.retry, 1.2)) {
				return
			}
		}
		e.onStarted()
		// Renew every retry period; when no renewal succeeds within the deadline, it is lost.
		for {
			if !e.sleep(ctx, e.retry) {
				return
			}
			deadline := e.clock.Now().Add(e.renewDeadline)
			renewed := false
			for !renewed && e.clock.Now().Before(deadline) {
				rctx, cancel := context.WithDeadline(ctx, deadline)
				renewed = e.tryAcquireOrRenew(rctx)
				cancel()
				if !renewed && !e.sleep(ctx, min(e.retry, deadline.Sub(e.clock.Now()))) {
					return
				}
			}
			if !renewed {
				e.held = false
				e.onStopped()
				break
			}
		}
	}
}

func (e *elector) sleep(ctx context.Context, d time.Duration) bool { return sleep(ctx, e.clock, d) }

// tryAcquireOrRenew takes or renews the Lease if it is free or ours; it reports whether
// it is ours now.
func (e *elector) tryAcquireOrRenew(ctx context.Context) bool {
	now := e.clock.Now()
	seconds := int32(min(e.duration/time.Second, math.MaxInt32)) //nolint:gosec // bounded on the line itself
	want := kube.LeaseSpec{
		HolderIdentity:       ptr.To(e.id),
		LeaseDurationSeconds: ptr.To(seconds),
		AcquireTime:          kube.NewMicroTime(now),
		RenewTime:            kube.NewMicroTime(now),
	}
	cur, err := e.api.GetLease(ctx, e.name)
	if kube.IsNotFound(err) {
		created, err := e.api.CreateLease(ctx, kube.NewLease(e.name, want))
		if err != nil {
			return false
		}
		e.observe(created.Spec, now)
		e.held = true
		return true
	}
	if err != nil {
		return false
	}
	if !sameSpec(cur.Spec, e.observed) {
		e.observe(cur.Spec, now)
	}
	holder := ptr.Deref(cur.Spec.HolderIdentity, "")
	term := time.Duration(ptr.Deref(cur.Spec.LeaseDurationSeconds, seconds)) * time.Second
	if holder != "" && holder != e.id && now.Before(e.observedTime.Add(term)) {
		return false // another's, and not expired by our clock
	}
	if holder == e.id {
		want.AcquireTime, want.LeaseTransitions = cur.Spec.AcquireTime, cur.Spec.LeaseTransitions
	} else {
		want.LeaseTransitions = ptr.To(ptr.Deref(cur.Spec.LeaseTransitions, 0) + 1)
	}
	next := *cur
	next.Spec = want
	updated, err := e.api.UpdateLease(ctx, &next) // carries cur's resourceVersion: a conflict loses
	if err != nil {
		return false
	}
	e.observe(updated.Spec, now)
	e.held = true
	return true
}

func (e *elector) observe(spec kube.LeaseSpec, now time.Time) {
	e.observed, e.observedTime = spec, now
}

// sameSpec compares two specs as the API server keeps them (times to the microsecond).
func sameSpec(a, b kube.LeaseSpec) bool {
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && bytes.Equal(ja, jb)
}

// release gives a held Lease up: no holder, a one-second term, so the next contender
// takes it at once.
func (e *elector) release() {
	if !e.held {
		return
	}
	e.held = false
	defer e.onStopped()
	ctx, cancel := context.WithTimeout(context.Background(), e.renewDeadline)
	defer cancel()
	cur, err := e.api.GetLease(ctx, e.name)
	if err != nil || ptr.Deref(cur.Spec.HolderIdentity, "") != e.id {
		return
	}
	next := *cur
	now := kube.NewMicroTime(e.clock.Now())
	next.Spec.HolderIdentity, next.Spec.LeaseDurationSeconds = ptr.To(""), ptr.To[int32](1)
	next.Spec.AcquireTime, next.Spec.RenewTime = now, now
	_, _ = e.api.UpdateLease(ctx, &next)
}
