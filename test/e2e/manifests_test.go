package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/test/harness"
)

// Issue 5's validation that cannot drift: cert-manager's CRDs (from the cert-manager Go
// module this project depends on) are installed, then every object of deploy/ (as
// kustomize renders it) and of examples/ is server-side applied to the real API server;
// any error or warning fails. The webhook configuration is applied with dryRun=All: for
// real it would send pod creations to an in-cluster Service that kwok cannot serve.
func TestManifestsApply(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	ctx := t.Context()

	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	require.NoError(t, err, "locate the cert-manager module")
	crds, err := filepath.Glob(filepath.Join(string(trimNL(out)), "deploy", "crds", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, crds)
	scheme := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(scheme))
	require.NoError(t, apiextensionsv1.AddToScheme(scheme))
	require.NoError(t, certmanagerv1.AddToScheme(scheme))
	decode := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	for _, f := range crds {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, doc := range harness.SplitYAML(data) {
			obj, _, err := decode.Decode(doc, nil, nil)
			require.NoError(t, err, f)
			require.NoError(t, harness.Apply(ctx, e.cluster.Config, obj, "", false), f)
		}
	}
	// The API server serves a new CRD's resource a moment after accepting it.
	require.Eventually(t, func() bool {
		_, err := e.client.Discovery().ServerResourcesForGroupVersion("cert-manager.io/v1")
		return err == nil
	}, 30*time.Second, 200*time.Millisecond)

	rendered, err := harness.Kustomize("deploy")
	require.NoError(t, err)
	var kinds []string
	for _, doc := range harness.SplitYAML(rendered) {
		obj, gvk, err := decode.Decode(doc, nil, nil)
		require.NoError(t, err)
		mwc, isWebhook := obj.(*admissionregistrationv1.MutatingWebhookConfiguration)
		if isWebhook {
			// This cluster already has a "habring" configuration (the test's, with a URL);
			// applying onto it would merge the two clientConfigs. Validate it as new.
			mwc.Name += "-as-shipped"
		}
		// Retried briefly: objects of a namespace created in the same pass can race it.
		deadline := time.Now().Add(20 * time.Second)
		for err = harness.Apply(ctx, e.cluster.Config, obj, "", isWebhook); err != nil && time.Now().Before(deadline); {
			time.Sleep(500 * time.Millisecond)
			err = harness.Apply(ctx, e.cluster.Config, obj, "", isWebhook)
		}
		require.NoError(t, err, "apply %s", gvk.Kind)
		kinds = append(kinds, gvk.Kind)
	}
	t.Logf("deploy/ applied: %v", kinds)
	require.Subset(t, kinds, []string{"Namespace", "Deployment", "MutatingWebhookConfiguration", "Certificate", "Issuer",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "PodDisruptionBudget"})

	// examples/, for real: namespace shop is opted in, so the e2e webhook injects its pods.
	for _, f := range []string{"examples/namespace.yaml", "examples/labeler-rolebinding.yaml", "examples/ring.yaml"} {
		require.NoError(t, harness.ApplyFile(ctx, e.cluster.Config, f, ""), f)
	}
	t.Cleanup(func() { _ = e.client.CoreV1().Namespaces().Delete(t.Context(), "shop", metav1.DeleteOptions{}) })
	for _, p := range readyPods(t, e, "shop", "hab-bastion", 3, 2*time.Minute) {
		requireInjected(t, &p)
	}
	for _, p := range readyPods(t, e, "shop", "redis", 3, 2*time.Minute) {
		requireInjected(t, &p)
		require.Equal(t, "main", p.Labels[contract.LabelRing])
		b, _ := json.Marshal(p.Spec.InitContainers)
		require.Contains(t, string(b), contract.LabelerContainerName, "leader topology: labeler sidecar")
	}
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
