package labeler

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	cancel  context.CancelFunc // stops the elector, which then releases the Lease
	done    chan struct{}
	holding atomic.Bool
	wake    chan struct{} // the census loop looks again at once when the Lease is won or lost
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

// held reports whether this labeler holds the Lease for group now.
func (f *fence) held(group string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.name == LeaseName(f.l.cfg.Ring, group) && f.holding.Load()
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
	run, err := f.l.elector(name, f.l.cfg.LeaseDuration,
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
	f.name, f.cancel, f.done = name, cancel, done
	f.mu.Unlock()
	go func() {
		defer close(done)
		run(ectx)
	}()
	select { // a moment to win it, so a restarted leader's label does not blink
	case <-won:
	case <-time.After(acquireWait):
	case <-ctx.Done():
	}
}

// release stops contending; a held Lease is given up (its holder cleared) before it
// returns. Call it only once the label is off.
func (f *fence) release() {
	f.mu.Lock()
	name, cancel, done := f.name, f.cancel, f.done
	f.name, f.cancel, f.done = "", nil, nil
	f.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	f.holding.Store(false)
	f.l.releaseLease(context.Background(), name, f.l.cfg.LeaseDuration*2/3)
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
