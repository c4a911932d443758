package patch

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/habring/habring/contract"
)

// ErrNoBootstrap is the cause of a denial: the pod would have no peer and may not start
// a ring of its own.
var ErrNoBootstrap = errors.New("no live member and no way to bootstrap")

// NoPeersError explains a denial to the user; errors.Is(err, ErrNoBootstrap) holds.
type NoPeersError struct {
	Ring      string
	Namespace string
	Detail    string // what is missing
	Hint      string // what to change; a default applies when empty
}

func (e *NoPeersError) Error() string {
	hint := e.Hint
	if hint == "" {
		hint = fmt.Sprintf("start the ring with a StatefulSet annotated habitat.sh/ring=%s (its pod 0 bootstraps it) and label its Service habitat.sh/ring=%s so members are found; the controller creates this pod again once the ring is up", e.Ring, e.Ring)
	}
	return fmt.Sprintf("ring %q in namespace %q has no live member and %s; %s", e.Ring, e.Namespace, e.Detail, hint)
}

func (e *NoPeersError) Unwrap() error { return ErrNoBootstrap }

// Plan is the outcome of the peer algorithm.
type Plan struct {
	// Peers are the --peer addresses, best first: live member IPs, then stable DNS names.
	Peers []string
	// Permanent is true for StatefulSet members (--permanent-peer).
	Permanent bool
	// Bootstrap is true for the pod that starts an empty ring: pod 0 of a StatefulSet with
	// no live member, given no peer (the habitat.sh/bootstrap annotation).
	Bootstrap bool
	// Reason says, for the habitat.sh/peers-reason annotation, where the peers came from.
	Reason string
}

// Peers computes the peer list for a pod named podName of w, in the ring at scope, at most
// maxPeers long: live members first, then stable names of lower StatefulSet ordinals (or,
// for a Deployment with nothing live, of the ring's StatefulSets); README "Peer list"
// says why. It is deterministic: the same facts give the same list.
func Peers(podName string, w Workload, scope Scope, ring contract.Ring, maxPeers int) (Plan, error) {
	live := contract.LiveMembers(podName, ring)
	plan := Plan{Permanent: w.Kind == KindStatefulSet}
	present := make(map[string]bool, len(live)) // pod names already given as live IPs
	for _, m := range live {
		plan.Peers = append(plan.Peers, m.IP)
		if m.PodName != "" {
			present[m.PodName] = true
		}
	}
	var names int
	switch w.Kind {
	case KindStatefulSet:
		if w.Ordinal < 0 {
			return Plan{}, fmt.Errorf("cannot tell the ordinal of pod %q of StatefulSet %q", podName, w.Name)
		}
		// The bootstrap scheme: pod N peers with pods 0..N-1 by their stable names, which
		// covers Parallel pod management and a ring whose Service is not labelled yet.
		if w.ServiceName != "" {
			for i := range w.Ordinal {
				pod := w.Name + "-" + strconv.Itoa(i)
				if !present[pod] {
					plan.Peers = append(plan.Peers, stableName(pod, w.ServiceName, scope))
					names++
				}
			}
		} else if len(live) == 0 && w.Ordinal > 0 {
			return Plan{}, &NoPeersError{Ring: scope.Ring, Namespace: scope.Namespace,
				Detail: fmt.Sprintf("StatefulSet %q has no spec.serviceName, so pod %d has no stable names of lower ordinals to peer with", w.Name, w.Ordinal),
				Hint:   fmt.Sprintf("set spec.serviceName to a headless Service, or label a Service that selects these pods habitat.sh/ring=%s", scope.Ring)}
		}
	case KindDeployment:
		if len(live) == 0 {
			// Only names that resolve now: a Supervisor whose --peer name does not resolve
			// fails to start, and the pod's args never change.
			sets := slices.SortedFunc(slices.Values(ring.StatefulSets), func(a, b contract.BootstrapSet) int { return cmp.Compare(a.Name, b.Name) })
			var waiting []string
			for _, s := range sets {
				if s.ServiceName == "" || s.Replicas == 0 {
					continue
				}
				if s.Ready == 0 {
					waiting = append(waiting, s.Name)
				}
				for i := range s.Ready {
					plan.Peers = append(plan.Peers, stableName(s.Name+"-"+strconv.Itoa(int(i)), s.ServiceName, scope))
					names++
				}
			}
			switch {
			case names == 0 && len(waiting) > 0:
				return Plan{}, &NoPeersError{Ring: scope.Ring, Namespace: scope.Namespace,
					Detail: fmt.Sprintf("its bootstrap StatefulSet %s has no ready pod yet (a Supervisor fails to start on a --peer name that does not resolve)", strings.Join(waiting, ", ")),
					Hint:   fmt.Sprintf("nothing to change: the controller creates this pod again, and it is admitted once %s-0 is ready", waiting[0])}
			case names == 0:
				return Plan{}, &NoPeersError{Ring: scope.Ring, Namespace: scope.Namespace, Detail: "no bootstrap StatefulSet (one with replicas and spec.serviceName)"}
			}
		}
	default:
		return Plan{}, fmt.Errorf("unsupported workload kind %q", w.Kind)
	}
	if maxPeers > 0 && len(plan.Peers) > maxPeers {
		plan.Peers = plan.Peers[:maxPeers]
	}
	plan.Bootstrap = len(plan.Peers) == 0
	plan.Reason = reason(w, len(live), names, len(plan.Peers))
	return plan, nil
}

func stableName(pod, service string, scope Scope) string {
	return pod + "." + service + "." + scope.Namespace + ".svc." + scope.ClusterDomain
}

func reason(w Workload, live, names, total int) string {
	var parts []string
	if live > 0 {
		parts = append(parts, fmt.Sprintf("%d live member(s)", live))
	}
	if names > 0 {
		if w.Kind == KindStatefulSet {
			parts = append(parts, fmt.Sprintf("%d stable name(s) of lower ordinals", names))
		} else {
			parts = append(parts, fmt.Sprintf("%d stable name(s) of the ring's StatefulSets' ready pods", names))
		}
	}
	if len(parts) == 0 {
		return "bootstrap: ordinal 0 of StatefulSet " + w.Name + " with no live member starts the ring"
	}
	s := strings.Join(parts, " and ")
	if total < live+names {
		s += fmt.Sprintf(", capped at %d", total)
	}
	return s
}
