package labeler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/habring/habring/contract"
)

// keepRole is the census loop: read, decide, write the label when it changes. The leader
// label is fenced (fence.go): it is written only while this labeler holds the group's
// Lease and no other pod of the group carries it, and taken off before the Lease goes.
func (l *Labeler) keepRole(ctx context.Context, own *corev1.Pod) {
	current := own.Labels[contract.LabelRole] // "" when unknown: the first decision is written
	joined := newJoinedGate(l, own)
	defer func() {
		// Stopping (SIGTERM): the label comes off before the Lease goes, so the next
		// leader need not wait for this pod to be gone.
		if current == contract.RoleLeader {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := l.setRole(sctx, contract.RoleNone); err != nil {
				l.log.Warn("could not take the leader label off while stopping; the next leader waits until this pod is gone", "err", err)
			}
			cancel()
		}
		l.fence.release()
		l.fence.unfollow()
	}()
	lastOK := l.clock.Now() // a Supervisor that never answers is stale after StaleAfter too
	failing := false        // in a streak of failed reads: warn once, not every read
	retry := l.backoff()
	group := ""     // the service group last decided
	blocked := ""   // why the label leader is held back, as last logged (logged once per change)
	atEdge := false // the group's quorum margin is 0 or less (logged once per time it gets there)
	for {
		c, role, g, err := l.read(ctx)
		want := role
		if err != nil {
			l.censusOK.Store(false)
			l.metrics.censusFails.Inc()
			if !failing {
				l.log.Warn("census read failed; keeping the last label until --stale-after", "err", err, "staleAfter", l.cfg.StaleAfter)
			} else {
				l.log.Debug("census read failed again", "err", err)
			}
			failing = true
			want = current
			switch {
			case current == contract.RoleLeader && errors.Is(err, syscall.ECONNREFUSED):
				// Nothing listens on this pod's gateway: its Supervisor is not running, so it
				// leads nothing (one restarted in place is a new member). Keeping the label
				// for --stale-after would keep redis-master on a dead service that long.
				l.log.Warn("the Supervisor's gateway refuses connections: it is not running; leader label off", "err", err)
				want = contract.RoleNone
			case l.clock.Since(lastOK) >= l.cfg.StaleAfter:
				want = contract.RoleNone
				joined.set(ctx, false, "SupervisorUnreachable", "the Supervisor's /census has not answered for "+l.cfg.StaleAfter.String())
			}
		} else {
			if failing {
				l.log.Info("census read recovered", "group", g)
				failing = false
			}
			l.censusOK.Store(true)
			lastOK = l.clock.Now()
			retry.Reset()
			group = g
			if group != "" {
				l.fence.follow(ctx, group)
			}
			joined.observe(ctx, c)
			atEdge = l.watchQuorum(c, group, atEdge)
		}
		if want == contract.RoleLeader {
			want = l.fenced(ctx, c, group, current, &blocked)
		}
		if want != "" && want != current {
			if err := l.setRole(ctx, want); err == nil { // a failure is logged by setRole, once per change
				l.log.Info("role label changed", "from", current, "to", want, "group", group)
				switch {
				case want == contract.RoleLeader:
					l.event(corev1.EventTypeNormal, EventLeader, "labelled leader of service group %s, holding the Lease %s", group, LeaseName(l.cfg.Ring, group))
				case want == contract.RoleFollower:
					l.event(corev1.EventTypeNormal, EventFollower, "labelled follower of service group %s", group)
				case current == contract.RoleLeader:
					l.event(corev1.EventTypeNormal, EventNotLeader, "leader label taken off (service group %s): its Supervisor no longer leads, or cannot be read", group)
				}
				current = want
			}
		}
		if current != contract.RoleLeader && role != contract.RoleLeader {
			l.fence.release() // the label is off: the Lease may go
		}
		if group != "" {
			l.metrics.group(group, current == contract.RoleLeader, role == contract.RoleLeader && current != contract.RoleLeader)
		}
		next := wait.Jitter(l.cfg.Interval, 0.2)
		if err != nil {
			next = retry.NextBackOff()
			// Never sleep past the moment a kept label turns stale.
			if untilStale := lastOK.Add(l.cfg.StaleAfter).Sub(l.clock.Now()); current != contract.RoleNone && untilStale > 0 && untilStale < next {
				next = untilStale
			}
		}
		timer := l.clock.NewTimer(next) // stopped when woken early: no timer is left behind
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-l.fence.wake:
		case <-timer.C():
		}
		timer.Stop()
	}
}

// watchQuorum exports the group's members by health and quorum margin, and says once,
// each time it gets there, that the margin is 0 or less. It returns whether it is.
func (l *Labeler) watchQuorum(c *Census, group string, atEdge bool) bool {
	g, ok := c.Groups[group]
	if !ok {
		return atEdge
	}
	q := QuorumOf(g)
	// Only an election needs a quorum: a standalone group's margin is not a warning.
	elections := g.ElectionStatus != ElectionNone
	l.metrics.quorum(group, q, elections)
	edge := q.Margin() <= 0 && elections
	switch {
	case edge && !atEdge:
		l.log.Warn("the service group's quorum is at its edge: losing one more alive member stops elections; depart the dead members",
			"group", group, "alive", q.Alive, "suspect", q.Suspect, "confirmed", q.Confirmed, "margin", q.Margin(), "run", DepartCommands(g))
		l.event(corev1.EventTypeWarning, EventQuorumEdge, "service group %s: quorum margin %d (%d alive, %d suspect, %d confirmed dead): losing one more alive member stops its elections; depart the dead members from any Supervisor: %s",
			group, q.Margin(), q.Alive, q.Suspect, q.Confirmed, strings.Join(DepartCommands(g), "; "))
	case !edge && atEdge:
		l.log.Info("the service group's quorum has a margin again", "group", group, "alive", q.Alive, "margin", q.Margin())
		l.event(corev1.EventTypeNormal, EventQuorumOK, "service group %s: quorum margin %d again (%d alive)", group, q.Margin(), q.Alive)
	}
	return edge
}

// fenced is the role to write when the census says leader: leader while the Lease is held,
// none while waiting for it. Holding the Lease makes this labeler the one that may say who
// leads the group: a leader label left on another pod of the group (its labeler killed,
// or cut off from the API server so it cannot take it off, and its Lease expired) is taken
// off first. Waiting for that pod instead would keep the group without a leader label until
// it is gone or healed, however long that is.
//
// blocked is what held the label back at the last read; a reason is logged when it changes,
// not at every read.
func (l *Labeler) fenced(ctx context.Context, c *Census, group, current string, blocked *string) string {
	if group == "" { // a leader label from before this labeler started, and no census yet
		return contract.RoleNone
	}
	l.fence.contend(ctx, group)
	if !l.fence.held(group) {
		if current == contract.RoleLeader && l.fence.regain(group) {
			return contract.RoleLeader // its own Lease, lapsed, being renewed: nobody took it
		}
		return contract.RoleNone
	}
	if c == nil || current == contract.RoleLeader {
		// The census failed (a kept leader label stays only while the Lease is held), or
		// the label is on already: it was written holding the Lease, after the others'
		// came off, and nobody else could have put one on since.
		return contract.RoleLeader
	}
	others, members, err := l.otherLeaders(ctx, c, group)
	hold := func(reason string, args ...any) string {
		if *blocked != reason {
			l.log.Warn(reason, args...)
			l.event(corev1.EventTypeWarning, EventWaiting, "%s%s", reason, pairs(args))
			*blocked = reason
		}
		return contract.RoleNone
	}
	if err != nil {
		return hold("cannot tell whether another pod is labelled leader; waiting", "err", err)
	}
	if len(others) > 0 && !members {
		return hold("holding the Lease, but another pod of the ring is labelled leader and the census has no addresses to tell its group; waiting until it is gone", "pod", others[0])
	}
	for _, pod := range others {
		l.log.Warn("holding the Lease, but another pod of the group is still labelled leader: taking its label off", "pod", pod)
		if err := l.setPodRole(ctx, pod, contract.RoleNone); err != nil && !apierrors.IsNotFound(err) {
			return hold("could not take the leader label off another pod; waiting", "pod", pod, "err", err)
		}
		l.metrics.stripped.Inc()
	}
	*blocked = ""
	return contract.RoleLeader
}

// backoff retries a failing gateway from Interval up to four times that (each ±20%), so a
// Supervisor that is restarting is not hammered; the loop never sleeps past the moment a
// kept label turns stale.
func (l *Labeler) backoff() *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{InitialInterval: l.cfg.Interval, Multiplier: 1.5, RandomizationFactor: 0.2,
		MaxInterval: min(4*l.cfg.Interval, l.cfg.StaleAfter)}
}

func (l *Labeler) read(ctx context.Context) (c *Census, role, group string, err error) {
	c, err = l.gateway.Census(ctx)
	if err != nil {
		return nil, "", "", err
	}
	role, group, err = Decide(c, l.cfg.ServiceGroup)
	if err != nil {
		return nil, "", "", err
	}
	return c, role, group, nil
}

// ownPod reads the labeler's own pod; on failure an empty one (no labels, no gates).
func (l *Labeler) ownPod(ctx context.Context) *corev1.Pod {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	pod, err := l.pods().Get(ctx, l.cfg.PodName, metav1.GetOptions{})
	if err != nil {
		l.log.Warn("cannot read own pod; will write the first role unconditionally", "pod", l.cfg.PodName, "err", err)
		return &corev1.Pod{}
	}
	return pod
}

// setRole writes only this pod's role label; a failure is counted and logged once per
// change.
func (l *Labeler) setRole(ctx context.Context, role string) error {
	err := l.setPodRole(ctx, l.cfg.PodName, role)
	l.labelFails.observe(err, rbacHint(l.cfg.Namespace))
	if err != nil {
		return err
	}
	l.metrics.wrote(role)
	return nil
}

// rbacHint is what fixes a denied request of the labeler's.
func rbacHint(ns string) string {
	return "give the pod's service account the habring-labeler RoleBinding in " + ns +
		" (examples/labeler-rolebinding.yaml) and install deploy/labeler-policy.yaml of this release; habring check names what is missing"
}

// setPodRole writes only the role label of a pod of this namespace, with a JSON merge
// patch: no read-modify-write race with anything else changing the pod. Another pod's is
// only ever taken from leader to none (deploy/labeler-policy.yaml allows nothing else).
func (l *Labeler) setPodRole(ctx context.Context, pod, role string) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{contract.LabelRole: role}}})
	if err != nil {
		return err
	}
	return l.patchPod(ctx, pod, types.MergePatchType, body)
}

// pairs writes slog's key-value arguments as " key=value ..." for an Event's message.
func pairs(args []any) string {
	var b strings.Builder
	for i := 0; i+1 < len(args); i += 2 {
		fmt.Fprintf(&b, " %v=%v", args[i], args[i+1])
	}
	return b.String()
}
