package check

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/labeler"
	"github.com/habring/habring/internal/patch"
)

// checkNamespaces checks each namespace the webhook selects (or only --namespace).
func (c *Checker) checkNamespaces(ctx context.Context, r *Report, inst *install) error {
	kube := c.Clients.Kube
	var nss []corev1.Namespace
	if c.Config.Namespace != "" {
		ns, err := kube.CoreV1().Namespaces().Get(ctx, c.Config.Namespace, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("namespace %s: %w", c.Config.Namespace, err)
		}
		nss = []corev1.Namespace{*ns}
	} else {
		list, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: inst.namespaces.String()})
		if err != nil {
			return fmt.Errorf("list namespaces: %w", err)
		}
		nss = list.Items
	}
	if len(nss) == 0 {
		r.Section("namespaces")
		r.Warn("kubectl label namespace <namespace> habitat.sh/inject=enabled", "no namespace is selected by the webhook (%s): habring injects no pod", selectorString(inst.namespaces))
		return nil
	}
	for i := range nss {
		if err := c.checkNamespace(ctx, r, inst, &nss[i]); err != nil {
			return err
		}
	}
	return nil
}

// ringWorkload is a StatefulSet or Deployment whose pods join a ring.
type ringWorkload struct {
	kind, name, ring string
	selector         labels.Selector
}

func (c *Checker) checkNamespace(ctx context.Context, r *Report, inst *install, ns *corev1.Namespace) error {
	r.Section("namespace " + ns.Name)
	kube := c.Clients.Kube
	if !inst.namespaces.Matches(labels.Set(ns.Labels)) {
		r.Fail("kubectl label namespace "+ns.Name+" habitat.sh/inject=enabled",
			"namespace %s is not selected by the webhook (%s): its pods are not injected", ns.Name, selectorString(inst.namespaces))
	}
	workloads, err := c.ringWorkloads(ctx, ns.Name)
	if err != nil {
		return err
	}
	podList, err := kube.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list pods in %s: %w", ns.Name, err)
	}
	if len(workloads) == 0 {
		r.Pass("no StatefulSet or Deployment in %s has the %s annotation", ns.Name, contract.AnnotationRing)
		return nil
	}
	c.checkRoleBinding(ctx, r, inst, ns.Name, podList.Items)
	c.checkLabelerDenials(ctx, r, ns.Name, podList.Items)

	rings := map[string][]*corev1.Pod{}
	for _, w := range workloads {
		for i := range podList.Items {
			p := &podList.Items[i]
			if !w.selector.Matches(labels.Set(p.Labels)) || p.DeletionTimestamp != nil {
				continue
			}
			if patch.Injected(p) {
				rings[w.ring] = append(rings[w.ring], p)
				continue
			}
			c.notInjected(ctx, r, ns.Name, w, p)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(rings)) {
		c.checkRing(ctx, r, ns.Name, name, rings[name])
	}
	return nil
}

func (c *Checker) ringWorkloads(ctx context.Context, ns string) ([]ringWorkload, error) {
	kube := c.Clients.Kube
	sts, err := kube.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list statefulsets in %s: %w", ns, err)
	}
	deps, err := kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list deployments in %s: %w", ns, err)
	}
	var out []ringWorkload
	add := func(kind string, m metav1.ObjectMeta, tmpl corev1.PodTemplateSpec, sel *metav1.LabelSelector) {
		ring := patch.RingAnnotation(m.Annotations, tmpl.Annotations)
		if ring == "" {
			return
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return // the API server validates selectors; nothing to match
		}
		out = append(out, ringWorkload{kind: kind, name: m.Name, ring: ring, selector: s})
	}
	for _, s := range sts.Items {
		add(patch.KindStatefulSet, s.ObjectMeta, s.Spec.Template, s.Spec.Selector)
	}
	for _, d := range deps.Items {
		add(patch.KindDeployment, d.ObjectMeta, d.Spec.Template, d.Spec.Selector)
	}
	return out, nil
}

// checkRoleBinding checks that every service account of a pod with the labeler sidecar
// is bound to the labeler's ClusterRole in ns.
func (c *Checker) checkRoleBinding(ctx context.Context, r *Report, inst *install, ns string, pods []corev1.Pod) {
	rbs, err := c.Clients.Kube.RbacV1().RoleBindings(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		r.Skip("labeler RoleBinding not checked: list rolebindings in %s: %v", ns, err)
		return
	}
	bound := map[string]string{} // service account → RoleBinding
	for _, rb := range rbs.Items {
		if rb.RoleRef.Kind != "ClusterRole" || rb.RoleRef.Name != inst.labelerRole {
			continue
		}
		for _, s := range rb.Subjects {
			if s.Kind == "ServiceAccount" && (s.Namespace == "" || s.Namespace == ns) {
				bound[s.Name] = rb.Name
			}
		}
	}
	need := map[string]bool{}
	for i := range pods {
		if hasLabeler(&pods[i]) {
			sa := pods[i].Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			need[sa] = true
		}
	}
	if len(need) == 0 {
		if len(bound) == 0 {
			r.Pass("no pod in %s runs the labeler sidecar; no RoleBinding to %s needed yet", ns, inst.labelerRole)
		} else {
			r.Pass("RoleBinding to %s for %s", inst.labelerRole, strings.Join(slices.Sorted(maps.Keys(bound)), ", "))
		}
		return
	}
	for _, sa := range slices.Sorted(maps.Keys(need)) {
		if rb, ok := bound[sa]; ok {
			r.Pass("RoleBinding %s binds %s to service account %s, whose pods run the labeler", rb, inst.labelerRole, sa)
			continue
		}
		r.Fail(fmt.Sprintf("kubectl -n %s create rolebinding habring-labeler-%s --clusterrole=%s --serviceaccount=%s:%s", ns, sa, inst.labelerRole, ns, sa),
			"service account %s runs the labeler sidecar in %s but no RoleBinding grants it %s: the leader is never labelled", sa, ns, inst.labelerRole)
	}
}

// deniedWithin is how recent a labeler's HabringDenied Event must be to fail the check: the
// labeler records one when a denial changes and again every four minutes while it goes
// on, and HabringAllowed when its requests succeed again.
const deniedWithin = 10 * time.Minute

// checkLabelerDenials fails for every pod of ns whose labeler the API server has denied
// lately, from their HabringDenied Events (one list for the namespace), with the fix the
// labeler named.
func (c *Checker) checkLabelerDenials(ctx context.Context, r *Report, ns string, pods []corev1.Pod) {
	events, err := c.Clients.Kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "source=" + labeler.EventComponent})
	if err != nil {
		r.Skip("labelers' denials not checked: list events in %s: %v", ns, err)
		return
	}
	byUID := map[types.UID]*corev1.Pod{}
	for i := range pods {
		byUID[pods[i].UID] = &pods[i]
	}
	allowed := map[types.UID]time.Time{} // a pod's labeler said its requests succeed again
	for _, e := range events.Items {
		if e.Reason == labeler.EventAllowed && e.Source.Component == labeler.EventComponent && lastSeen(&e).After(allowed[e.InvolvedObject.UID]) {
			allowed[e.InvolvedObject.UID] = lastSeen(&e)
		}
	}
	denied := 0
	for _, e := range events.Items {
		p, ok := byUID[e.InvolvedObject.UID]
		last := lastSeen(&e)
		if e.Reason != labeler.EventDenied || e.Source.Component != labeler.EventComponent || !ok || c.Now().Sub(last) > deniedWithin ||
			!allowed[e.InvolvedObject.UID].Before(last) {
			continue
		}
		denied++
		msg, fix, _ := strings.Cut(e.Message, ". Fix: ")
		r.Fail(fix+"\nthe labeler's log: kubectl -n "+ns+" logs "+p.Name+" -c "+contract.LabelerContainerName,
			"ring %s: the labeler of pod %s is denied (%d times, last %s ago): %s", p.Labels[contract.LabelRing], p.Name, max(e.Count, 1),
			c.Now().Sub(last).Round(time.Second), msg)
	}
	if denied == 0 {
		r.Pass("no HabringDenied Event from a labeler in %s in the last %s", ns, deniedWithin)
	}
}

// lastSeen is when an Event last happened, in whichever field its writer filled.
func lastSeen(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil:
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	}
	return e.EventTime.Time
}

func hasLabeler(p *corev1.Pod) bool {
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		if slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == contract.LabelerContainerName }) {
			return true
		}
	}
	return false
}

// notInjected reports a ring workload's pod without habitat.sh/status: injected, and why,
// by asking patch.Injector.Admit what the webhook would do with it now.
func (c *Checker) notInjected(ctx context.Context, r *Report, ns string, w ringWorkload, p *corev1.Pod) {
	why, fix, status := c.explain(ctx, ns, p)
	msg := fmt.Sprintf("pod %s (%s %s, ring %s) is not injected: %s", p.Name, w.kind, w.name, w.ring, why)
	if status == Warn {
		r.Warn(fix, "%s", msg)
		return
	}
	r.Fail(fix, "%s", msg)
}

// checkRing reports a ring's members, and per service group its dead members and the
// pods labelled leader, from one member's census read through the API server.
func (c *Checker) checkRing(ctx context.Context, r *Report, ns, ring string, pods []*corev1.Pod) {
	ready := 0
	byIP := map[string]*corev1.Pod{}
	for _, p := range pods {
		if podReady(p) {
			ready++
		}
		if p.Status.PodIP != "" {
			byIP[p.Status.PodIP] = p
		}
	}
	// What the webhook gives a new pod as peers: the ready endpoints of the ring's
	// Services, from the same caches.
	members := "its live members not known"
	if m, err := c.liveMembers(ctx, ns, ring); err == nil {
		members = fmt.Sprintf("%d live members (ready endpoints of Services labelled %s=%s) for the webhook to give new pods as peers", m, contract.LabelRing, ring)
	}
	r.Pass("ring %s: %d pods injected, %d ready; %s", ring, len(pods), ready, members)

	census, from, err := c.census(ctx, pods)
	if err != nil {
		r.Skip("ring %s: service groups not checked: %v", ring, err)
		c.leadersByWorkload(r, ring, pods)
		return
	}
	for _, g := range slices.Sorted(maps.Keys(census.Groups)) {
		group := census.Groups[g]
		q := labeler.QuorumOf(group)
		if dead := labeler.DepartCommands(group); len(dead) > 0 {
			r.Fail(fmt.Sprintf("if they are gone for good, from any Supervisor of the ring (kubectl -n %s exec %s -- ...):\n%s", ns, from, strings.Join(dead, "\n")),
				"ring %s, group %s: %d dead members still count against its quorum (margin %d; %d alive) until they depart or for 72 hours",
				ring, g, len(dead), q.Margin(), q.Alive)
		} else {
			r.Pass("ring %s, group %s: %d alive, %d suspect, no dead member (quorum margin %d)", ring, g, q.Alive, q.Suspect, q.Margin())
		}
		var leaders []string
		for _, m := range group.Population {
			if p, ok := byIP[m.Sys.IP]; ok && p.Labels[contract.LabelRole] == contract.RoleLeader {
				leaders = append(leaders, p.Name)
			}
		}
		slices.Sort(leaders)
		c.leaders(r, ns, fmt.Sprintf("ring %s, group %s", ring, g), group.LeaderID != nil, leaders)
	}
}

// leadersByWorkload is the leader check when no census can be read: pods labelled
// leader counted per workload (a service group is one workload's pods).
func (c *Checker) leadersByWorkload(r *Report, ring string, pods []*corev1.Pod) {
	by := map[string][]string{}
	ns := ""
	for _, p := range pods {
		ns = p.Namespace
		if p.Labels[contract.LabelRole] == contract.RoleLeader {
			o, _ := patch.OwnerOf(p)
			by[o.Kind+" "+o.Name] = append(by[o.Kind+" "+o.Name], p.Name)
		}
	}
	for _, w := range slices.Sorted(maps.Keys(by)) {
		slices.Sort(by[w])
		c.leaders(r, ns, fmt.Sprintf("ring %s, %s", ring, w), true, by[w])
	}
}

func (c *Checker) leaders(r *Report, ns, what string, elected bool, leaders []string) {
	switch {
	case len(leaders) > 1:
		r.Fail(fmt.Sprintf("which labeler holds the Lease: kubectl -n %s get leases; its log: kubectl -n %s logs <pod> -c %s\nlabels set by hand: kubectl -n %s label pod %s %s-",
			ns, ns, contract.LabelerContainerName, ns, strings.Join(leaders, " "), contract.LabelRole),
			"%s: %d pods labelled %s=%s (%s): a Service selecting the leader sends writes to more than one",
			what, len(leaders), contract.LabelRole, contract.RoleLeader, strings.Join(leaders, ", "))
	case len(leaders) == 1:
		r.Pass("%s: one pod labelled leader, %s", what, leaders[0])
	case elected:
		r.Pass("%s: no pod labelled leader", what)
	default:
		r.Pass("%s: no leader elected, none labelled", what)
	}
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
