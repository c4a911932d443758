package check

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/labeler"
	"github.com/habring/habring/internal/patch"
)

// ringPods are the ring's injected pods, from its namespace's one pod list.
func (c *Checker) ringPods(ctx context.Context, s *scope) []*corev1.Pod {
	d, err := c.namespaceData(ctx, s.ns)
	if err != nil {
		return nil
	}
	return d.rings[s.ring]
}

// checkRingPods says what the ring has: its injected pods, how many are ready, and how
// many live members the webhook would give a new pod as peers.
func (c *Checker) checkRingPods(ctx context.Context, s *scope) []Finding {
	pods := c.ringPods(ctx, s)
	var unready []string
	for _, p := range pods {
		if !podReady(p) {
			unready = append(unready, p.Name)
		}
	}
	// What the webhook gives a new pod as peers: the ready endpoints of the ring's
	// Services, from the same caches.
	members := "its live members not known"
	if m, err := c.liveMembers(ctx, s.ns, s.ring); err == nil {
		members = fmt.Sprintf("%d live members (ready endpoints of Services labelled %s=%s) for the webhook to give new pods as peers", m, contract.LabelRing, s.ring)
	} else {
		members += ": " + err.Error()
	}
	if len(unready) > 0 {
		slices.Sort(unready)
		return []Finding{problem("ring %s: %d pods injected, %d ready (not: %s); %s", s.ring, len(pods), len(pods)-len(unready), strings.Join(unready, ", "), members).
			with("Pod", unready[0])}
	}
	return []Finding{passed("ring %s: %d pods injected, %d ready; %s", s.ring, len(pods), len(pods), members)}
}

// ringCensus is one member's census of the ring, read through the API server, and the
// ring's pods by IP to find its members among them.
type ringCensus struct {
	census *labeler.Census
	from   string
	byIP   map[string]*corev1.Pod
}

func (c *Checker) ringCensus(ctx context.Context, s *scope) (ringCensus, error) {
	return cached(c, "census/"+s.ns+"/"+s.ring, func() (ringCensus, error) {
		pods := c.ringPods(ctx, s)
		rc := ringCensus{byIP: map[string]*corev1.Pod{}}
		for _, p := range pods {
			if p.Status.PodIP != "" {
				rc.byIP[p.Status.PodIP] = p
			}
		}
		var err error
		rc.census, rc.from, err = c.census(ctx, pods)
		return rc, err
	})
}

func (c *Checker) checkDeadMembers(ctx context.Context, s *scope) []Finding {
	rc, err := c.ringCensus(ctx, s)
	if err != nil {
		return []Finding{skipped("ring %s: service groups not checked: %v", s.ring, err)}
	}
	var out []Finding
	for _, g := range slices.Sorted(maps.Keys(rc.census.Groups)) {
		group := rc.census.Groups[g]
		q := labeler.QuorumOf(group)
		dead := labeler.DepartCommands(group)
		if len(dead) == 0 {
			out = append(out, passed("ring %s, group %s: %d alive, %d suspect, no dead member (quorum margin %d)", s.ring, g, q.Alive, q.Suspect, q.Margin()))
			continue
		}
		out = append(out, problem("ring %s, group %s: %d dead members still count against its quorum (margin %d; %d alive) until they depart or for 72 hours",
			s.ring, g, len(dead), q.Margin(), q.Alive).with("Pod", rc.from, "Depart", strings.Join(dead, "\n")))
	}
	return out
}

// groupLeaders is one service group's pods labelled leader and the pod its census says
// leads. Without a census it is one workload's pods labelled leader (a service group is
// one workload's pods), and who leads is not known.
type groupLeaders struct {
	what     string
	labelled []string
	// elected is the pod the census names leader ("" for none), unlabelled when it runs no
	// labeler (nothing labels it: bastions); known is false without a census.
	elected    string
	unlabelled bool
	known      bool
}

func (c *Checker) groupLeaders(ctx context.Context, s *scope) []groupLeaders {
	rc, err := c.ringCensus(ctx, s)
	if err != nil {
		by := map[string][]string{}
		for _, p := range c.ringPods(ctx, s) {
			if p.Labels[contract.LabelRole] == contract.RoleLeader {
				o, _ := patch.OwnerOf(p)
				by[o.Kind+" "+o.Name] = append(by[o.Kind+" "+o.Name], p.Name)
			}
		}
		var out []groupLeaders
		for _, w := range slices.Sorted(maps.Keys(by)) {
			slices.Sort(by[w])
			out = append(out, groupLeaders{what: fmt.Sprintf("ring %s, %s", s.ring, w), labelled: by[w]})
		}
		return out
	}
	var out []groupLeaders
	for _, g := range slices.Sorted(maps.Keys(rc.census.Groups)) {
		group := rc.census.Groups[g]
		gl := groupLeaders{what: fmt.Sprintf("ring %s, group %s", s.ring, g), known: true}
		for id, m := range group.Population {
			p, ok := rc.byIP[m.Sys.IP]
			if !ok {
				continue
			}
			if p.Labels[contract.LabelRole] == contract.RoleLeader {
				gl.labelled = append(gl.labelled, p.Name)
			}
			if group.LeaderID != nil && *group.LeaderID == id {
				gl.elected, gl.unlabelled = p.Name, !hasLabeler(p)
			}
		}
		slices.Sort(gl.labelled)
		out = append(out, gl)
	}
	return out
}

func (c *Checker) checkOneLeader(ctx context.Context, s *scope) []Finding {
	var out []Finding
	for _, g := range c.groupLeaders(ctx, s) {
		switch len(g.labelled) {
		case 0:
			out = append(out, passed("%s: no pod labelled leader", g.what))
		case 1:
			out = append(out, passed("%s: one pod labelled leader, %s", g.what, g.labelled[0]))
		default:
			out = append(out, problem("%s: %d pods labelled %s=%s (%s): a Service selecting the leader sends writes to more than one",
				g.what, len(g.labelled), contract.LabelRole, contract.RoleLeader, strings.Join(g.labelled, ", ")).
				with("Pods", strings.Join(g.labelled, " ")))
		}
	}
	return out
}

func (c *Checker) checkLeaderLabelled(ctx context.Context, s *scope) []Finding {
	var out []Finding
	for _, g := range c.groupLeaders(ctx, s) {
		switch {
		case !g.known:
			// No census: who leads is not known; ring.dead-members said why.
		case g.elected == "":
			out = append(out, passed("%s: no leader elected, none to label", g.what))
		case g.unlabelled:
			out = append(out, passed("%s: its leader %s runs no labeler, so no Service selects it", g.what, g.elected))
		case slices.Contains(g.labelled, g.elected):
			out = append(out, passed("%s: its leader %s is labelled %s=%s", g.what, g.elected, contract.LabelRole, contract.RoleLeader))
		default:
			out = append(out, problem("%s: %s leads but is not labelled %s=%s: a Service selecting the leader does not send writes to it",
				g.what, g.elected, contract.LabelRole, contract.RoleLeader).with("Pod", g.elected))
		}
	}
	return out
}

// liveMembers counts the ring's live members as admission sees them: the webhook's own
// cache (ready endpoints of the ring's EndpointSlices, terminating pods left out, each
// address once).
func (c *Checker) liveMembers(ctx context.Context, ns, ring string) (int, error) {
	src, err := c.source(ctx)
	if err != nil {
		return 0, err
	}
	r, err := src.Ring(ctx, ns, ring)
	if err != nil {
		return 0, err
	}
	return len(contract.LiveMembers("", r)), nil
}

// census reads GET /census from the first ready pod of the ring whose Supervisor gateway
// answers through the API server's pod proxy.
func (c *Checker) census(ctx context.Context, pods []*corev1.Pod) (*labeler.Census, string, error) {
	var errs []error
	for _, p := range pods {
		if !podReady(p) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, c.Config.Timeout)
		body, err := c.Clients.Kube.CoreV1().Pods(p.Namespace).ProxyGet("http", p.Name, strconv.Itoa(contract.GatewayPort), "census", nil).DoRaw(cctx)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
			if len(errs) == 2 {
				break // the gateway is not reachable this way (auth token, network): stop asking
			}
			continue
		}
		census, err := labeler.DecodeCensus(body)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
			continue
		}
		return census, p.Name, nil
	}
	if len(errs) == 0 {
		return nil, "", errors.New("no ready pod to read a census from")
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return nil, "", fmt.Errorf("no Supervisor census through the API server's pod proxy: %s", strings.Join(msgs, "; "))
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
