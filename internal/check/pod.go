package check

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/patch"
)

// podScope is --pod's one pod.
func (c *Checker) podScope(context.Context) []*scope {
	ns, name, _ := strings.Cut(c.Config.Pod, "/")
	return []*scope{{heading: "pod " + ns + "/" + name, ns: ns, pod: name}}
}

func (c *Checker) pod(ctx context.Context, s *scope) (*corev1.Pod, error) {
	return cached(c, "pod/"+s.ns+"/"+s.pod, func() (*corev1.Pod, error) {
		return c.Clients.Kube.CoreV1().Pods(s.ns).Get(ctx, s.pod, metav1.GetOptions{})
	})
}

func (c *Checker) checkPodExists(ctx context.Context, s *scope) []Finding {
	p, err := c.pod(ctx, s)
	switch {
	case apierrors.IsNotFound(err):
		return []Finding{problem("pod %s/%s does not exist", s.ns, s.pod)}
	case err != nil:
		return []Finding{cannotRead("get", "pods", s.ns, err)}
	}
	owner := "no controller"
	if o, ok := patch.OwnerOf(p); ok {
		owner = "controlled by " + o.Kind + " " + o.Name
	}
	return []Finding{passed("pod %s/%s exists, %s", s.ns, s.pod, owner)}
}

// checkPodInjected says how the pod was injected, or why it was not although it should
// have been: from its annotations when it was, else from patch.Injector.Admit (the
// webhook's own decision) on the cluster as it is now.
func (c *Checker) checkPodInjected(ctx context.Context, s *scope) []Finding {
	p, _ := c.pod(ctx, s)
	if !patch.Injected(p) {
		e := c.explain(ctx, s.ns, p)
		if e.byChoice {
			return nil // pod.left-out says why
		}
		return []Finding{e.finding("not injected: ")}
	}
	peers := p.Annotations[contract.AnnotationPeers]
	if contract.Bootstraps(p.Annotations) {
		peers = "none: it bootstraps the ring"
	}
	out := []Finding{passed("injected by habring into ring %s, peers %s (%s)", p.Labels[contract.LabelRing], peers, p.Annotations[contract.AnnotationPeersReason])}
	if role, ok := p.Labels[contract.LabelRole]; ok {
		out = append(out, passed("labelled %s=%s by its labeler", contract.LabelRole, role))
	}
	return out
}

func (c *Checker) checkPodLeftOut(ctx context.Context, s *scope) []Finding {
	p, _ := c.pod(ctx, s)
	if patch.Injected(p) {
		return nil
	}
	if e := c.explain(ctx, s.ns, p); e.byChoice {
		return []Finding{e.finding("not injected: ")}
	}
	return nil
}

// explanation is why a pod carries no habitat.sh/status: injected.
type explanation struct {
	why string
	// byChoice is a deliberate opt-out or a pod outside any ring: a warning, not a failure.
	byChoice bool
	skipped  bool
	// fix names podHint's case (.Case) and what it needs.
	fix []string
}

func (e explanation) finding(prefix string) Finding {
	f := problem("%s%s", prefix, e.why)
	f.Skipped = e.skipped
	f.Problem = !e.skipped
	return f.with(e.fix...)
}

// explain asks patch.Injector.Admit what the webhook would do with pod p in ns now, once
// a try for each pod.
func (c *Checker) explain(ctx context.Context, ns string, p *corev1.Pod) explanation {
	e, _ := cached(c, "explain/"+ns+"/"+p.Name+"/"+string(p.UID), func() (explanation, error) { return c.decide(ctx, ns, p), nil })
	return e
}

func (c *Checker) decide(ctx context.Context, ns string, p *corev1.Pod) explanation {
	if e, seen := c.unseen(ctx, ns, p); !seen {
		return e
	}
	src, err := c.source(ctx)
	if err != nil {
		return explanation{why: "cannot decide: " + err.Error(), skipped: true}
	}
	inj, origin := c.injector(ctx)
	d, err := inj.Admit(ctx, p, ns, src)
	owner := d.Owner.Kind + " " + ns + "/" + d.Owner.Name
	var annErr *patch.AnnotationError
	switch {
	case errors.As(err, &annErr):
		return explanation{why: "the webhook denies it now: " + err.Error(), fix: []string{"Case", "annotation", "Owner", owner}}
	case errors.Is(err, patch.ErrOwnerNotFound):
		return explanation{why: "its owner is gone: " + err.Error(), byChoice: true, fix: []string{"Case", "orphan"}}
	case err != nil:
		return explanation{why: "the webhook denies it now: " + err.Error(), fix: []string{"Case", "recreate"}}
	case d.Skip == patch.SkipOptedOut:
		return explanation{why: "opted out by its annotation " + contract.AnnotationInject + ": " + contract.InjectDisabled, byChoice: true,
			fix: []string{"Case", "opted-out", "Owner", owner}}
	case d.Skip == patch.SkipNoOwner:
		return explanation{why: "it has no StatefulSet or ReplicaSet controller, so it is in no ring", byChoice: true, fix: []string{"Case", "no-owner"}}
	case d.Skip == patch.SkipNoRing:
		return explanation{why: fmt.Sprintf("its %s %s has no %s annotation", d.Owner.Kind, d.Owner.Name, contract.AnnotationRing), byChoice: true,
			fix: []string{"Case", "no-ring", "Owner", strings.ToLower(d.Owner.Kind) + "/" + d.Owner.Name}}
	}
	peers := strings.Join(d.Result.Plan.Peers, ",")
	if peers == "" {
		peers = "none: it would bootstrap the ring"
	}
	return explanation{why: fmt.Sprintf("the webhook would inject it now (peers %s, %s): it was created while habring was not installed, "+
		"its namespace was not selected, or habring was unreachable with failurePolicy Ignore", peers, origin), fix: []string{"Case", "recreate"}}
}

// unseen explains (seen false) a pod the webhook never sees: no installation, or its
// namespace not selected. The webhook's objectSelector and matchConditions are what
// patch.Injector.Admit checks again (owner kind, opt-out). The installation and the
// namespace are read once for every pod.
func (c *Checker) unseen(ctx context.Context, ns string, p *corev1.Pod) (e explanation, seen bool) {
	inst, err := c.installation(ctx)
	switch {
	case err != nil:
		return explanation{why: "cannot tell: list MutatingWebhookConfigurations: " + err.Error(), skipped: true}, false
	case inst == nil:
		return explanation{why: "habring is not installed (no MutatingWebhookConfiguration has the webhook " + WebhookName + ")", fix: []string{"Case", "install"}}, false
	}
	nsObj, err := cached(c, "ns/"+ns, func() (*corev1.Namespace, error) {
		return c.Clients.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	})
	if err != nil {
		return explanation{why: "cannot tell: read namespace " + ns + ": " + err.Error(), skipped: true}, false
	}
	if !inst.namespaces.Matches(labels.Set(nsObj.Labels)) {
		f := notSelected(inst, nsObj, "")
		e := explanation{why: f.Message, fix: []string{"Case", "excluded"}}
		if add, ok := f.Vars["Labels"]; ok {
			e.fix = []string{"Case", "namespace", "Labels", add}
		}
		return e, false
	}
	if p.Labels["app.kubernetes.io/name"] == "habring" {
		return explanation{why: "the webhook's objectSelector leaves habring's own pods alone", byChoice: true}, false
	}
	return explanation{}, true
}
