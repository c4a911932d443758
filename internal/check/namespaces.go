package check

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/labeler"
	"github.com/habring/habring/internal/patch"
)

// namespaces are the namespaces checked: --namespace, or every one the webhook selects.
func (c *Checker) namespaces(ctx context.Context) ([]corev1.Namespace, error) {
	return cached(c, "namespaces", func() ([]corev1.Namespace, error) {
		kube := c.Clients.Kube
		if c.Config.Namespace != "" {
			ns, err := kube.CoreV1().Namespaces().Get(ctx, c.Config.Namespace, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return []corev1.Namespace{*ns}, nil
		}
		inst, _ := c.installation(ctx)
		list, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: inst.namespaces.String()})
		if err != nil {
			return nil, err
		}
		return list.Items, nil
	})
}

func (c *Checker) checkNamespacesReadable(ctx context.Context, _ *scope) []Finding {
	nss, err := c.namespaces(ctx)
	switch {
	case apierrors.IsNotFound(err):
		return []Finding{problem("namespace %s does not exist", c.Config.Namespace)}
	case err != nil && c.Config.Namespace != "":
		return []Finding{cannotRead("get", "namespaces", "", err)}
	case err != nil:
		return []Finding{cannotRead("list", "namespaces", "", err)}
	case c.Config.Namespace != "":
		return []Finding{passed("checking namespace %s only (--namespace)", c.Config.Namespace)}
	}
	return []Finding{passed("%d namespaces read", len(nss))}
}

func (c *Checker) checkNamespacesSelected(ctx context.Context, _ *scope) []Finding {
	nss, _ := c.namespaces(ctx)
	inst, _ := c.installation(ctx)
	switch {
	case c.Config.Namespace != "":
		return nil // namespace.injection says whether the webhook selects it
	case len(nss) == 0:
		f := problem("no namespace is selected by the webhook (%s): habring injects no pod", selectorString(inst.namespaces))
		if add, ok := toSelect(inst.namespaces, nil); ok {
			f = f.with("Labels", add)
		}
		return []Finding{f}
	}
	names := make([]string, len(nss))
	for i, ns := range nss {
		names[i] = ns.Name
	}
	return []Finding{passed("%d namespaces selected by the webhook: %s", len(nss), strings.Join(names, ", "))}
}

func (c *Checker) namespaceScopes(ctx context.Context) []*scope {
	nss, _ := c.namespaces(ctx)
	out := make([]*scope, len(nss))
	for i, ns := range nss {
		out[i] = &scope{heading: "namespace " + ns.Name, ns: ns.Name}
	}
	return out
}

// ringScopes are the rings of every namespace checked, by their pods with habitat.sh/status: injected.
func (c *Checker) ringScopes(ctx context.Context) []*scope {
	nss, _ := c.namespaces(ctx)
	var out []*scope
	for _, ns := range nss {
		d, err := c.namespaceData(ctx, ns.Name)
		if err != nil {
			continue
		}
		for _, ring := range slices.Sorted(maps.Keys(d.rings)) {
			out = append(out, &scope{heading: "ring " + ns.Name + "/" + ring, ns: ns.Name, ring: ring})
		}
	}
	return out
}

func (c *Checker) checkNamespaceInjection(ctx context.Context, s *scope) []Finding {
	inst, _ := c.installation(ctx)
	nss, _ := c.namespaces(ctx)
	for _, ns := range nss {
		if ns.Name == s.ns && !inst.namespaces.Matches(labels.Set(ns.Labels)) {
			return []Finding{notSelected(inst, &ns, "its pods are not injected")}
		}
	}
	return []Finding{passed("the webhook selects namespace %s", s.ns)}
}

// notSelected is the problem of namespace ns outside the webhook's namespaceSelector,
// with the labels that would put it in (.Labels), or none where no label can; so, if
// given, says what follows from it.
func notSelected(inst *install, ns *corev1.Namespace, so string) Finding {
	if so != "" {
		so = ": " + so
	}
	add, ok := toSelect(inst.namespaces, ns.Labels)
	if !ok {
		return problem("namespace %s is excluded by the webhook's namespaceSelector (%s), whatever its labels%s", ns.Name, selectorString(inst.namespaces), so)
	}
	return problem("namespace %s is not selected by the webhook (%s)%s", ns.Name, selectorString(inst.namespaces), so).with("Labels", add)
}

// ringWorkload is a StatefulSet or Deployment whose pods join a ring.
type ringWorkload struct {
	kind, name, ring string
	selector         labels.Selector
}

// namespaceData is what one list each of StatefulSets, Deployments and pods tells of a
// namespace's rings.
type namespaceData struct {
	workloads []ringWorkload
	pods      []corev1.Pod
	// rings are the injected pods of each ring; leftOut the pods of ring workloads that are not injected.
	rings   map[string][]*corev1.Pod
	leftOut []workloadPod
}

type workloadPod struct {
	w ringWorkload
	p *corev1.Pod
}

func (c *Checker) namespaceData(ctx context.Context, ns string) (*namespaceData, error) {
	return cached(c, "namespace/"+ns, func() (*namespaceData, error) {
		workloads, err := c.ringWorkloads(ctx, ns)
		if err != nil {
			return nil, err
		}
		pods, err := c.Clients.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, readError{"list", "pods", err}
		}
		d := &namespaceData{workloads: workloads, pods: pods.Items, rings: map[string][]*corev1.Pod{}}
		for _, w := range workloads {
			for i := range d.pods {
				p := &d.pods[i]
				switch {
				case !w.selector.Matches(labels.Set(p.Labels)) || p.DeletionTimestamp != nil:
				case patch.Injected(p):
					d.rings[w.ring] = append(d.rings[w.ring], p)
				default:
					d.leftOut = append(d.leftOut, workloadPod{w, p})
				}
			}
		}
		return d, nil
	})
}

// readError is a list the API server refused or failed, for the hint's kubectl auth can-i.
type readError struct {
	verb, resource string
	err            error
}

func (e readError) Error() string { return e.verb + " " + e.resource + ": " + e.err.Error() }

func (c *Checker) checkRingWorkloads(ctx context.Context, s *scope) []Finding {
	d, err := c.namespaceData(ctx, s.ns)
	var re readError
	switch {
	case errors.As(err, &re):
		return []Finding{cannotRead(re.verb, re.resource, s.ns, re.err)}
	case err != nil:
		return []Finding{skipped("ring workloads not read: %v", err)}
	case len(d.workloads) == 0:
		return []Finding{passed("no StatefulSet or Deployment in %s has the %s annotation", s.ns, contract.AnnotationRing)}
	}
	names := make([]string, len(d.workloads))
	for i, w := range d.workloads {
		names[i] = fmt.Sprintf("%s %s (ring %s)", w.kind, w.name, w.ring)
	}
	return []Finding{passed("%d workloads with the %s annotation: %s", len(names), contract.AnnotationRing, strings.Join(names, ", "))}
}

func (c *Checker) ringWorkloads(ctx context.Context, ns string) ([]ringWorkload, error) {
	kube := c.Clients.Kube
	sts, err := kube.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, readError{"list", "statefulsets", err}
	}
	deps, err := kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, readError{"list", "deployments", err}
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
// is bound to the labeler's ClusterRole in the namespace.
func (c *Checker) checkRoleBinding(ctx context.Context, s *scope) []Finding {
	inst, _ := c.installation(ctx)
	d, err := c.namespaceData(ctx, s.ns)
	if err != nil {
		return []Finding{skipped("labeler RoleBinding not checked: %v", err)}
	}
	rbs, err := c.Clients.Kube.RbacV1().RoleBindings(s.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return []Finding{cannotRead("list", "rolebindings", s.ns, err)}
	}
	bound := map[string]string{} // service account → RoleBinding
	for _, rb := range rbs.Items {
		if rb.RoleRef.Kind != "ClusterRole" || rb.RoleRef.Name != inst.labelerRole {
			continue
		}
		for _, sub := range rb.Subjects {
			if sub.Kind == "ServiceAccount" && (sub.Namespace == "" || sub.Namespace == s.ns) {
				bound[sub.Name] = rb.Name
			}
		}
	}
	need := map[string]bool{}
	for i := range d.pods {
		if hasLabeler(&d.pods[i]) {
			need[cmp.Or(d.pods[i].Spec.ServiceAccountName, "default")] = true
		}
	}
	if len(need) == 0 {
		if len(bound) == 0 {
			return []Finding{passed("no pod in %s runs the labeler sidecar; no RoleBinding to %s needed yet", s.ns, inst.labelerRole)}
		}
		return []Finding{passed("RoleBinding to %s for %s", inst.labelerRole, strings.Join(slices.Sorted(maps.Keys(bound)), ", "))}
	}
	var out []Finding
	for _, sa := range slices.Sorted(maps.Keys(need)) {
		if rb, ok := bound[sa]; ok {
			out = append(out, passed("RoleBinding %s binds %s to service account %s, whose pods run the labeler", rb, inst.labelerRole, sa))
			continue
		}
		out = append(out, problem("service account %s runs the labeler sidecar in %s but no RoleBinding grants it %s: the leader is never labelled", sa, s.ns, inst.labelerRole).
			with("ServiceAccount", sa, "Role", inst.labelerRole))
	}
	return out
}

// deniedWithin is how recent a labeler's HabringDenied Event must be to fail the check: the
// labeler records one when a denial changes and again every four minutes while it goes
// on, and HabringAllowed when its requests succeed again.
const deniedWithin = 10 * time.Minute

// checkLabelerDenials fails for every pod of the namespace whose labeler the API server has
// denied lately, from their HabringDenied Events (one list for the namespace), with the
// fix the labeler named.
func (c *Checker) checkLabelerDenials(ctx context.Context, s *scope) []Finding {
	d, err := c.namespaceData(ctx, s.ns)
	if err != nil {
		return []Finding{skipped("labelers' denials not checked: %v", err)}
	}
	events, err := c.Clients.Kube.CoreV1().Events(s.ns).List(ctx, metav1.ListOptions{FieldSelector: "source=" + labeler.EventComponent})
	if err != nil {
		return []Finding{cannotRead("list", "events", s.ns, err)}
	}
	byUID := map[types.UID]*corev1.Pod{}
	for i := range d.pods {
		byUID[d.pods[i].UID] = &d.pods[i]
	}
	allowed := map[types.UID]time.Time{} // a pod's labeler said its requests succeed again
	for _, e := range events.Items {
		if e.Reason == labeler.EventAllowed && e.Source.Component == labeler.EventComponent && lastSeen(&e).After(allowed[e.InvolvedObject.UID]) {
			allowed[e.InvolvedObject.UID] = lastSeen(&e)
		}
	}
	var out []Finding
	for _, e := range events.Items {
		p, ok := byUID[e.InvolvedObject.UID]
		last := lastSeen(&e)
		if e.Reason != labeler.EventDenied || e.Source.Component != labeler.EventComponent || !ok || c.Now().Sub(last) > deniedWithin ||
			!allowed[e.InvolvedObject.UID].Before(last) {
			continue
		}
		msg, fix, _ := strings.Cut(e.Message, ". Fix: ")
		out = append(out, problem("ring %s: the labeler of pod %s is denied (%d times, last %s ago): %s", p.Labels[contract.LabelRing], p.Name, max(e.Count, 1),
			c.Now().Sub(last).Round(time.Second), msg).with("Pod", p.Name, "Fix", fix))
	}
	if len(out) == 0 {
		return []Finding{passed("no HabringDenied Event from a labeler in %s in the last %s", s.ns, deniedWithin)}
	}
	return out
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

// checkPodsInjected fails for each pod of a ring workload that is not injected although
// the webhook would inject it now, or denies it.
func (c *Checker) checkPodsInjected(ctx context.Context, s *scope) []Finding {
	return c.leftOutPods(ctx, s, false)
}

// checkPodsLeftOut warns for each pod of a ring workload left out of its ring by choice.
func (c *Checker) checkPodsLeftOut(ctx context.Context, s *scope) []Finding {
	return c.leftOutPods(ctx, s, true)
}

func (c *Checker) leftOutPods(ctx context.Context, s *scope, byChoice bool) []Finding {
	d, err := c.namespaceData(ctx, s.ns)
	if err != nil {
		return []Finding{skipped("ring pods not checked: %v", err)}
	}
	var out []Finding
	for _, wp := range d.leftOut {
		e := c.explain(ctx, s.ns, wp.p)
		if e.byChoice != byChoice {
			continue
		}
		f := e.finding(fmt.Sprintf("pod %s (%s %s, ring %s) is not injected: ", wp.p.Name, wp.w.kind, wp.w.name, wp.w.ring))
		out = append(out, f.with("Pod", wp.p.Name))
	}
	if len(out) > 0 {
		return out
	}
	if byChoice {
		return []Finding{passed("no pod of a ring workload in %s is left out by choice", s.ns)}
	}
	return []Finding{passed("every pod of a ring workload in %s is injected, or would be left alone", s.ns)}
}
