// Package deploy holds the install manifests; this test checks them offline: they render,
// every object decodes strictly into its Go type (cert-manager's included), and the
// settings the README promises hold. test/e2e applies them to a real API server.
package deploy

import (
	"slices"
	"strings"
	"testing"
	"time"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/habring/habring/test/harness"
)

func objects(t *testing.T) []runtime.Object {
	t.Helper()
	out, err := harness.Kustomize("deploy")
	require.NoError(t, err)
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	require.NoError(t, certmanagerv1.AddToScheme(scheme))
	strict := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []runtime.Object
	for _, doc := range harness.SplitYAML(out) {
		obj, _, err := strict.Decode(doc, nil, nil)
		require.NoError(t, err, "%s", doc)
		objs = append(objs, obj)
	}
	return objs
}

func find[T runtime.Object](t *testing.T, objs []runtime.Object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.(T); ok {
			if m, ok := any(v).(interface{ GetName() string }); ok && m.GetName() == name {
				return v
			}
		}
	}
	var zero T
	t.Fatalf("no %T named %s in deploy/", zero, name)
	return zero
}

func TestManifests(t *testing.T) {
	t.Parallel()
	objs := objects(t)

	dep := find[*appsv1.Deployment](t, objs, "habring")
	require.GreaterOrEqual(t, *dep.Spec.Replicas, int32(2))
	c := dep.Spec.Template.Spec.Containers[0]
	require.Contains(t, c.Args, "--labeler-image="+c.Image, "the sidecar must run the webhook's own image")
	require.NotEqual(t, "habring", c.Image, "kustomize images: did not apply")
	require.True(t, *dep.Spec.Template.Spec.SecurityContext.RunAsNonRoot)
	require.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
	require.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
	require.Equal(t, []corev1.Capability{"ALL"}, c.SecurityContext.Capabilities.Drop)
	require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	require.NotNil(t, c.Resources.Requests.Memory())
	require.False(t, c.Resources.Limits.Memory().IsZero())
	require.True(t, slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "tls" && m.ReadOnly }))
	require.NotNil(t, dep.Spec.Template.Spec.Affinity.PodAntiAffinity)

	pdb := find[*policyv1.PodDisruptionBudget](t, objs, "habring")
	require.Equal(t, dep.Spec.Selector.MatchLabels, pdb.Spec.Selector.MatchLabels)

	svc := find[*corev1.Service](t, objs, "habring")
	mwc := find[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "habring")
	require.Len(t, mwc.Webhooks, 1)
	w := mwc.Webhooks[0]
	require.Equal(t, []string{"v1"}, w.AdmissionReviewVersions)
	require.Equal(t, admissionregistrationv1.SideEffectClassNoneOnDryRun, *w.SideEffects)
	require.Equal(t, admissionregistrationv1.Fail, *w.FailurePolicy)
	require.Equal(t, admissionregistrationv1.IfNeededReinvocationPolicy, *w.ReinvocationPolicy)
	require.Equal(t, svc.Name, w.ClientConfig.Service.Name)
	require.Equal(t, svc.Namespace, w.ClientConfig.Service.Namespace)
	require.Equal(t, "/mutate", *w.ClientConfig.Service.Path)
	require.Equal(t, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, w.Rules[0].Operations)
	require.Equal(t, []string{"pods"}, w.Rules[0].Resources)
	require.Len(t, w.MatchConditions, 2)
	requestTimeout := argValue(t, c.Args, "--request-timeout")
	require.Less(t, requestTimeout, time.Duration(*w.TimeoutSeconds)*time.Second, "habring must answer before the API server gives up")
	var excluded []string
	for _, e := range w.NamespaceSelector.MatchExpressions {
		if e.Key == "kubernetes.io/metadata.name" && e.Operator == "NotIn" {
			excluded = e.Values
		}
	}
	require.ElementsMatch(t, []string{dep.Namespace, "kube-system"}, excluded)

	// cert-manager: the serving certificate names the Service, and the CA injected into
	// the webhook configuration is that certificate's.
	cert := find[*certmanagerv1.Certificate](t, objs, "habring-serving")
	require.Contains(t, cert.Spec.DNSNames, svc.Name+"."+svc.Namespace+".svc")
	require.Equal(t, cert.Namespace+"/"+cert.Name, mwc.Annotations["cert-manager.io/inject-ca-from"])
	require.NotNil(t, cert.Spec.Duration)
	require.NotNil(t, cert.Spec.RenewBefore)
	require.True(t, slices.ContainsFunc(dep.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == cert.Spec.SecretName
	}))
	ca := find[*certmanagerv1.Certificate](t, objs, "habring-ca")
	require.True(t, ca.Spec.IsCA)
}

// TestRBACIsExactlyWhatIsUsed pins the verbs: a new informer or API call must come with
// a deliberate change here.
func TestRBACIsExactlyWhatIsUsed(t *testing.T) {
	t.Parallel()
	objs := objects(t)
	rules := func(name string) []string {
		var out []string
		for _, r := range find[*rbacv1.ClusterRole](t, objs, name).Rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					out = append(out, g+"/"+res+": "+strings.Join(r.Verbs, ","))
				}
			}
		}
		return out
	}
	require.ElementsMatch(t, []string{
		"apps/statefulsets: get,list,watch",
		"apps/deployments: get,list,watch",
		"discovery.k8s.io/endpointslices: list,watch",
		"/pods: list,watch",
		"/events: create,patch", // Events on workloads (internal/webhook/events.go)
	}, rules("habring-webhook"))
	require.ElementsMatch(t, []string{
		"/pods: get,list,patch",
		"/pods/status: patch",
		"coordination.k8s.io/leases: get,list,watch,create,update",
		"discovery.k8s.io/endpointslices: list,watch",
		"/events: create,patch", // Events on its own pod (internal/labeler/events.go)
	}, rules("habring-labeler"))
	b := find[*rbacv1.ClusterRoleBinding](t, objs, "habring-webhook")
	require.Equal(t, "habring", b.Subjects[0].Name)
}

func argValue(t *testing.T, args []string, flag string) time.Duration {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			d, err := time.ParseDuration(v)
			require.NoError(t, err)
			return d
		}
	}
	t.Fatalf("no %s in %v", flag, args)
	return 0
}
