package helm

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/habring/habring/test/cluster"
	"github.com/habring/habring/test/harness"
)

var chartDir = filepath.Join(harness.RepoRoot(), "deploy", "helm", "habring")

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.LoadDir(chartDir)
	require.NoError(t, err)
	return c
}

// render is `helm template <release> deploy/helm/habring -n <ns> --set ...`: the
// objects the chart makes, in order, or the error helm reports.
func render(t *testing.T, release, ns string, vals map[string]any) ([]*unstructured.Unstructured, error) {
	t.Helper()
	cfg := action.NewConfiguration()
	cfg.Releases = storage.Init(driver.NewMemory())
	in := action.NewInstall(cfg)
	in.DryRunStrategy = action.DryRunClient
	in.ReleaseName, in.Namespace, in.Replace = release, ns, true
	kv, err := common.ParseKubeVersion(cluster.KubernetesVersion) // helm template's default is v1.20
	require.NoError(t, err)
	in.KubeVersion = kv
	rel, err := in.Run(loadChart(t), vals)
	if err != nil {
		return nil, err
	}
	r, ok := rel.(*releasev1.Release)
	require.True(t, ok, "release type %T", rel)
	return objects(t, []byte(r.Manifest)), nil
}

func objects(t *testing.T, manifest []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, doc := range harness.SplitYAML(manifest) {
		j, err := yaml.YAMLToJSON(doc)
		require.NoError(t, err, string(doc))
		if string(j) == "null" {
			continue
		}
		u := &unstructured.Unstructured{}
		require.NoError(t, u.UnmarshalJSON(j), string(doc)) // numbers as int64, as the API server's
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
	return out
}

func key(u *unstructured.Unstructured) string {
	return u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
}

func byKey(objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	m := map[string]*unstructured.Unstructured{}
	for _, u := range objs {
		m[key(u)] = u
	}
	return m
}

// helmOnly are the labels Helm charts add for their own bookkeeping; kustomize's output
// has none of them.
var helmOnly = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// withoutHelmLabels deletes helmOnly keys from every map in v (labels, selectors,
// matchLabels alike), and the top-level metadata.labels, compared separately.
func withoutHelmLabels(u *unstructured.Unstructured) map[string]any {
	c := u.DeepCopy().Object
	unstructured.RemoveNestedField(c, "metadata", "labels")
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, k := range helmOnly {
				delete(v, k)
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(c)
	return c
}

// With default values the chart makes exactly the objects of `kubectl kustomize deploy/`
// (but the Namespace, which `helm install --create-namespace` makes): the same kinds and
// names, and each the same field for field once Helm's bookkeeping labels are set
// aside; every label kustomize sets is on the chart's object too.
func TestChartDefaultsAreDeploy(t *testing.T) {
	want, err := harness.Kustomize("deploy")
	require.NoError(t, err)
	kustomized := byKey(objects(t, want))
	for k, u := range kustomized {
		if u.GetKind() == "Namespace" {
			delete(kustomized, k)
		}
	}
	objs, err := render(t, "habring", "habring-system", nil)
	require.NoError(t, err)
	charted := byKey(objs)
	require.ElementsMatch(t, slices.Collect(maps.Keys(kustomized)), slices.Collect(maps.Keys(charted)))
	for k, kz := range kustomized {
		ch := charted[k]
		assert.Equal(t, withoutHelmLabels(kz), withoutHelmLabels(ch), k)
		for l, v := range kz.GetLabels() {
			assert.Equal(t, v, ch.GetLabels()[l], "%s: label %s", k, l)
		}
	}
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	require.Failf(t, "missing object", "%s %s in %v", kind, name, keys(objs))
	return nil
}

func keys(objs []*unstructured.Unstructured) []string {
	var ks []string
	for _, u := range objs {
		ks = append(ks, key(u))
	}
	return ks
}

func webhookContainer(t *testing.T, objs []*unstructured.Unstructured, name string) map[string]any {
	t.Helper()
	cs, _, err := unstructured.NestedSlice(find(t, objs, "Deployment", name).Object, "spec", "template", "spec", "containers")
	require.NoError(t, err)
	return cs[0].(map[string]any)
}

func args(c map[string]any) []string {
	var out []string
	for _, a := range c["args"].([]any) {
		out = append(out, a.(string))
	}
	return out
}

func TestChartValues(t *testing.T) {
	t.Run("one image value drives the webhook and the labeler it injects", func(t *testing.T) {
		objs, err := render(t, "habring", "habring-system", map[string]any{
			"image": map[string]any{"repository": "registry.example/habring", "digest": "sha256:" + strings.Repeat("a", 64)},
		})
		require.NoError(t, err)
		c := webhookContainer(t, objs, "habring")
		ref := "registry.example/habring@sha256:" + strings.Repeat("a", 64)
		assert.Equal(t, ref, c["image"])
		assert.Contains(t, args(c), "--labeler-image="+ref)
	})
	t.Run("another release name and namespace rename everything it makes", func(t *testing.T) {
		objs, err := render(t, "ops", "ops-system", map[string]any{"replicaCount": 1, "extraArgs": []any{"--max-peers=16"}})
		require.NoError(t, err)
		for _, u := range objs {
			assert.True(t, strings.HasPrefix(u.GetName(), "ops-habring"), key(u))
			if u.GetNamespace() != "" {
				assert.Equal(t, "ops-system", u.GetNamespace(), key(u))
			}
		}
		assert.NotContains(t, keys(objs), "PodDisruptionBudget/ops-system/ops-habring", "one replica: a PDB would block every drain")
		assert.Contains(t, args(webhookContainer(t, objs, "ops-habring")), "--max-peers=16")
		wh := find(t, objs, "MutatingWebhookConfiguration", "ops-habring")
		hooks, _, _ := unstructured.NestedSlice(wh.Object, "webhooks")
		cc := hooks[0].(map[string]any)["clientConfig"].(map[string]any)["service"].(map[string]any)
		assert.Equal(t, map[string]any{"name": "ops-habring", "namespace": "ops-system", "path": "/mutate", "port": int64(443)}, cc)
		assert.Equal(t, "ops-system/ops-habring-serving", wh.GetAnnotations()["cert-manager.io/inject-ca-from"])
	})
	t.Run("failurePolicy, timeout and the namespace selector as given", func(t *testing.T) {
		sel := map[string]any{"matchLabels": map[string]any{"team": "ring"}}
		objs, err := render(t, "habring", "habring-system", map[string]any{
			"webhook": map[string]any{"failurePolicy": "Ignore", "timeoutSeconds": 4, "namespaceSelector": sel},
		})
		require.NoError(t, err)
		hooks, _, _ := unstructured.NestedSlice(find(t, objs, "MutatingWebhookConfiguration", "habring").Object, "webhooks")
		h := hooks[0].(map[string]any)
		assert.Equal(t, "Ignore", h["failurePolicy"])
		assert.Equal(t, int64(4), h["timeoutSeconds"])
		assert.Equal(t, map[string]any{"matchLabels": map[string]any{"team": "ring"}, "matchExpressions": []any{
			map[string]any{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": []any{"habring-system", "kube-system"}},
		}}, h["namespaceSelector"])
		assert.Contains(t, args(webhookContainer(t, objs, "habring")), "--request-timeout=2s")
		b, _, _ := unstructured.NestedMap(find(t, objs, "ValidatingAdmissionPolicyBinding", "habring-labeler-own-role-only").Object, "spec", "matchResources", "namespaceSelector")
		assert.Equal(t, sel, b)
		_, err = render(t, "habring", "habring-system", map[string]any{"webhook": map[string]any{"failurePolicy": "Never"}})
		require.ErrorContains(t, err, `webhook.failurePolicy "Never": want Fail or Ignore`)
	})
	t.Run("without cert-manager: a provided Secret and caBundle, no Issuer or Certificate", func(t *testing.T) {
		_, err := render(t, "habring", "habring-system", map[string]any{"certManager": map[string]any{"enabled": false}})
		require.ErrorContains(t, err, "tls.existingSecret")
		_, err = render(t, "habring", "habring-system", map[string]any{"certManager": map[string]any{"enabled": false},
			"tls": map[string]any{"existingSecret": "mine"}})
		require.ErrorContains(t, err, "tls.caBundle")
		objs, err := render(t, "habring", "habring-system", map[string]any{"certManager": map[string]any{"enabled": false},
			"tls": map[string]any{"existingSecret": "mine", "caBundle": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}})
		require.NoError(t, err)
		for _, u := range objs {
			assert.NotEqual(t, "cert-manager.io/v1", u.GetAPIVersion(), key(u))
		}
		wh := find(t, objs, "MutatingWebhookConfiguration", "habring")
		assert.Empty(t, wh.GetAnnotations())
		hooks, _, _ := unstructured.NestedSlice(wh.Object, "webhooks")
		assert.Equal(t, "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=",
			hooks[0].(map[string]any)["clientConfig"].(map[string]any)["caBundle"])
		vols, _, _ := unstructured.NestedSlice(find(t, objs, "Deployment", "habring").Object, "spec", "template", "spec", "volumes")
		assert.Equal(t, "mine", vols[0].(map[string]any)["secret"].(map[string]any)["secretName"])
	})
	t.Run("a ServiceMonitor on request", func(t *testing.T) {
		objs, err := render(t, "habring", "habring-system", nil)
		require.NoError(t, err)
		assert.NotContains(t, fmt.Sprint(keys(objs)), "ServiceMonitor")
		objs, err = render(t, "habring", "habring-system", map[string]any{"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}}})
		require.NoError(t, err)
		sm := find(t, objs, "ServiceMonitor", "habring")
		assert.Equal(t, "prom", sm.GetLabels()["release"])
		eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		assert.Equal(t, "https", eps[0].(map[string]any)["scheme"])
	})
	t.Run("alerts, the labelers' PodMonitor and a dashboard on request", func(t *testing.T) {
		objs, err := render(t, "habring", "habring-system", nil)
		require.NoError(t, err)
		for _, kind := range []string{"PrometheusRule", "PodMonitor", "ConfigMap"} {
			assert.NotContains(t, fmt.Sprint(keys(objs)), kind, "off by default")
		}
		objs, err = render(t, "habring", "habring-system", map[string]any{
			"prometheusRule":   map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}},
			"podMonitor":       map[string]any{"enabled": true},
			"grafanaDashboard": map[string]any{"enabled": true, "namespace": "monitoring"},
		})
		require.NoError(t, err)

		rule := find(t, objs, "PrometheusRule", "habring")
		assert.Equal(t, "prom", rule.GetLabels()["release"])
		spec, _, _ := unstructured.NestedMap(rule.Object, "spec")
		require.NoError(t, harness.CheckRules(t.TempDir(), spec), "Prometheus's own parser takes the rules")
		file, err := os.ReadFile(harness.RulesFile())
		require.NoError(t, err)
		var groups map[string]any
		require.NoError(t, yaml.Unmarshal(file, &groups))
		assert.Equal(t, groups["groups"], spec["groups"], "the PrometheusRule is files/prometheus-rules.yaml")

		pm := find(t, objs, "PodMonitor", "habring-labelers")
		eps, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
		ep := eps[0].(map[string]any)
		assert.Equal(t, "habring-health", ep["port"], "the labeler container's port (internal/patch/sidecar.go)")
		assert.Equal(t, []any{map[string]any{"sourceLabels": []any{"__meta_kubernetes_pod_label_habitat_sh_ring"}, "targetLabel": "ring"}},
			ep["relabelings"], "the alerts group by ring")

		cm := find(t, objs, "ConfigMap", "habring-dashboard")
		assert.Equal(t, "monitoring", cm.GetNamespace())
		assert.Equal(t, "1", cm.GetLabels()["grafana_dashboard"])
		raw, _, _ := unstructured.NestedString(cm.Object, "data", "habring.json")
		var dash struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		require.NoError(t, json.Unmarshal([]byte(raw), &dash))
		// Each panel's query, its Grafana variables set, parses as PromQL: as recording rules.
		vars := strings.NewReplacer("$namespace", ".*", "$__rate_interval", "5m")
		var rules []any
		for _, p := range dash.Panels {
			for _, tg := range p.Targets {
				rules = append(rules, map[string]any{"record": fmt.Sprintf("dashboard:panel_%d", len(rules)), "expr": vars.Replace(tg.Expr)})
			}
		}
		require.NotEmpty(t, rules)
		require.NoError(t, harness.CheckRules(t.TempDir(), map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}}))

		// Every habring metric the alerts and the dashboard read is one the code exports.
		exported := map[string]bool{}
		for _, dir := range []string{"webhook", "labeler", "ring", "certs", "connlimit"} {
			dir = filepath.Join("internal", dir)
			files, err := filepath.Glob(filepath.Join(harness.RepoRoot(), dir, "*.go"))
			require.NoError(t, err)
			for _, f := range files {
				b, err := os.ReadFile(f)
				require.NoError(t, err)
				for _, m := range regexp.MustCompile(`"(habring_[a-z_]+)"`).FindAllSubmatch(b, -1) {
					exported[string(m[1])] = true
				}
			}
		}
		used := regexp.MustCompile(`habring_[a-z_]+`).FindAllString(string(file)+raw, -1)
		require.NotEmpty(t, used)
		for _, m := range used {
			name := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum") // a histogram's series
			assert.True(t, exported[name], "%s is read by the alerts or the dashboard but exported by no code", m)
		}
	})
}

func TestChartLints(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"defaults": nil,
		"no cert-manager": {"certManager": map[string]any{"enabled": false},
			"tls": map[string]any{"existingSecret": "mine", "caBundle": "pem"}},
		"alerts, monitors and the dashboard": {"serviceMonitor": map[string]any{"enabled": true}, "podMonitor": map[string]any{"enabled": true},
			"prometheusRule": map[string]any{"enabled": true}, "grafanaDashboard": map[string]any{"enabled": true}},
	} {
		t.Run(name, func(t *testing.T) {
			l := action.NewLint()
			l.Strict = true
			res := l.Run([]string{chartDir}, vals)
			for _, m := range res.Messages {
				t.Log(m)
			}
			require.Empty(t, res.Errors)
			require.False(t, action.HasWarningsOrErrors(res), "helm lint --strict: %v", res.Messages)
		})
	}
}
