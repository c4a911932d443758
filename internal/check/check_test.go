package check

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	restclient "k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/labeler"
	"github.com/habring/habring/internal/ring"
	"github.com/habring/habring/test/pki"
)

// now is the checks' clock; the CAs of test/pki start at the real one.
var now = time.Now().UTC().Truncate(time.Second)

// serve runs a TLS listener on loopback presenting a certificate of ca for the webhook's
// Service name, valid for validity from now; it returns its address.
func serve(t *testing.T, ca *pki.CA, validity time.Duration) string {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue([]string{"habring.habring-system.svc"}, now.Add(-time.Hour), validity+time.Hour)
	require.NoError(t, err)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	return l.Addr().String()
}

type world struct {
	objs []runtime.Object
}

// installed is habring as deploy/ installs it, its webhook answering at addr with a
// caBundle of ca, and namespace shop opted in with a three-pod ring main.
func installed(t *testing.T, ca *pki.CA, addr string) *world {
	t.Helper()
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	w := &world{}
	w.objs = append(w.objs,
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: "habring"},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{
				Name: WebhookName,
				ClientConfig: admissionregistrationv1.WebhookClientConfig{
					Service:  &admissionregistrationv1.ServiceReference{Namespace: "habring-system", Name: "habring", Path: ptr.To("/mutate"), Port: ptr.To[int32](443)},
					CABundle: ca.PEM,
				},
				FailurePolicy:  ptr.To(admissionregistrationv1.Fail),
				TimeoutSeconds: ptr.To[int32](10),
				NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: contract.LabelInject, Operator: metav1.LabelSelectorOpIn, Values: []string{"enabled"}},
				}},
			}},
		},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "habring-system", Name: "habring"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app.kubernetes.io/name": "habring"}, Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "habring-system", Name: "habring-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: "habring"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To(int32(port))}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "habring-labeler"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "patch"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "watch", "create", "update"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{contract.LabelInject: "enabled"}}},
		&appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "redis", Annotations: map[string]string{contract.AnnotationRing: "main", contract.AnnotationTopology: "leader"}},
			Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](3), ServiceName: "redis",
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "redis"}}},
		},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "habring-labeler"},
			RoleRef:  rbacv1.RoleRef{Kind: "ClusterRole", Name: "habring-labeler"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "default", Namespace: "shop"}}},
	)
	for _, n := range []string{"habring-labeler-own-role-only", "habring-labeler-own-lease-only"} {
		w.objs = append(w.objs, &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: n}},
			&admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	for i, role := range []string{contract.RoleLeader, contract.RoleFollower, contract.RoleFollower} {
		w.objs = append(w.objs, ringPod(i, role, true))
	}
	// The ring's Service's slice: the three pods ready, a fourth address not.
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "redis-ring", Labels: map[string]string{contract.LabelRing: "main"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, ready := range []bool{true, true, true, false} {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.0.0." + strconv.Itoa(10+i)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: "redis-" + strconv.Itoa(i)}})
	}
	w.objs = append(w.objs, slice)
	return w
}

func ringPod(i int, role string, injected bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "redis-" + strconv.Itoa(i), UID: types.UID("uid-redis-" + strconv.Itoa(i)),
			Labels:          map[string]string{"app": "redis", contract.LabelRing: "main", contract.LabelRole: role},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "redis", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "redis"}}, InitContainers: []corev1.Container{{Name: contract.LabelerContainerName}}},
		Status: corev1.PodStatus{PodIP: "10.0.0." + strconv.Itoa(10+i),
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	if injected {
		p.Annotations = map[string]string{contract.AnnotationStatus: contract.StatusInjected, contract.AnnotationPeers: "10.0.0.10"}
	} else {
		delete(p.Labels, contract.LabelRing)
		delete(p.Labels, contract.LabelRole)
		p.Spec.InitContainers = nil
	}
	return p
}

func (w *world) checker(t *testing.T) *Checker {
	t.Helper()
	scheme := runtime.NewScheme()
	require.NoError(t, metav1.AddMetaToScheme(scheme))
	cfg := Defaults()
	cfg.Timeout = 2 * time.Second
	kube := fake.NewClientset(w.objs...)
	kube.AddProxyReactor("pods", func(k8stesting.Action) (bool, restclient.ResponseWrapper, error) { return true, unreachable{}, nil })
	return &Checker{
		Clients: &ring.Clients{Kube: kube, Meta: metadatafake.NewSimpleMetadataClient(scheme), Host: "https://test"},
		Config:  cfg,
		Now:     func() time.Time { return now },
	}
}

func run(t *testing.T, c *Checker) (string, *Report) {
	t.Helper()
	r := c.Check(context.Background())
	var b bytes.Buffer
	require.NoError(t, r.Write(&b))
	t.Log("\n" + b.String())
	require.NotContains(t, b.String(), "failed to render")
	return b.String(), r
}

func failures(r *Report) []string {
	var out []string
	for _, res := range r.Results {
		if res.Status == Fail {
			out = append(out, res.Message)
		}
	}
	return out
}

func TestNotInstalled(t *testing.T) {
	out, r := run(t, (&world{}).checker(t))
	require.Equal(t, 1, r.Failed())
	require.Contains(t, out, "× no MutatingWebhookConfiguration has the webhook inject.habring.habitat.sh: habring is not installed\n    helm upgrade --install habring")
	require.Contains(t, out, "Status check results are × (1 failed, 0 warnings)")
}

func TestHealthyInstall(t *testing.T) {
	ca, err := pki.NewCA("habring-ca", 24*time.Hour*365)
	require.NoError(t, err)
	addr := serve(t, ca, 90*24*time.Hour)
	out, r := run(t, installed(t, ca, addr).checker(t))
	require.Empty(t, failures(r))
	for _, want := range []string{
		"habring-install\n---------------\n✓ MutatingWebhookConfiguration habring has the webhook inject.habring.habitat.sh (no Helm release: deploy/'s kustomization, or applied by hand)\n",
		"✓ Service habring-system/habring has 1 ready endpoints (" + addr + ")\n",
		"✓ the caBundle verifies the serving certificate presented at " + addr + " for habring.habring-system.svc\n",
		"✓ failurePolicy Fail, timeoutSeconds 10\n",
		"✓ the webhook selects namespaces where habitat.sh/inject in (enabled)\n",
		"✓ labeler ClusterRole habring-labeler\n",
		"✓ labeler policies habring-labeler-own-role-only, habring-labeler-own-lease-only, bound\n",
		"namespace shop\n--------------\n✓ the webhook selects namespace shop\n",
		"✓ 1 workloads with the habitat.sh/ring annotation: StatefulSet redis (ring main)\n",
		"✓ RoleBinding habring-labeler binds habring-labeler to service account default, whose pods run the labeler\n",
		"ring shop/main\n--------------\n✓ ring main: 3 pods injected, 3 ready; 3 live members (ready endpoints of Services labelled habitat.sh/ring=main) for the webhook to give new pods as peers\n",
		"- ring main: service groups not checked: no Supervisor census through the API server's pod proxy",
		"✓ ring main, StatefulSet redis: one pod labelled leader, redis-0\n",
		"Status check results are ✓\n",
	} {
		require.Contains(t, out, want)
	}
}

func TestBrokenInstalls(t *testing.T) {
	ca, err := pki.NewCA("habring-ca", 24*time.Hour*365)
	require.NoError(t, err)
	other, err := pki.NewCA("someone-else", 24*time.Hour*365)
	require.NoError(t, err)
	tests := map[string]struct {
		change func(w *world, ca *pki.CA) *pki.CA // returns the CA signing the served certificate
		valid  time.Duration
		want   []string
	}{
		"a caBundle of another CA": {
			change: func(_ *world, _ *pki.CA) *pki.CA { return other }, valid: 90 * 24 * time.Hour,
			want: []string{"the caBundle does not verify the serving certificate presented at"},
		},
		"an expiring certificate": {
			valid: 48 * time.Hour,
			want:  []string{"the serving certificate expires in 48h0m0s (at " + now.Add(48*time.Hour).Format(time.RFC3339) + "), under --min-cert-validity 168h0m0s"},
		},
		"a labeler denied lately": {
			change: func(w *world, ca *pki.CA) *pki.CA {
				denial := func(pod, reason string, ago time.Duration, count int32) *corev1.Event {
					return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: pod + "." + reason},
						InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: pod, UID: types.UID("uid-" + pod)},
						Reason:         reason, Type: corev1.EventTypeWarning, Source: corev1.EventSource{Component: labeler.EventComponent},
						Message:       `role label update denied: pods "` + pod + `" is forbidden: no RoleBinding. Fix: bind habring-labeler`,
						LastTimestamp: metav1.NewTime(now.Add(-ago)), Count: count}
				}
				w.objs = append(w.objs, denial("redis-1", labeler.EventDenied, 2*time.Minute, 7),
					denial("redis-2", labeler.EventDenied, time.Hour, 1),     // long past
					denial("redis-0", labeler.EventWaiting, time.Minute, 1),  // not a denial
					denial("redis-9", labeler.EventDenied, time.Minute, 1),   // a pod that is gone
					denial("redis-0", labeler.EventDenied, 3*time.Minute, 2), // fixed since:
					denial("redis-0", labeler.EventAllowed, time.Minute, 1))
				return ca
			},
			valid: 90 * 24 * time.Hour,
			want:  []string{`ring main: the labeler of pod redis-1 is denied (7 times, last 2m0s ago): role label update denied: pods "redis-1" is forbidden: no RoleBinding`},
		},
		"two leaders and no RoleBinding": {
			change: func(w *world, ca *pki.CA) *pki.CA {
				var objs []runtime.Object
				for _, o := range w.objs {
					if p, ok := o.(*corev1.Pod); ok && p.Name == "redis-2" {
						p.Labels[contract.LabelRole] = contract.RoleLeader
					}
					if _, ok := o.(*rbacv1.RoleBinding); !ok {
						objs = append(objs, o)
					}
				}
				w.objs = objs
				return ca
			},
			valid: 90 * 24 * time.Hour,
			want: []string{
				"service account default runs the labeler sidecar in shop but no RoleBinding grants it habring-labeler: the leader is never labelled",
				"ring main, StatefulSet redis: 2 pods labelled habitat.sh/role=leader (redis-0, redis-2): a Service selecting the leader sends writes to more than one",
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			signer := ca
			w := &world{}
			if tc.change != nil {
				// The webhook serves a certificate of signer; the caBundle stays ca's.
				probe := installed(t, ca, "127.0.0.1:1")
				signer = tc.change(probe, ca)
			}
			addr := serve(t, signer, tc.valid)
			w = installed(t, ca, addr)
			if tc.change != nil {
				tc.change(w, ca)
			}
			_, r := run(t, w.checker(t))
			fails := strings.Join(failures(r), "\n")
			for _, want := range tc.want {
				require.Contains(t, fails, want)
			}
			require.Len(t, failures(r), len(tc.want), fails)
		})
	}
}

func TestExplainPod(t *testing.T) {
	ca, err := pki.NewCA("habring-ca", 24*time.Hour*365)
	require.NoError(t, err)
	w := installed(t, ca, "127.0.0.1:1")
	w.objs = append(w.objs, ringPod(3, "", false),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "elsewhere", Name: "p"}})
	c := w.checker(t)
	explain := func(ns, name string) string {
		c.Config.Pod = ns + "/" + name
		r := c.Check(context.Background())
		var b bytes.Buffer
		require.NoError(t, r.Write(&b))
		require.NotContains(t, b.String(), "failed to render")
		return b.String()
	}
	require.Contains(t, explain("shop", "redis-0"), "✓ injected by habring into ring main, peers 10.0.0.10")
	out := explain("shop", "redis-3")
	require.Contains(t, out, "× not injected: the webhook would inject it now (peers 10.0.0.10,10.0.0.11,10.0.0.12, with the default options "+
		"(--max-peers 5, --cluster-domain cluster.local): no running pod of the webhook's Service habring-system/habring): ")
	require.Contains(t, out, "    kubectl -n shop delete pod redis-3")

	// With the webhook's pod readable, its own options decide: two peers at most.
	webhookPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "habring-system", Name: "habring-7d9f", Labels: map[string]string{"app.kubernetes.io/name": "habring"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "webhook", Args: []string{"webhook", "--listen=:8443", "--max-peers", "2", "--cluster-domain=corp.local"}}}}}
	w.objs = append(w.objs, webhookPod)
	c = w.checker(t)
	require.Contains(t, explain("shop", "redis-3"), "× not injected: the webhook would inject it now (peers 10.0.0.10,10.0.0.11, "+
		"with the installed webhook's options (pod habring-system/habring-7d9f: --max-peers 2, --cluster-domain corp.local)): ")
	require.Contains(t, explain("elsewhere", "p"), "× not injected: namespace elsewhere is not selected by the webhook (habitat.sh/inject in (enabled))\n    kubectl label namespace elsewhere habitat.sh/inject=enabled")
	require.Contains(t, explain("shop", "nope"), "× pod shop/nope does not exist")
}

// rawResponse is what the fake clientset's pod proxy returns: a Supervisor's /census.
type rawResponse []byte

func (b rawResponse) DoRaw(context.Context) ([]byte, error) { return b, nil }
func (b rawResponse) Stream(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b)), nil
}

// unreachable is the pod proxy's answer when no gateway listens (the fake's default here).
type unreachable struct{}

func (unreachable) DoRaw(context.Context) ([]byte, error) {
	return nil, errors.New("dial tcp: connect: connection refused")
}
func (unreachable) Stream(context.Context) (io.ReadCloser, error) {
	return nil, errors.New("dial tcp: connect: connection refused")
}

// With a census read through the pod proxy, the ring's service groups are checked: a
// dead member counting against quorum fails with its depart command, the leader label is
// counted among the group's members.
func TestRingCensus(t *testing.T) {
	ca, err := pki.NewCA("habring-ca", 24*time.Hour*365)
	require.NoError(t, err)
	c := installed(t, ca, serve(t, ca, 90*24*time.Hour)).checker(t)
	census := `{"local_member_id":"m0","census_groups":{"redis.default":{"election_status":"ElectionFinished","leader_id":"m0","population":{
		"m0":{"alive":true,"sys":{"ip":"10.0.0.10"}},
		"m1":{"alive":true,"sys":{"ip":"10.0.0.11"}},
		"m2":{"alive":true,"sys":{"ip":"10.0.0.12"}},
		"deadbeef":{"confirmed":true,"sys":{"ip":"10.0.0.99"}}}}}}`
	var asked []string
	c.Clients.Kube.(*fake.Clientset).PrependProxyReactor("pods", func(a k8stesting.Action) (bool, restclient.ResponseWrapper, error) {
		asked = append(asked, a.(k8stesting.ProxyGetAction).GetName()+":"+a.(k8stesting.ProxyGetAction).GetPort()+"/"+a.(k8stesting.ProxyGetAction).GetPath())
		return true, rawResponse(census), nil
	})
	out, r := run(t, c)
	require.Equal(t, []string{"redis-0:9631/census"}, asked)
	require.Equal(t, []string{"ring main, group redis.default: 1 dead members still count against its quorum (margin 0; 3 alive) until they depart or for 72 hours"}, failures(r))
	require.Contains(t, out, "    hab sup depart deadbeef\n")
	require.Contains(t, out, "✓ ring main, group redis.default: one pod labelled leader, redis-0\n")
	require.Contains(t, out, "✓ ring main, group redis.default: its leader redis-0 is labelled habitat.sh/role=leader\n")

	// The census names another leader than the pod labelled: a warning, retried by --wait.
	census = strings.Replace(census, `"leader_id":"m0"`, `"leader_id":"m1"`, 1)
	out, _ = run(t, c)
	require.Contains(t, out, "‼ ring main, group redis.default: redis-1 leads but is not labelled habitat.sh/role=leader: a Service selecting the leader does not send writes to it\n"+
		"    kubectl -n shop get events --field-selector source=habring-labeler; kubectl -n shop logs redis-1 -c habring-labeler\n")
}

// A labeler ClusterRole of a release before the Lease watch still labels, and check says
// what it costs.
func TestLabelerRoleWithoutLeaseWatch(t *testing.T) {
	ca, err := pki.NewCA("habring-ca", 24*time.Hour*365)
	require.NoError(t, err)
	w := installed(t, ca, serve(t, ca, 90*24*time.Hour))
	for _, o := range w.objs {
		if role, ok := o.(*rbacv1.ClusterRole); ok {
			role.Rules[1].Verbs = []string{"get", "create", "update"}
		}
	}
	out, r := run(t, w.checker(t))
	require.Empty(t, failures(r))
	require.Contains(t, out, "‼ labeler ClusterRole habring-labeler does not grant list and watch on leases: a new leader's labeler waits out a dead holder's Lease in full")
}

// The label a hint gives a namespace is the installed webhook's namespaceSelector's,
// not the chart's default, and a namespace no label can select gets no kubectl label.
func TestNamespaceLabelsFromSelector(t *testing.T) {
	sel := func(ls *metav1.LabelSelector) labels.Selector {
		s, err := metav1.LabelSelectorAsSelector(ls)
		require.NoError(t, err)
		return s
	}
	chart := &metav1.LabelSelector{MatchLabels: map[string]string{"team": "data"}, MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "tier", Operator: metav1.LabelSelectorOpExists},
		{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"habring-system", "kube-system"}},
	}}
	for _, tc := range []struct {
		name string
		have map[string]string
		args string
		ok   bool
	}{
		{"unlabelled", map[string]string{"kubernetes.io/metadata.name": "shop"}, "team=data tier=", true},
		{"other team", map[string]string{"kubernetes.io/metadata.name": "shop", "team": "web", "tier": "1"}, "team=data --overwrite", true},
		{"selected", map[string]string{"kubernetes.io/metadata.name": "shop", "team": "data", "tier": "1"}, "", true},
		{"kube-system", map[string]string{"kubernetes.io/metadata.name": "kube-system"}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, ok := toSelect(sel(chart), tc.have)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.args, args)
		})
	}

	ca, err := pki.NewCA("habring-ca", 24*time.Hour*365)
	require.NoError(t, err)
	w := installed(t, ca, "127.0.0.1:1")
	w.objs[0].(*admissionregistrationv1.MutatingWebhookConfiguration).Webhooks[0].NamespaceSelector = chart
	w.objs = append(w.objs,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system", Labels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "p"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p"}})
	c := w.checker(t)
	explain := func(ns string) string {
		c.Config.Pod = ns + "/p"
		var b bytes.Buffer
		require.NoError(t, c.Check(context.Background()).Write(&b))
		require.NotContains(t, b.String(), "failed to render")
		return b.String()
	}
	require.Contains(t, explain("shop"), "× not injected: namespace shop is not selected by the webhook (kubernetes.io/metadata.name notin (habring-system,kube-system),team=data,tier)\n"+
		"    kubectl label namespace shop team=data tier=, then kubectl -n shop delete pod p")
	out := explain("kube-system")
	require.Contains(t, out, "× not injected: namespace kube-system is excluded by the webhook's namespaceSelector")
	require.Contains(t, out, "    run the workload in a namespace the webhook selects")
	require.NotContains(t, out, "kubectl label namespace")

	// No namespace is selected: the hint labels with the installed selector's labels.
	c.Config.Pod = ""
	out, _ = run(t, c)
	require.Contains(t, out, "kubectl label namespace <namespace> team=data tier=")
}
