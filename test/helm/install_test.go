package helm

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	habringcheck "github.com/habring/habring/internal/check"
	"github.com/habring/habring/test/cluster"
	"github.com/habring/habring/test/harness"
	"github.com/habring/habring/test/pki"
	"github.com/habring/habring/test/podnet"
	"github.com/habring/habring/test/runner"
)

const release, releaseNS = "habring", "habring-system"

// TestInstall installs the chart with the Helm SDK, as `helm install --wait` does, on a
// local control plane whose runner node runs the webhook's pods: the API server reaches
// the webhook through its Service, and the example ring (six Supervisors and their
// labelers, also on the runner) is admitted through it. `habring check` is asked before
// the install (fails, names the missing webhook configuration), on the healthy install
// (passes), with two pods of one service group labelled leader and with a broken caBundle
// (each fails, naming it).
func TestInstall(t *testing.T) {
	e := start(t, nil)
	ctx, c, client, habring := e.ctx, e.c, e.client, e.habring
	check := e.checker(t)
	out, code := check()
	require.Equal(t, 1, code)
	require.Contains(t, out, "× no MutatingWebhookConfiguration has the webhook inject.habring.habitat.sh: habring is not installed")

	in := action.NewInstall(e.helm(t))
	in.ReleaseName, in.Namespace = release, releaseNS
	in.WaitStrategy, in.Timeout = kube.StatusWatcherStrategy, 3*time.Minute
	start := time.Now()
	_, err := in.RunWithContext(ctx, loadChart(t), e.values(t, "local"))
	e.explainFailure(t, err, "helm install --wait")
	t.Logf("helm install --wait: the webhook's 2 pods ready on the runner in %s", time.Since(start).Round(time.Millisecond))

	// The example ring, its pods running on the runner, admitted through the chart's webhook.
	e.ring(t)
	var pods []corev1.Pod
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		list, err := client.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: contract.LabelRing + "=main"})
		require.NoError(ct, err)
		pods = list.Items
		require.Len(ct, pods, 6)
		leaders := 0
		for _, p := range pods {
			require.True(ct, harness.PodReady(&p), "pod %s ready", p.Name)
			require.Equal(ct, contract.StatusInjected, p.Annotations[contract.AnnotationStatus], "pod %s", p.Name)
			if p.Labels[contract.LabelRole] == contract.RoleLeader {
				leaders++
			}
		}
		require.Equal(ct, 1, leaders, "pods labelled leader")
	}, 4*time.Minute, time.Second, "the example ring runs, injected through the chart's webhook, one redis pod labelled leader")

	out, code = check()
	require.Equal(t, 0, code)
	for _, want := range []string{
		"✓ MutatingWebhookConfiguration habring has the webhook inject.habring.habitat.sh",
		"✓ Service habring-system/habring has 2 ready endpoints",
		"✓ the caBundle verifies the serving certificate presented at ",
		"✓ RoleBinding habring-labeler binds habring-labeler to service account habitat",
		"✓ ring main: 6 pods injected, 6 ready",
		"✓ the serving certificate is valid until ",
		"✓ ring main, group redis.default: 3 alive, 0 suspect, no dead member (quorum margin 1)",
		"✓ ring main, group redis.default: one pod labelled leader, redis-",
		"Status check results are ✓",
	} {
		require.Contains(t, out, want)
	}
	// The same run as a script would: -o json, --wait for what settles on its own.
	out, code = check("-o", "json", "--wait=1m")
	require.Equal(t, 0, code)
	var report struct {
		SchemaVersion string `json:"schemaVersion"`
		Success       bool   `json:"success"`
		Sections      []struct {
			Name    string `json:"name"`
			Results []struct{ ID, Result, Message string }
		} `json:"sections"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &report))
	require.Equal(t, habringcheck.SchemaVersion, report.SchemaVersion)
	require.True(t, report.Success)
	results := map[string]string{}
	for _, s := range report.Sections {
		for _, r := range s.Results {
			results[s.Name+" "+r.ID] = r.Result
		}
	}
	for _, want := range []string{"habring-install install.endpoints", "habring-install install.serving-certificate",
		"ring shop/main ring.pods-ready", "ring shop/main ring.one-leader", "ring shop/main ring.leader-labelled"} {
		require.Equal(t, "pass", results[want], want)
	}
	require.Contains(t, results, "habring-install install.webhook-configuration")

	var leader string
	for _, p := range pods {
		if p.Labels[contract.LabelRole] == contract.RoleLeader {
			leader = p.Name
		}
	}
	out, code = check("--pod=shop/" + leader)
	require.Equal(t, 0, code)
	require.Contains(t, out, "✓ labelled habitat.sh/role=leader by its labeler")
	require.Contains(t, out, "✓ injected by habring into ring main, peers ")

	// Two pods of one service group labelled leader (bastion runs no labeler that would
	// take the label back).
	for _, name := range []string{"hab-bastion-0", "hab-bastion-1"} {
		_, err := client.CoreV1().Pods("shop").Patch(ctx, name, types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"habitat.sh/role":"leader"}}}`), metav1.PatchOptions{})
		require.NoError(t, err)
	}
	out, code = check("--namespace=shop")
	require.Equal(t, 1, code)
	require.Regexp(t, `× ring main, group [a-z.-]+: 2 pods labelled habitat.sh/role=leader \(hab-bastion-0, hab-bastion-1\)`, out)

	// A caBundle of another CA: the API server could no longer call the webhook.
	other, err := pki.NewCA("someone-else", time.Hour)
	require.NoError(t, err)
	_, err = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, release, types.JSONPatchType,
		[]byte(`[{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":"`+base64.StdEncoding.EncodeToString(other.PEM)+`"}]`), metav1.PatchOptions{})
	require.NoError(t, err)
	out, code = check()
	require.Equal(t, 1, code)
	require.Contains(t, out, "× the caBundle does not verify the serving certificate presented at ")

	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		// kubectl's plugin convention: kubectl-habring on PATH.
		bin := filepath.Join(e.dir, "plugins")
		require.NoError(t, os.MkdirAll(bin, 0o755))
		require.NoError(t, os.Symlink(habring, filepath.Join(bin, "kubectl-habring")))
		cmd := exec.CommandContext(ctx, kubectl, "habring", "check", "--kubeconfig="+c.Kubeconfig, "--namespace=shop", "--timeout=3s")
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		pout, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, string(pout))
		require.Equal(t, 1, exit.ExitCode(), string(pout))
		require.Contains(t, string(pout), "× the caBundle does not verify the serving certificate")
		cmd = exec.CommandContext(ctx, kubectl, "habring", "--help")
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		help, err := cmd.CombinedOutput()
		require.NoError(t, err, string(help))
		require.Contains(t, string(help), "Usage: kubectl habring <command> [flags]")
		t.Logf("kubectl habring check (%s, plugin %s): exit 1 and the same report as habring check", kubectl, filepath.Join(bin, "kubectl-habring"))
	} else {
		t.Log("no kubectl here: `kubectl habring` not run (the plugin name is unit-tested in cmd/habring)")
	}
}

// env is a local control plane whose runner node runs pods, and habring built for it.
type env struct {
	ctx     context.Context
	dir     string
	c       *cluster.Cluster
	client  kubernetes.Interface
	habring string
	// caPEM is the caBundle of values, once made.
	caPEM string
}

// start starts the control plane, its pod network and runner, and builds habring; more
// gives the runner more builds of the labeler image by tag (built into dir first).
func start(t *testing.T, more func(ctx context.Context, dir string) map[string]string) *env {
	t.Helper()
	if os.Getenv("HABRING_E2E") == "" {
		t.Skip("set HABRING_E2E=1 (make e2e) to start a local control plane")
	}
	ctx := t.Context()
	dir, err := os.MkdirTemp("", "habring-helm-e2e-")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster, runner and container logs kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	var tags map[string]string
	if more != nil {
		tags = more(ctx, dir)
	}
	bridge, err := harness.PodNetwork(ctx, os.Stdout)
	if errors.Is(err, podnet.ErrUnsupported) {
		t.Skipf("the webhook's pods cannot run here: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = bridge.Close(context.Background()) })
	c, err := cluster.Start(ctx, cluster.Options{Dir: filepath.Join(dir, "cluster"), ControllerQPS: 100,
		APIServerAddresses: []string{bridge.Gateway.String()}})
	require.NoError(t, err)
	t.Cleanup(c.Stop)
	client, err := kubernetes.NewForConfig(c.Config)
	require.NoError(t, err)
	habring := filepath.Join(dir, "habring")
	require.NoError(t, harness.BuildHabring(ctx, habring))
	run, err := harness.StartRunnerWith(ctx, c, bridge, dir, habring, tags)
	require.NoError(t, err)
	t.Cleanup(run.Close)

	return &env{ctx: ctx, dir: dir, c: c, client: client, habring: habring}
}

// checker runs `habring check` on the cluster and returns its report and exit status.
func (e *env) checker(t *testing.T) func(args ...string) (string, int) {
	return func(args ...string) (string, int) {
		cmd := exec.CommandContext(e.ctx, e.habring, append([]string{"check", "--kubeconfig=" + e.c.Kubeconfig, "--timeout=3s"}, args...)...)
		var out, progress bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &progress
		err := cmd.Run()
		t.Logf("habring check %s:\n%s%s", strings.Join(args, " "), progress.String(), out.String())
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return out.String(), exit.ExitCode()
		}
		require.NoError(t, err)
		return out.String(), 0
	}
}

// helm is the Helm SDK's configuration for the release's namespace, as the helm CLI makes it.
func (e *env) helm(t *testing.T) *action.Configuration {
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.Namespace = &e.c.Kubeconfig, ptr.To(releaseNS)
	cfg := action.NewConfiguration()
	require.NoError(t, cfg.Init(flags, releaseNS, "secret"))
	return cfg
}

// values are the chart's values for an install without cert-manager: the serving
// certificate in a Secret (made on first use, with the release's namespace), its CA as
// the caBundle; the image habring:<tag>.
func (e *env) values(t *testing.T, tag string) map[string]any {
	if e.caPEM == "" {
		_, err := e.client.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNS,
			Annotations: runner.NamespaceAnnotations()}}, metav1.CreateOptions{})
		require.NoError(t, err)
		ca, err := pki.NewCA("habring-ca", 60*24*time.Hour)
		require.NoError(t, err)
		crt, key, err := ca.Issue([]string{release + "." + releaseNS + ".svc"}, time.Now().Add(-time.Minute), 30*24*time.Hour)
		require.NoError(t, err)
		_, err = e.client.CoreV1().Secrets(releaseNS).Create(e.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "habring-tls"},
			Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}}, metav1.CreateOptions{})
		require.NoError(t, err)
		e.caPEM = string(ca.PEM)
	}
	return map[string]any{
		"image":       map[string]any{"repository": harness.LabelerImageRepo, "tag": tag},
		"certManager": map[string]any{"enabled": false},
		"tls":         map[string]any{"existingSecret": "habring-tls", "caBundle": e.caPEM},
		"extraArgs":   []any{"--log-level=debug"},
	}
}

// explainFailure logs the release namespace's pods and Events when a Helm action failed.
func (e *env) explainFailure(t *testing.T, err error, what string) {
	if err != nil {
		pods, _ := e.client.CoreV1().Pods(releaseNS).List(e.ctx, metav1.ListOptions{})
		for _, p := range pods.Items {
			t.Logf("pod %s on %q: %s %+v", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.Conditions)
		}
		evs, _ := e.client.CoreV1().Events(releaseNS).List(e.ctx, metav1.ListOptions{})
		for _, ev := range evs.Items {
			t.Logf("event %s %s: %s", ev.InvolvedObject.Name, ev.Reason, ev.Message)
		}
	}
	require.NoError(t, err, "%s (logs under %s)", what, e.dir)
}

// ring applies the example ring to namespace shop (opted in), with its secrets and the
// labeler's RoleBinding.
func (e *env) ring(t *testing.T) {
	_, err := e.client.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop",
		Labels: map[string]string{contract.LabelInject: contract.InjectEnabled}, Annotations: runner.NamespaceAnnotations()}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = harness.ExampleSecrets(e.ctx, e.client, "shop")
	require.NoError(t, err)
	for _, f := range []string{"examples/labeler-rolebinding.yaml", "examples/ring.yaml"} {
		require.NoError(t, harness.ApplyFile(e.ctx, e.c.Config, f, "shop"), f)
	}
}
