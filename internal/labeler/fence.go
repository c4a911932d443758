package labeler

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
)

// fence makes the leader label exclusive within a ring and service group. Supervisors can
// both claim a group for a while (habitat #2315), and a labeler can die while its pod is
// labelled; the label alone would then sit on two pods. A labeler labels its pod leader
// only while it holds the group's coordination.k8s.io Lease (elector: client-go's leader
// election rules) and no other pod of the group carries the label; it takes the label
// off before it lets the Lease go.
type fence struct {
	l       *Labeler
	mu      sync.Mutex
	name    string             // the Lease this fence runs for; "" when none runs
	cancel  context.CancelFunc // stops the elector (release then gives the Lease up)
	elector *elector           // the elector running; nil when none runs
	done    chan struct{}
	holding atomic.Bool
	wake    chan struct{} // the census loop looks again at once when the Lease is won or lost
	// watch follows the group's Lease from the first census that names the group, in
	// every labeler: what a contender knows of it before it contends (leaseWatch).
	watch *leaseWatch
}

// acquireWait is how long a labeler that has just started contending waits for the Lease
// before it decides: a restarted leader's labeler renews its own Lease at once, and its
// label should not blink.
const acquireWait = 2 * time.Second

func newFence(l *Labeler) *fence { return &fence{l: l, wake: make(chan struct{}, 1)} }

// LeaseName is the Lease of a ring's service group: habring-<ring>-<group>, e.g.
// habring-main-redis.default.
func LeaseName(ring, group string) string {
	return strings.ToLower("habring-" + ring + "-" + group)
}

// held reports whether this labeler holds the Lease for group now: its elector leads, and
// the watch, when it has its first list, does not show another holder. client-go's
// elector counts its term from its last renewal's reply and steps down only at its renew
// deadline, even once another has taken the Lease; the watch tells sooner.
func (f *fence) held(group string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.name != LeaseName(f.l.cfg.Ring, group) || !f.holding.Load() {
		return false
	}
	if f.watch == nil || f.watch.name != f.name {
		return true
	}
	lease, _, ok := f.watch.seen()
	return !ok || (lease != nil && ptr.Deref(lease.Spec.HolderIdentity, "") == f.l.cfg.PodName)
}

// regain is for a labeler that lost its own Lease while its label stayed on: its
// renewals failed for the renew deadline (the API server out of reach, so it could not
// take the label off either). When the watch, as last seen, still shows it the holder
// (nobody took the Lease since its last renewal), it kicks the elector to renew at once
// rather than at its next retry, and reports true: the label may stay. A pod whose
// Supervisor still leads then keeps its label through an API server outage; without it,
// the label would come off at the first write that gets through (decided while the
// server was out of reach) and go on again a retry later. It stays exclusive: a pod that
// takes the Lease over takes this pod's label off before it labels its own.
func (f *fence) regain(group string) bool {
	f.mu.Lock()
	e, w, name := f.elector, f.watch, f.name
	f.mu.Unlock()
	if e == nil || name != LeaseName(f.l.cfg.Ring, group) || w == nil || w.name != name {
		return false
	}
	if lease, _, ok := w.seen(); !ok || lease == nil || ptr.Deref(lease.Spec.HolderIdentity, "") != f.l.cfg.PodName {
		return false
	}
	e.kick()
	return true
}

// follow watches group's Lease, and no other. Only the census loop calls it.
func (f *fence) follow(ctx context.Context, group string) {
	name := LeaseName(f.l.cfg.Ring, group)
	if f.watch != nil && f.watch.name == name {
		return
	}
	f.unfollow()
	w := f.l.watchLease(ctx, name, f.poke) // a change of holder may change held
	f.mu.Lock()
	f.watch = w
	f.mu.Unlock()
}

// unfollow stops the watch, if one runs.
func (f *fence) unfollow() {
	f.mu.Lock()
	w := f.watch
	f.watch = nil
	f.mu.Unlock()
	if w != nil {
		w.close()
	}
}

// contend makes sure an elector runs for group's Lease (and for no other group).
func (f *fence) contend(ctx context.Context, group string) {
	name := LeaseName(f.l.cfg.Ring, group)
	f.mu.Lock()
	running := f.name
	f.mu.Unlock()
	if running == name {
		return
	}
	if running != "" {
		f.release()
	}
	won := make(chan struct{})
	var wonOnce sync.Once
	done := make(chan struct{})
	e, err := f.l.elector(name, f.l.cfg.LeaseDuration,
		// client-go calls this in a goroutine of its own, which may run late: only while
		// its round leads (lctx) and this elector is still the fence's does it count.
		func(lctx context.Context) {
			f.mu.Lock()
			current := lctx.Err() == nil && f.done == done
			if current {
				f.holding.Store(true)
			}
			f.mu.Unlock()
			if current {
				wonOnce.Do(func() { close(won) })
				f.l.log.Info("holding the leader Lease", "lease", name)
				f.poke()
			}
		},
		func() {
			f.mu.Lock()
			was := f.holding.Swap(false)
			f.mu.Unlock()
			if was {
				f.l.log.Info("no longer holding the leader Lease", "lease", name)
			}
			f.poke()
		})
	if err != nil { // the durations, checked by Config.Validate: a bug if it happens
		f.l.log.Error("cannot contend for the leader Lease", "lease", name, "err", err)
		return
	}
	ectx, cancel := context.WithCancel(ctx)
	f.mu.Lock()
	f.name, f.cancel, f.done, f.elector = name, cancel, done, e
	f.mu.Unlock()
	f.mu.Lock()
	w := f.watch
	f.mu.Unlock()
	go func() {
		defer close(done)
		var hurrying sync.WaitGroup
		if w != nil && w.name == name {
			hurrying.Go(func() { f.hurry(ectx, e, w) })
		}
		e.run(ectx)
		hurrying.Wait() // nothing of this round writes the Lease after release
	}()
	select { // a moment to win it, so a restarted leader's label does not blink
	case <-won:
	case <-time.After(acquireWait):
	case <-ctx.Done():
	}
}

// hurry has the contending elector e take the Lease as soon as client-go's rule lets
// anyone, not at its next retry (a period and up to 1.2 more, jittered): at once when the
// watch sees it given up or gone (kick), and when the watch has seen it unchanged for its
// term, which it may have been since long before this labeler began contending
// (takeOver). The holder's term is the longer of this labeler's and the one its Lease
// states, so a holder of another release with a longer one is waited out in full.
func (f *fence) hurry(ctx context.Context, e *elector, w *leaseWatch) {
	_, retry := leaseTimes(f.l.cfg.LeaseDuration)
	for first := true; ; first = false {
		wait := time.Duration(-1) // until the Lease changes
		lease, since, ok := w.seen()
		holder := ""
		if lease != nil {
			holder = ptr.Deref(lease.Spec.HolderIdentity, "")
		}
		switch {
		case !ok || f.holding.Load() || holder == f.l.cfg.PodName:
			// No list yet; held; or this pod's from before, renewed at the elector's first try.
		case holder == "":
			if !first { // the elector's first try is at once anyway
				e.kick() // given up, or none yet: taken or created now
			}
		default:
			term := max(f.l.cfg.LeaseDuration, time.Duration(ptr.Deref(lease.Spec.LeaseDurationSeconds, 0))*time.Second)
			still := f.l.clock.Since(since)
			switch {
			case still < term:
				wait = term - still
			case f.l.takeOver(ctx, w.name, lease.ResourceVersion, still):
				e.kick()
			default:
				wait = retry // not taken: look again in a period, unless it changes first
			}
		}
		var timer clock.Timer
		var fired <-chan time.Time
		if wait >= 0 {
			timer = f.l.clock.NewTimer(wait)
			fired = timer.C()
		}
		select {
		case <-ctx.Done():
		case <-w.changed:
		case <-fired:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// release stops contending; a held Lease is given up (its holder cleared) before it
// returns. Call it only once the label is off.
func (f *fence) release() {
	f.mu.Lock()
	name, cancel, done := f.name, f.cancel, f.done
	f.name, f.cancel, f.done, f.elector = "", nil, nil, nil
	f.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	f.holding.Store(false)
	renewDeadline, _ := leaseTimes(f.l.cfg.LeaseDuration)
	f.l.releaseLease(context.Background(), name, renewDeadline)
}

func (f *fence) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// otherLeaders names the other pods of the ring labelled leader that belong to group:
// those whose address is a member of the group in the census (a pod whose Supervisor the
// census does not know is another group's). With no addresses in the census, every other
// pod of the ring labelled leader counts, and members is false: such a pod may lead
// another group, so its label is waited for, never taken off.
func (l *Labeler) otherLeaders(ctx context.Context, c *Census, group string) (pods []string, members bool, err error) {
	ips := map[string]bool{}
	for _, m := range c.Groups[group].Population {
		if m.Sys.IP != "" {
			ips[m.Sys.IP] = true
		}
	}
	sel := contract.LabelRole + "=" + contract.RoleLeader
	if l.cfg.Ring != "" {
		sel += "," + contract.LabelRing + "=" + l.cfg.Ring
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := l.pods().List(ctx, metav1.ListOptions{LabelSelector: sel})
	l.leaderListFails.observe(err, rbacHint(l.cfg.Namespace))
	if err != nil {
		return nil, false, fmt.Errorf("list the pods labelled leader: %w", err)
	}
	for _, p := range list.Items {
		if p.Name == l.cfg.PodName {
			continue
		}
		if len(ips) == 0 || ips[p.Status.PodIP] {
			pods = append(pods, p.Name)
		}
	}
	return pods, len(ips) > 0, nil
}
