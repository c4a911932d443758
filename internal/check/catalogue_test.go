package check

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/test/pki"
)

// Every check is complete data: a unique ID under its category, what must be true, a
// severity, and a hint that renders with no installation, a kustomize one and a Helm one.
func TestCatalogue(t *testing.T) {
	seen := map[string]bool{}
	for _, cats := range [][]Category{catalogue, podChecks} {
		for _, cat := range cats {
			prefix := cat.Name
			if prefix == "habring-install" {
				prefix = "install"
			}
			for _, chk := range cat.Checks {
				require.False(t, seen[chk.ID], "ID %s twice", chk.ID)
				seen[chk.ID] = true
				require.True(t, strings.HasPrefix(chk.ID, prefix+"."), "%s under category %s", chk.ID, cat.Name)
				require.NotEmpty(t, chk.Description, chk.ID)
				require.Contains(t, []Severity{Error, Warning}, chk.Severity, chk.ID)
				require.NotNil(t, chk.run, chk.ID)
				for name, set := range map[string]map[string]string{
					"nothing installed": {},
					"kustomize":         {"Config": "habring", "ServiceNamespace": "habring-system"},
					"helm":              {"Config": "hooks", "Release": "hooks", "ReleaseNamespace": "platform", "ServiceNamespace": "platform"},
					"a read refused":    {"Config": "habring", "Verb": "list", "Resource": "pods", "Namespace": "shop"},
				} {
					vars := map[string]any{}
					for _, k := range hintKeys {
						vars[k] = set[k]
					}
					var b bytes.Buffer
					require.NoError(t, chk.hint.Execute(&b, vars), "%s with %s", chk.ID, name)
				}
			}
		}
	}
	var b bytes.Buffer
	require.NoError(t, WriteList(&b))
	require.Contains(t, b.String(), "install.endpoints                  error,retried          the webhook's Service has a ready endpoint\n")
	require.Len(t, strings.Split(strings.TrimSpace(b.String()), "\n"), len(seen))
}

// Hints name the installation found: its Helm release and namespace, or for deploy/'s
// kustomization the configuration itself.
func TestHintsNameTheRelease(t *testing.T) {
	ca, err := pki.NewCA("habring-ca", 24*time.Hour*365)
	require.NoError(t, err)
	addr := serve(t, ca, 90*24*time.Hour)
	ignore := func(helm bool) *Checker {
		w := installed(t, ca, addr)
		for _, o := range w.objs {
			if cfg, ok := o.(*admissionregistrationv1.MutatingWebhookConfiguration); ok {
				cfg.Webhooks[0].FailurePolicy = ptr.To(admissionregistrationv1.Ignore)
				if helm {
					cfg.Annotations = map[string]string{"meta.helm.sh/release-name": "habring", "meta.helm.sh/release-namespace": "platform"}
				}
			}
		}
		return w.checker(t)
	}
	out, r := run(t, ignore(true))
	require.Empty(t, failures(r))
	require.Contains(t, out, "✓ MutatingWebhookConfiguration habring has the webhook inject.habring.habitat.sh (Helm release habring in platform)\n")
	require.Contains(t, out, "‼ failurePolicy Ignore: a ring pod created while habring is unreachable starts a ring of its own (split brain)\n"+
		"    helm upgrade habring deploy/helm/habring -n platform --reuse-values --set webhook.failurePolicy=Fail\n")
	require.Contains(t, out, "Status check results are ✓ (1 warnings)")
	out, _ = run(t, ignore(false))
	require.Contains(t, out, `    kubectl patch mutatingwebhookconfiguration habring --type=json -p '[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Fail"}]'`+"\n")
}

// -o json has a stable schema: these names, these values.
func TestJSONSchema(t *testing.T) {
	r := &Report{Results: []Result{
		{Category: "habring-install", Section: "habring-install", ID: "install.webhook-configuration", Description: "d1", Status: Pass, Message: "m1"},
		{Category: "ring", Section: "ring shop/main", ID: "ring.one-leader", Description: "d2", Status: Fail, Message: "m2", Hint: "h2"},
		{Category: "ring", Section: "ring shop/main", ID: "ring.leader-labelled", Description: "d3", Status: Warn, Message: "m3", Hint: "h3"},
	}}
	var b bytes.Buffer
	require.NoError(t, r.WriteJSON(&b))
	require.JSONEq(t, `{"schemaVersion":"check.habring.habitat.sh/v1","success":false,"failed":1,"warnings":1,"sections":[
		{"name":"habring-install","category":"habring-install","results":[{"id":"install.webhook-configuration","description":"d1","result":"pass","message":"m1"}]},
		{"name":"ring shop/main","category":"ring","results":[
			{"id":"ring.one-leader","description":"d2","result":"fail","message":"m2","hint":"h2"},
			{"id":"ring.leader-labelled","description":"d3","result":"warn","message":"m3","hint":"h3"}]}]}`, b.String())

	// A real run: the same shape, every finding under the check that made it.
	ca, err := pki.NewCA("habring-ca", 24*time.Hour*365)
	require.NoError(t, err)
	_, rep := run(t, installed(t, ca, serve(t, ca, 48*time.Hour)).checker(t))
	b.Reset()
	require.NoError(t, rep.WriteJSON(&b))
	var got JSONReport
	require.NoError(t, json.Unmarshal(b.Bytes(), &got))
	require.False(t, got.Success)
	require.Equal(t, 1, got.Failed)
	ids := map[string]Status{}
	for _, s := range got.Sections {
		for _, c := range s.Results {
			ids[c.ID] = c.Result
		}
	}
	require.Equal(t, Fail, ids["install.certificate-validity"])
	require.Equal(t, Pass, ids["namespace.labeler-rolebinding"])
}

// --wait asks a retried check again, on fresh reads, until it passes: here the webhook's
// endpoint becomes ready on the third list.
func TestWaitRetries(t *testing.T) {
	ca, err := pki.NewCA("habring-ca", 24*time.Hour*365)
	require.NoError(t, err)
	c := installed(t, ca, serve(t, ca, 90*24*time.Hour)).checker(t)
	var lists atomic.Int32
	c.Clients.Kube.(*fake.Clientset).PrependReactor("list", "endpointslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() != "habring-system" || lists.Add(1) > 2 {
			return false, nil, nil
		}
		return true, &discoveryv1.EndpointSliceList{}, nil
	})
	var progress bytes.Buffer
	c.Progress, c.Config.Wait, c.retryEvery = &progress, time.Minute, 10*time.Millisecond
	out, r := run(t, c)
	require.Empty(t, failures(r))
	require.Contains(t, out, "✓ Service habring-system/habring has 1 ready endpoints")
	require.Equal(t, int32(3), lists.Load())
	// Said once: the message did not change between the tries.
	require.Equal(t, "waiting for install.endpoints (until "+c.deadline.Format(time.TimeOnly)+
		"): Service habring-system/habring has no ready endpoint on port 443: pod creations the webhook selects fail until one is ready\n", progress.String())

	// Without --wait it is asked once and fails, with the pods to look at.
	lists.Store(0)
	c = installed(t, ca, serve(t, ca, 90*24*time.Hour)).checker(t)
	c.Clients.Kube.(*fake.Clientset).PrependReactor("list", "endpointslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return a.GetNamespace() == "habring-system", &discoveryv1.EndpointSliceList{}, nil
	})
	out, _ = run(t, c)
	require.Contains(t, out, "× Service habring-system/habring has no ready endpoint on port 443")
	require.Contains(t, out, "    kubectl -n habring-system get pods -l app.kubernetes.io/name=habring; kubectl -n habring-system describe pods -l app.kubernetes.io/name=habring\n")
}

// An API server that does not answer fails the first check and stops the run there.
func TestAPIDown(t *testing.T) {
	c := (&world{}).checker(t)
	c.Clients.Kube.(*fake.Clientset).PrependReactor("get", "version", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("dial tcp 127.0.0.1:6443: connect: connection refused")
	})
	out, r := run(t, c)
	require.Len(t, r.Results, 1)
	require.Equal(t, "kubernetes-api.reachable", r.Stopped)
	require.Contains(t, out, "× the Kubernetes API at https://test does not answer: dial tcp 127.0.0.1:6443: connect: connection refused\n"+
		"    kubectl cluster-info   (is the API server up")
	require.Contains(t, out, "checks after kubernetes-api.reachable not run")
}

// A namespace of many pods not injected costs the same reads as one: each list is made
// once, nothing is read per pod.
func TestReadsPerRun(t *testing.T) {
	ca, err := pki.NewCA("habring-ca", 24*time.Hour*365)
	require.NoError(t, err)
	w := installed(t, ca, serve(t, ca, 90*24*time.Hour))
	for i := 3; i < 40; i++ {
		w.objs = append(w.objs, ringPod(i, "", false))
	}
	c := w.checker(t)
	_, r := run(t, c)
	require.Len(t, failures(r), 37, "every pod not injected fails")
	reads := map[string]int{}
	for _, a := range c.Clients.Kube.(*fake.Clientset).Actions() {
		reads[a.GetVerb()+" "+a.GetResource().Resource]++
	}
	t.Log(reads)
	for read, n := range reads {
		if read == "watch pods" || read == "list pods" || read == "get services" {
			// pods: the namespace's list, the webhook's cache and its own pod list; services:
			// the endpoint check and the webhook's options.
			require.LessOrEqual(t, n, 3, read)
			continue
		}
		require.LessOrEqual(t, n, 2, "%s: %d times for 40 pods", read, n)
	}
}

// A namespaces list the API server refuses fails the run (it is not a warning), and
// stops it there; --namespace naming none fails too.
func TestNamespacesUnreadable(t *testing.T) {
	ca, err := pki.NewCA("habring-ca", 24*time.Hour*365)
	require.NoError(t, err)
	c := installed(t, ca, serve(t, ca, 90*24*time.Hour)).checker(t)
	c.Clients.Kube.(*fake.Clientset).PrependReactor("list", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New(`namespaces is forbidden: User "dev" cannot list resource "namespaces"`)
	})
	out, r := run(t, c)
	require.Equal(t, 1, r.Failed())
	require.Equal(t, "namespaces.readable", r.Stopped)
	require.Contains(t, out, "    kubectl auth can-i list namespaces   (habring check needs to read it)\n")

	c = installed(t, ca, serve(t, ca, 90*24*time.Hour)).checker(t)
	c.Config.Namespace = "nope"
	out, r = run(t, c)
	require.Equal(t, []string{"namespace nope does not exist"}, failures(r))
	require.Contains(t, out, "    kubectl get namespaces\n")
}

// --wait re-reads the webhook configuration; a re-read that fails leaves the checks the
// installation they started on (no nil installation), and a cancelled run says so.
func TestWaitRereadFails(t *testing.T) {
	ca, err := pki.NewCA("habring-ca", 24*time.Hour*365)
	require.NoError(t, err)
	c := installed(t, ca, serve(t, ca, 90*24*time.Hour)).checker(t)
	var mwcLists, epLists atomic.Int32
	kube := c.Clients.Kube.(*fake.Clientset)
	kube.PrependReactor("list", "mutatingwebhookconfigurations", func(k8stesting.Action) (bool, runtime.Object, error) {
		if mwcLists.Add(1) > 1 {
			return true, nil, errors.New("etcdserver: request timed out")
		}
		return false, nil, nil
	})
	kube.PrependReactor("list", "endpointslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return a.GetNamespace() == "habring-system" && epLists.Add(1) <= 2, &discoveryv1.EndpointSliceList{}, nil
	})
	c.Config.Wait, c.retryEvery = time.Minute, 10*time.Millisecond
	_, r := run(t, c)
	require.Empty(t, failures(r))
	require.Greater(t, mwcLists.Load(), int32(1), "read again for the retries")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r = c.Check(ctx)
	require.True(t, r.Interrupted)
	require.Empty(t, r.Results)
}
