package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/patch"
)

// install is what the installation checks found, for the namespace checks.
type install struct {
	config *admissionregistrationv1.MutatingWebhookConfiguration
	hook   admissionregistrationv1.MutatingWebhook
	// index is the webhook's place in config.Webhooks.
	index int
	// namespaces selects the namespaces whose pods the webhook sees.
	namespaces labels.Selector
	// labelerRole is the labeler's ClusterRole: <configuration name>-labeler.
	labelerRole string
	// release and releaseNamespace are the Helm release that installed it; empty for
	// deploy/'s kustomization.
	release, releaseNamespace string
}

// installations finds every MutatingWebhookConfiguration with habring's webhook.
func (c *Checker) installations(ctx context.Context) ([]*install, error) {
	return cached(c, "installations", func() ([]*install, error) {
		list, err := c.Clients.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var found []*install
		for i := range list.Items {
			cfg := &list.Items[i]
			for j, h := range cfg.Webhooks {
				if h.Name != WebhookName {
					continue
				}
				inst := &install{config: cfg, hook: h, index: j, labelerRole: cfg.Name + "-labeler", namespaces: labels.Nothing(),
					release: cfg.Annotations["meta.helm.sh/release-name"], releaseNamespace: cfg.Annotations["meta.helm.sh/release-namespace"]}
				if sel, err := metav1.LabelSelectorAsSelector(h.NamespaceSelector); err == nil {
					inst.namespaces = sel
				}
				found = append(found, inst)
			}
		}
		return found, nil
	})
}

// installation is the first installation found, or nil when habring is not installed.
// Once found, it stays found for the run: a read again for --wait that fails or finds
// none leaves the checks after install.webhook-configuration the installation they
// were let run on.
func (c *Checker) installation(ctx context.Context) (*install, error) {
	found, err := c.installations(ctx)
	switch {
	case len(found) > 0:
		c.found = found[0]
	case c.found == nil:
		return nil, err
	}
	return c.found, nil
}

func (c *Checker) checkAPI(ctx context.Context, _ *scope) []Finding {
	v, err := c.Clients.Kube.Discovery().ServerVersionWithContext(ctx)
	if err != nil {
		return []Finding{problem("the Kubernetes API at %s does not answer: %v", c.Clients.Host, err)}
	}
	return []Finding{passed("the Kubernetes API at %s answers (%s)", c.Clients.Host, v.GitVersion)}
}

func (c *Checker) checkInstalled(ctx context.Context, _ *scope) []Finding {
	found, err := c.installations(ctx)
	switch {
	case err != nil:
		return []Finding{cannotRead("list", "mutatingwebhookconfigurations", "", err)}
	case len(found) == 0:
		return []Finding{problem("no MutatingWebhookConfiguration has the webhook %s: habring is not installed", WebhookName)}
	}
	inst := found[0]
	by := "no Helm release: deploy/'s kustomization, or applied by hand"
	if inst.release != "" {
		by = "Helm release " + inst.release + " in " + inst.releaseNamespace
	}
	return []Finding{passed("MutatingWebhookConfiguration %s has the webhook %s (%s)", inst.config.Name, WebhookName, by)}
}

func (c *Checker) checkSingle(ctx context.Context, _ *scope) []Finding {
	found, _ := c.installations(ctx)
	if len(found) < 2 {
		return []Finding{passed("one installation")}
	}
	var names []string
	for _, f := range found[1:] {
		names = append(names, f.config.Name)
	}
	return []Finding{problem("%d installations of habring (also %s): each injects the pods the others do; checked %s",
		len(found), strings.Join(names, ", "), found[0].config.Name)}
}

// endpoint is where the webhook is called: an address to dial for the serving
// certificate, and the Secret its pods mount the certificate from, when known.
type endpoint struct {
	target  string
	secret  *corev1.SecretReference
	finding Finding
}

func (c *Checker) checkEndpoints(ctx context.Context, _ *scope) []Finding {
	return []Finding{c.endpoint(ctx).finding}
}

// endpoint finds the webhook's Service and its ready endpoints, or its URL.
func (c *Checker) endpoint(ctx context.Context) endpoint {
	e, _ := cached(c, "endpoint", func() (endpoint, error) {
		inst, _ := c.installation(ctx)
		return c.findEndpoint(ctx, inst), nil
	})
	return e
}

func (c *Checker) findEndpoint(ctx context.Context, inst *install) endpoint {
	cc := inst.hook.ClientConfig
	if cc.Service == nil {
		if cc.URL == nil {
			return endpoint{finding: problem("webhook %s has neither a Service nor a URL", WebhookName)}
		}
		u, err := url.Parse(*cc.URL)
		if err != nil {
			return endpoint{finding: problem("webhook URL %q does not parse: %v", *cc.URL, err)}
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "443")
		}
		return endpoint{target: host, finding: passed("the webhook is called at the URL %s", *cc.URL)}
	}
	s := cc.Service
	ref := s.Namespace + "/" + s.Name
	svc, err := c.Clients.Kube.CoreV1().Services(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return endpoint{finding: problem("the webhook's Service %s does not exist: every pod creation it selects fails", ref)}
	}
	if err != nil {
		return endpoint{finding: cannotRead("get", "services", s.Namespace, err)}
	}
	port := ptr.Deref(s.Port, 443)
	portName := ""
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			portName = p.Name
		}
	}
	eps, err := c.Clients.Kube.DiscoveryV1().EndpointSlices(s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + s.Name})
	if err != nil {
		return endpoint{finding: cannotRead("list", "endpointslices", s.Namespace, err)}
	}
	var ready []string
	for _, es := range eps.Items {
		var epPort int32
		for _, p := range es.Ports {
			if ptr.Deref(p.Name, "") == portName && p.Port != nil {
				epPort = *p.Port
			}
		}
		for _, ep := range es.Endpoints {
			if ptr.Deref(ep.Conditions.Ready, false) && epPort != 0 && len(ep.Addresses) > 0 {
				ready = append(ready, net.JoinHostPort(ep.Addresses[0], strconv.Itoa(int(epPort))))
			}
		}
	}
	e := endpoint{secret: c.servingSecret(ctx, svc)}
	if len(ready) == 0 {
		e.finding = problem("Service %s has no ready endpoint on port %d: pod creations the webhook selects fail until one is ready", ref, port).
			with("Selector", labels.Set(svc.Spec.Selector).String())
		return e
	}
	slices.Sort(ready)
	e.target = ready[0]
	e.finding = passed("Service %s has %d ready endpoints (%s)", ref, len(ready), strings.Join(ready, ", "))
	return e
}

// servingSecret is the Secret the Service's pods mount at the webhook's certificate path.
func (c *Checker) servingSecret(ctx context.Context, svc *corev1.Service) *corev1.SecretReference {
	if len(svc.Spec.Selector) == 0 {
		return nil
	}
	pods, err := c.Clients.Kube.CoreV1().Pods(svc.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.Set(svc.Spec.Selector).String(), Limit: 1})
	if err != nil || len(pods.Items) == 0 {
		return nil
	}
	p := pods.Items[0]
	for _, ctr := range p.Spec.Containers {
		for _, m := range ctr.VolumeMounts {
			for _, v := range p.Spec.Volumes {
				if v.Name == m.Name && v.Secret != nil && slices.ContainsFunc(ctr.Args, func(a string) bool {
					return strings.HasPrefix(a, "--tls-cert-file="+strings.TrimSuffix(m.MountPath, "/")+"/")
				}) {
					return &corev1.SecretReference{Namespace: p.Namespace, Name: v.Secret.SecretName}
				}
			}
		}
	}
	return nil
}

func (c *Checker) checkCABundle(ctx context.Context, _ *scope) []Finding {
	inst, _ := c.installation(ctx)
	ca := inst.hook.ClientConfig.CABundle
	switch {
	case len(ca) == 0:
		return []Finding{problem("the webhook's caBundle is empty: the API server cannot trust habring, and every pod creation it selects fails")}
	case !x509.NewCertPool().AppendCertsFromPEM(ca):
		return []Finding{problem("the webhook's caBundle holds no PEM certificate")}
	}
	return []Finding{passed("the webhook's caBundle holds a CA certificate")}
}

// serving is the certificate chain the webhook serves, where it was read, and the name
// the API server verifies it for.
type serving struct {
	chain             []*x509.Certificate
	where, serverName string
}

// serving reads the chain the webhook presents at its endpoint, or else the one in the
// Secret its pods mount (habring check may run outside the cluster's network).
func (c *Checker) serving(ctx context.Context) (serving, error) {
	return cached(c, "serving", func() (serving, error) {
		inst, _ := c.installation(ctx)
		cc := inst.hook.ClientConfig
		s := serving{}
		if cc.Service != nil {
			s.serverName = cc.Service.Name + "." + cc.Service.Namespace + ".svc"
		} else if u, err := url.Parse(ptr.Deref(cc.URL, "")); err == nil {
			s.serverName = u.Hostname()
		}
		e := c.endpoint(ctx)
		var err error
		s.chain, s.where, err = c.presented(ctx, e.target, s.serverName)
		if err != nil && e.secret != nil {
			s.chain, s.where, err = c.fromSecret(ctx, *e.secret, err)
		}
		return s, err
	})
}

func (c *Checker) checkServingCertificate(ctx context.Context, _ *scope) []Finding {
	inst, _ := c.installation(ctx)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(inst.hook.ClientConfig.CABundle) {
		return []Finding{skipped("serving certificate not verified: no CA certificate in the caBundle")}
	}
	s, err := c.serving(ctx)
	if err != nil {
		return []Finding{skipped("serving certificate not checked: %v", err)}
	}
	inter := x509.NewCertPool()
	for _, ic := range s.chain[1:] {
		inter.AddCert(ic)
	}
	if _, err := s.chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: s.serverName, CurrentTime: c.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return []Finding{problem("the caBundle does not verify the serving certificate %s for %s: %v", s.where, s.serverName, err)}
	}
	return []Finding{passed("the caBundle verifies the serving certificate %s for %s", s.where, s.serverName)}
}

func (c *Checker) checkCertificateValidity(ctx context.Context, _ *scope) []Finding {
	s, err := c.serving(ctx)
	if err != nil {
		return []Finding{skipped("serving certificate's validity not checked: %v", err)}
	}
	leaf := s.chain[0]
	switch left := leaf.NotAfter.Sub(c.Now()); {
	case left <= 0:
		return []Finding{problem("the serving certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))}
	case left < c.Config.MinCertValidity:
		return []Finding{problem("the serving certificate expires in %s (at %s), under --min-cert-validity %s",
			left.Round(time.Minute), leaf.NotAfter.UTC().Format(time.RFC3339), c.Config.MinCertValidity)}
	default:
		return []Finding{passed("the serving certificate is valid until %s (%d days)", leaf.NotAfter.UTC().Format(time.RFC3339), int(left.Hours()/24))}
	}
}

func (c *Checker) checkFailurePolicy(ctx context.Context, _ *scope) []Finding {
	inst, _ := c.installation(ctx)
	h := inst.hook
	if fp := ptr.Deref(h.FailurePolicy, admissionregistrationv1.Fail); fp != admissionregistrationv1.Fail {
		return []Finding{problem("failurePolicy %s: a ring pod created while habring is unreachable starts a ring of its own (split brain)", fp)}
	}
	return []Finding{passed("failurePolicy Fail, timeoutSeconds %d", ptr.Deref(h.TimeoutSeconds, 10))}
}

func (c *Checker) checkNamespaceSelector(ctx context.Context, _ *scope) []Finding {
	inst, _ := c.installation(ctx)
	if _, err := metav1.LabelSelectorAsSelector(inst.hook.NamespaceSelector); err != nil {
		return []Finding{problem("namespaceSelector of %s does not parse: %v", inst.config.Name, err)}
	}
	return []Finding{passed("the webhook selects namespaces where %s", selectorString(inst.namespaces))}
}

// toSelect is what `kubectl label namespace` needs to put a namespace with labels have
// in the webhook's namespaceSelector: the arguments, "" when it is selected already, or
// ok false when no label can (it fails a NotIn or DoesNotExist, as the release's own
// namespace and kube-system do in the chart's selector).
func toSelect(sel labels.Selector, have map[string]string) (args string, ok bool) {
	reqs, _ := sel.Requirements()
	var add []string
	overwrite := false
	for _, r := range reqs {
		if r.Matches(labels.Set(have)) {
			continue
		}
		switch r.Operator() {
		case selection.In, selection.Equals, selection.DoubleEquals:
			add = append(add, r.Key()+"="+r.Values().List()[0])
		case selection.Exists:
			add = append(add, r.Key()+"=")
		default:
			return "", false
		}
		_, had := have[r.Key()]
		overwrite = overwrite || had
	}
	if overwrite {
		add = append(add, "--overwrite")
	}
	return strings.Join(add, " "), true
}

func selectorString(s labels.Selector) string {
	if s.Empty() {
		return "(every namespace)"
	}
	return s.String()
}

// presented dials target and returns the chain the webhook presents for serverName.
func (c *Checker) presented(ctx context.Context, target, serverName string) ([]*x509.Certificate, string, error) {
	if target == "" {
		return nil, "", fmt.Errorf("no endpoint to dial")
	}
	d := tls.Dialer{Config: &tls.Config{ServerName: serverName, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} //nolint:gosec // verified below against the caBundle, as the API server does
	dctx, cancel := context.WithTimeout(ctx, c.Config.Timeout)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", target)
	if err != nil {
		return nil, "", fmt.Errorf("dial %s: %w", target, err)
	}
	defer func() { _ = conn.Close() }()
	chain := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(chain) == 0 {
		return nil, "", fmt.Errorf("%s presented no certificate", target)
	}
	return chain, "presented at " + target, nil
}

// fromSecret reads the serving certificate from the webhook's Secret, when it cannot be
// dialled from here (habring check runs outside the cluster's network).
func (c *Checker) fromSecret(ctx context.Context, ref corev1.SecretReference, dialErr error) ([]*x509.Certificate, string, error) {
	s, err := c.Clients.Kube.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("%w; and read Secret %s/%s: %w", dialErr, ref.Namespace, ref.Name, err)
	}
	var chain []*x509.Certificate
	rest := s.Data[corev1.TLSCertKey]
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if cert, err := x509.ParseCertificate(b.Bytes); err == nil {
			chain = append(chain, cert)
		}
	}
	if len(chain) == 0 {
		return nil, "", fmt.Errorf("%w; and Secret %s/%s has no certificate in tls.crt", dialErr, ref.Namespace, ref.Name)
	}
	return chain, fmt.Sprintf("in Secret %s/%s (not reachable from here: %v)", ref.Namespace, ref.Name, dialErr), nil
}

// labelerRole is the labeler's ClusterRole, read once for its three checks.
func (c *Checker) labelerRole(ctx context.Context) (*install, *rbacv1.ClusterRole, error) {
	inst, _ := c.installation(ctx)
	role, err := cached(c, "labeler-role", func() (*rbacv1.ClusterRole, error) {
		return c.Clients.Kube.RbacV1().ClusterRoles().Get(ctx, inst.labelerRole, metav1.GetOptions{})
	})
	return inst, role, err
}

func (c *Checker) checkLabelerRole(ctx context.Context, _ *scope) []Finding {
	inst, role, err := c.labelerRole(ctx)
	switch {
	case err != nil:
		return []Finding{problem("labeler ClusterRole %s: %v", inst.labelerRole, reason(err))}
	case !grants(role.Rules, "", "pods", "patch") || !grants(role.Rules, "coordination.k8s.io", "leases", "update"):
		return []Finding{problem("labeler ClusterRole %s does not grant patch on pods and update on leases: the labeler cannot label its pod", inst.labelerRole)}
	}
	return []Finding{passed("labeler ClusterRole %s", inst.labelerRole)}
}

func (c *Checker) checkLabelerRoleWatch(ctx context.Context, _ *scope) []Finding {
	inst, role, err := c.labelerRole(ctx)
	switch {
	case err != nil:
		return []Finding{skipped("labeler ClusterRole %s: %v", inst.labelerRole, reason(err))}
	case !grants(role.Rules, "coordination.k8s.io", "leases", "list") || !grants(role.Rules, "coordination.k8s.io", "leases", "watch"):
		return []Finding{problem("labeler ClusterRole %s does not grant list and watch on leases: a new leader's labeler waits out a dead holder's Lease in full, and each labeler retries its watch and counts it failed", inst.labelerRole)}
	}
	return []Finding{passed("labeler ClusterRole %s grants list and watch on leases", inst.labelerRole)}
}

func (c *Checker) checkLabelerRoleEvents(ctx context.Context, _ *scope) []Finding {
	inst, role, err := c.labelerRole(ctx)
	switch {
	case err != nil:
		return []Finding{skipped("labeler ClusterRole %s: %v", inst.labelerRole, reason(err))}
	case !grants(role.Rules, "", "events", "create"):
		return []Finding{problem("labeler ClusterRole %s does not grant create on events: the labelers' Events (and this check's view of their denials) are missing", inst.labelerRole)}
	}
	return []Finding{passed("labeler ClusterRole %s grants create on events", inst.labelerRole)}
}

func (c *Checker) checkLabelerPolicies(ctx context.Context, _ *scope) []Finding {
	inst, _ := c.installation(ctx)
	kube := c.Clients.Kube
	var missing, names []string
	for _, suffix := range []string{"-labeler-own-role-only", "-labeler-own-lease-only"} {
		name := inst.config.Name + suffix
		names = append(names, name)
		if _, err := kube.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, name, metav1.GetOptions{}); err != nil {
			missing = append(missing, "ValidatingAdmissionPolicy "+name+": "+reason(err))
		}
		if _, err := kube.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, name, metav1.GetOptions{}); err != nil {
			missing = append(missing, "ValidatingAdmissionPolicyBinding "+name+": "+reason(err))
		}
	}
	if len(missing) > 0 {
		return []Finding{problem("labeler policy incomplete, a ring pod's credentials could change more than its own role label: %s", strings.Join(missing, "; "))}
	}
	return []Finding{passed("labeler policies %s, bound", strings.Join(names, ", "))}
}

func reason(err error) string {
	if apierrors.IsNotFound(err) {
		return "not found"
	}
	return err.Error()
}

func grants(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if matches(r.APIGroups, group) && matches(r.Resources, resource) && matches(r.Verbs, verb) {
			return true
		}
	}
	return false
}

func matches(list []string, v string) bool {
	return slices.Contains(list, v) || slices.Contains(list, "*")
}

// webhookOptions reads the options that change an admission's peers (--max-peers,
// --cluster-domain) from the args of the installed webhook's pod: the first pod of its
// Service. A webhook called at a URL, or one whose pod cannot be read, has the defaults.
func (c *Checker) webhookOptions(ctx context.Context) (patch.Options, string) {
	opts := patch.Options{LabelerImage: "habring"}
	defaults := func(why string) (patch.Options, string) {
		return opts, "with the default options (--max-peers " + strconv.Itoa(contract.DefaultMaxPeers) + ", --cluster-domain " + patch.DefaultClusterDomain + "): " + why
	}
	inst, _ := c.installation(ctx)
	if inst == nil || inst.hook.ClientConfig.Service == nil {
		return defaults("the webhook's pod is not known (no installation, or one called at a URL)")
	}
	svc := inst.hook.ClientConfig.Service
	ref := svc.Namespace + "/" + svc.Name
	s, err := c.Clients.Kube.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
	switch {
	case err != nil:
		return defaults(fmt.Sprintf("the webhook's Service %s could not be read: %v", ref, reason(err)))
	case len(s.Spec.Selector) == 0:
		return defaults("the webhook's Service " + ref + " selects no pod")
	}
	pods, err := c.Clients.Kube.CoreV1().Pods(svc.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.Set(s.Spec.Selector).String()})
	if err != nil {
		return defaults(fmt.Sprintf("the pods of the webhook's Service %s could not be listed: %v", ref, reason(err)))
	}
	// A pod that is not being deleted: in a rollout, the old one's args may be stale.
	i := slices.IndexFunc(pods.Items, func(p corev1.Pod) bool { return p.DeletionTimestamp == nil })
	if i < 0 {
		return defaults("no running pod of the webhook's Service " + ref)
	}
	p := &pods.Items[i]
	for _, ctr := range p.Spec.Containers {
		// The subcommand is the first word after the program that is not a flag.
		args := slices.Concat(ctr.Command, ctr.Args)
		if len(ctr.Command) > 0 {
			args = args[1:]
		}
		if sub := slices.IndexFunc(args, func(a string) bool { return !strings.HasPrefix(a, "-") }); sub < 0 || args[sub] != "webhook" {
			continue
		}
		fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.IntVar(&opts.MaxPeers, "max-peers", contract.DefaultMaxPeers, "")
		fs.StringVar(&opts.ClusterDomain, "cluster-domain", patch.DefaultClusterDomain, "")
		var known []string // the two flags, in either form; the webhook's others are not these options
		for i, a := range args {
			name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if strings.HasPrefix(a, "-") && (name == "max-peers" || name == "cluster-domain") {
				known = append(known, a)
				if !hasValue && i+1 < len(args) {
					known = append(known, args[i+1])
				}
			}
		}
		if err := fs.Parse(known); err != nil {
			return defaults(fmt.Sprintf("the webhook's args in pod %s/%s do not parse: %v", p.Namespace, p.Name, err))
		}
		return opts, fmt.Sprintf("with the installed webhook's options (pod %s/%s: --max-peers %d, --cluster-domain %s)", p.Namespace, p.Name, opts.MaxPeers, opts.ClusterDomain)
	}
	return defaults("pod " + p.Namespace + "/" + p.Name + " runs no `habring webhook`")
}
