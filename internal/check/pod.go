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

// ExplainPod says why the pod ns/name was or was not injected: from its annotations when
// it was, else from patch.Injector.Admit (the webhook's own decision) on the cluster as it is now.
func (c *Checker) ExplainPod(ctx context.Context, ns, name string) (*Report, error) {
	r := &Report{}
	r.Section("pod " + ns + "/" + name)
	p, err := c.Clients.Kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		r.Fail("kubectl -n "+ns+" get pods", "pod %s/%s does not exist", ns, name)
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pod %s/%s: %w", ns, name, err)
	}
	if patch.Injected(p) {
		peers := p.Annotations[contract.AnnotationPeers]
		if contract.Bootstraps(p.Annotations) {
			peers = "none: it bootstraps the ring"
		}
		r.Pass("injected by habring into ring %s, peers %s (%s)", p.Labels[contract.LabelRing], peers, p.Annotations[contract.AnnotationPeersReason])
		if role, ok := p.Labels[contract.LabelRole]; ok {
			r.Pass("labelled %s=%s by its labeler", contract.LabelRole, role)
		}
		return r, nil
	}
	why, fix, status := c.explain(ctx, ns, p)
	r.add(status, fix, "not injected: %s", why)
	return r, nil
}

// explain says why pod p in ns carries no habitat.sh/status: injected, what fixes it,
// and whether that is a failure (Warn for a deliberate opt-out or a pod outside any ring).
func (c *Checker) explain(ctx context.Context, ns string, p *corev1.Pod) (why, fix string, status Status) {
	recreate := "kubectl -n " + ns + " delete pod " + p.Name + "   (its controller creates it again, through the webhook)"
	if why, fix, ok := c.unseen(ctx, ns, p); !ok {
		return why, fix, Fail
	}
	src, err := c.source(ctx)
	if err != nil {
		return "cannot decide: " + err.Error(), "", Skip
	}
	inj, origin := c.injector(ctx)
	d, err := inj.Admit(ctx, p, ns, src)
	var annErr *patch.AnnotationError
	switch {
	case errors.As(err, &annErr):
		return "the webhook denies it now: " + err.Error(), fmt.Sprintf("fix the annotation on %s %s/%s", d.Owner.Kind, ns, d.Owner.Name), Fail
	case errors.Is(err, patch.ErrOwnerNotFound):
		return "its owner is gone: " + err.Error(), "", Warn
	case err != nil:
		return "the webhook denies it now: " + err.Error(), recreate, Fail
	case d.Skip == patch.SkipOptedOut:
		return "opted out by its annotation " + contract.AnnotationInject + ": " + contract.InjectDisabled, "remove the annotation from the pod template to inject it", Warn
	case d.Skip == patch.SkipNoOwner:
		return "it has no StatefulSet or ReplicaSet controller, so it is in no ring", "", Warn
	case d.Skip == patch.SkipNoRing:
		return fmt.Sprintf("its %s %s has no %s annotation", d.Owner.Kind, d.Owner.Name, contract.AnnotationRing), "", Warn
	}
	peers := strings.Join(d.Result.Plan.Peers, ",")
	if peers == "" {
		peers = "none: it would bootstrap the ring"
	}
	return fmt.Sprintf("the webhook would inject it now (peers %s, %s): it was created while habring was not installed, "+
		"its namespace was not selected, or habring was unreachable with failurePolicy Ignore", peers, origin), recreate, Fail
}

// unseen reports (ok false) when the webhook never sees pod p: no installation, or its
// namespace not selected. The webhook's objectSelector and matchConditions are what
// patch.Injector.Admit checks again (owner kind, opt-out).
func (c *Checker) unseen(ctx context.Context, ns string, p *corev1.Pod) (why, fix string, ok bool) {
	inst, err := c.installation(ctx)
	if err != nil {
		return err.Error(), reinstall, false
	}
	if inst == nil {
		return "habring is not installed (no MutatingWebhookConfiguration has the webhook " + WebhookName + ")", reinstall, false
	}
	nsObj, err := c.Clients.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		return "read namespace " + ns + ": " + err.Error(), "", false
	}
	if !inst.namespaces.Matches(labels.Set(nsObj.Labels)) {
		return fmt.Sprintf("namespace %s is not selected by the webhook (%s)", ns, selectorString(inst.namespaces)),
			"kubectl label namespace " + ns + " habitat.sh/inject=enabled, then kubectl -n " + ns + " delete pod " + p.Name, false
	}
	if p.Labels["app.kubernetes.io/name"] == "habring" {
		return "the webhook's objectSelector leaves habring's own pods alone", "", false
	}
	return "", "", true
}
