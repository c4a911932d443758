package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	jsonpatch5 "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/patch"
	"github.com/habring/habring/internal/ring"
)

const ns = "shop"

func ringSTS(name string, replicas int32) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{contract.AnnotationRing: "main", contract.AnnotationTopology: "leader"}},
		Spec:       appsv1.StatefulSetSpec{ServiceName: name, Replicas: ptr.To(replicas)},
	}
}

func deploymentMeta(name string, ann map[string]string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann},
	}
}

func readySlice(name string, eps map[string]string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{contract.LabelRing: "main"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for pod, ip := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: pod, Namespace: ns}})
	}
	return s
}

func stsPod(sts string, ordinal int) *corev1.Pod {
	name := sts + "-" + string(rune('0'+ordinal))
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"apps.kubernetes.io/pod-index": string(rune('0' + ordinal))},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: sts, Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sup", Image: "habitat/redis"}}},
	}
}

func deploymentPod(deploy string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: deploy + "-abc-", Namespace: ns, Labels: map[string]string{"pod-template-hash": "abc"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: deploy + "-abc", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "habitat/app"}}},
	}
}

type fixture struct {
	client  *fake.Clientset
	cluster *ring.Cache
	handler *Handler
	metrics *Metrics
	router  http.Handler
}

// newFixture runs a real Cluster (informers, indexers, fallbacks) on fake clientsets.
// cached objects are in the informers' initial lists; the rest only answer GETs.
func newFixture(t testing.TB, objs []runtime.Object, deployments ...*metav1.PartialObjectMetadata) *fixture {
	t.Helper()
	return newFixtureWith(t, nil, objs, deployments...)
}

// newFixtureWith lets setup add reactors before the informers start.
func newFixtureWith(t testing.TB, setup func(*fake.Clientset), objs []runtime.Object, deployments ...*metav1.PartialObjectMetadata) *fixture {
	t.Helper()
	client := fake.NewClientset(objs...)
	if setup != nil {
		setup(client)
	}
	scheme := metadatafake.NewTestScheme()
	require.NoError(t, metav1.AddMetaToScheme(scheme))
	mobjs := make([]runtime.Object, 0, len(deployments))
	for _, d := range deployments {
		mobjs = append(mobjs, d)
	}
	meta := metadatafake.NewSimpleMetadataClient(scheme, mobjs...)
	m := NewMetrics()
	c, err := ring.NewCache(client, meta)
	require.NoError(t, err)
	c.OnLookup = m.ownerLookup
	c.Start(t.Context())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.True(t, c.WaitForSync(ctx))
	log := slog.New(slog.DiscardHandler)
	h := &Handler{Source: c, Metrics: m, Log: log, Timeout: time.Second,
		Injector: patch.NewInjector(patch.Options{LabelerImage: "habring:test", NativeSidecar: true})}
	return &fixture{client: client, cluster: c, handler: h, metrics: m, router: NewRouter(h, func() error { return nil }, m, log)}
}

func reviewBody(t testing.TB, op admissionv1.Operation, obj any, mod func(*admissionv1.AdmissionRequest)) []byte {
	raw, err := json.Marshal(obj)
	require.NoError(t, err)
	req := &admissionv1.AdmissionRequest{UID: types.UID("uid-1"), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource: podResource, Namespace: ns, Operation: op, Object: runtime.RawExtension{Raw: raw}}
	if mod != nil {
		mod(req)
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: req})
	require.NoError(t, err)
	return b
}

func post(t testing.TB, h http.Handler, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func responseOf(t *testing.T, w *httptest.ResponseRecorder) *admissionv1.AdmissionResponse {
	t.Helper()
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	// Its length is said, so a large patch is not sent chunked.
	require.Equal(t, strconv.Itoa(w.Body.Len()), w.Header().Get("Content-Length"))
	var out admissionv1.AdmissionReview
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &out))
	require.Equal(t, "admission.k8s.io/v1", out.APIVersion)
	require.Equal(t, "AdmissionReview", out.Kind)
	require.NotNil(t, out.Response)
	require.Equal(t, types.UID("uid-1"), out.Response.UID)
	return out.Response
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	valid := reviewBody(t, admissionv1.Create, stsPod("db", 0), nil)
	tests := map[string]struct {
		method, contentType string
		body                []byte
		want                string
	}{
		"GET":        {method: http.MethodGet, contentType: "application/json", body: valid, want: "method GET not allowed; the API server POSTs AdmissionReviews\n"},
		"wrong type": {contentType: "text/plain", body: valid, want: "content type \"text/plain\" not supported; want application/json\n"},
		"no type":    {body: valid, want: "content type \"\" not supported; want application/json\n"},
		"empty body": {contentType: "application/json", want: "empty body; want an AdmissionReview\n"},
		"too big":    {contentType: "application/json", body: bytes.Repeat([]byte(" "), MaxRequestBytes+1), want: "body larger than 7340032 bytes\n"},
		"not JSON":   {contentType: "application/json", body: []byte("{nope"), want: "body is not an AdmissionReview: invalid character 'n' looking for beginning of object key string\n"},
		"JSON, not a review": {contentType: "application/json", body: []byte(`{"kind":"Pod","apiVersion":"v1"}`),
			want: "got apiVersion \"v1\" kind \"Pod\"; want admission.k8s.io/v1 AdmissionReview (set admissionReviewVersions: [v1])\n"},
		"v1beta1": {contentType: "application/json", body: []byte(`{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"x"}}`),
			want: "got apiVersion \"admission.k8s.io/v1beta1\" kind \"AdmissionReview\"; want admission.k8s.io/v1 AdmissionReview (set admissionReviewVersions: [v1])\n"},
		"no request": {contentType: "application/json", body: []byte(`{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}`), want: "AdmissionReview has no request\n"},
		"no uid":     {contentType: "application/json", body: []byte(`{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{}}`), want: "AdmissionReview request has no uid\n"},
	}
	t.Run("each", func(t *testing.T) {
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				method := tc.method
				if method == "" {
					method = http.MethodPost
				}
				r := httptest.NewRequest(method, "/mutate", bytes.NewReader(tc.body))
				if tc.contentType != "" {
					r.Header.Set("Content-Type", tc.contentType)
				}
				w := httptest.NewRecorder()
				f.router.ServeHTTP(w, r)
				require.Equal(t, http.StatusBadRequest, w.Code)
				require.Equal(t, tc.want, w.Body.String())
			})
		}
	})
	require.InDelta(t, float64(len(tests)), testutil.ToFloat64(f.metrics.Requests.WithLabelValues(OutcomeErrored, "bad-request")), 0)
}

// DecodeReview's errors keep their cause: callers tell a body that was too big or not JSON
// by type, never by text.
func TestDecodeReviewKeepsTheCause(t *testing.T) {
	t.Parallel()
	decode := func(body []byte) error {
		r := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		_, err := DecodeReview(httptest.NewRecorder(), r)
		var bad *BadRequestError
		require.ErrorAs(t, err, &bad)
		return err
	}
	var tooBig *http.MaxBytesError
	require.ErrorAs(t, decode(bytes.Repeat([]byte(" "), MaxRequestBytes+1)), &tooBig)
	require.Equal(t, int64(MaxRequestBytes), tooBig.Limit)
	// sigs.k8s.io/json's decoder (the API server's) has its own error types: the cause is
	// kept as it returned it.
	require.EqualError(t, errors.Unwrap(decode([]byte("{nope"))), "invalid character 'n' looking for beginning of object key string")
	require.EqualError(t, decode([]byte(`{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}`)), "AdmissionReview has no request")
}

func TestReview(t *testing.T) {
	t.Parallel()
	f := newFixture(t, []runtime.Object{ringSTS("db", 3), readySlice("db-x", map[string]string{"db-0": "10.0.0.10", "db-1": "10.0.0.11"})},
		deploymentMeta("web", map[string]string{contract.AnnotationRing: "main"}),
		deploymentMeta("lonely", map[string]string{contract.AnnotationRing: "empty"}),
		deploymentMeta("bad", map[string]string{contract.AnnotationRing: "main", contract.AnnotationTopology: "chaos"}))

	t.Run("statefulset pod injected", func(t *testing.T) {
		t.Parallel()
		pod := stsPod("db", 2)
		resp := responseOf(t, post(t, f.router, reviewBody(t, admissionv1.Create, pod, nil)))
		require.True(t, resp.Allowed)
		require.Equal(t, admissionv1.PatchTypeJSONPatch, *resp.PatchType)
		got := applyPatch(t, pod, resp.Patch)
		require.Equal(t, "10.0.0.10,10.0.0.11", got.Annotations[contract.AnnotationPeers])
		require.Contains(t, got.Spec.Containers[0].Args, "--peer=10.0.0.10")
		require.Equal(t, contract.LabelerContainerName, got.Spec.InitContainers[0].Name)
	})
	t.Run("dry run answers exactly like a real request", func(t *testing.T) {
		t.Parallel()
		pod := stsPod("db", 1)
		real := post(t, f.router, reviewBody(t, admissionv1.Create, pod, nil))
		dry := post(t, f.router, reviewBody(t, admissionv1.Create, pod, func(r *admissionv1.AdmissionRequest) { r.DryRun = ptr.To(true) }))
		require.Equal(t, real.Body.String(), dry.Body.String())
	})
	t.Run("deployment pod gets live peers", func(t *testing.T) {
		t.Parallel()
		pod := deploymentPod("web")
		resp := responseOf(t, post(t, f.router, reviewBody(t, admissionv1.Create, pod, nil)))
		require.True(t, resp.Allowed)
		require.Equal(t, []string{"--peer=10.0.0.10", "--peer=10.0.0.11", "--listen-gossip=0.0.0.0:9638", "--sys-ip-address=$(HABRING_POD_IP)"},
			applyPatch(t, pod, resp.Patch).Spec.Containers[0].Args)
	})
	denials := map[string]struct {
		body    []byte
		code    int32
		message string
	}{
		"deployment with no ring": {body: reviewBody(t, admissionv1.Create, deploymentPod("lonely"), nil), code: 403,
			message: `ring "empty" in namespace "shop" has no live member and no bootstrap StatefulSet`},
		"invalid annotation": {body: reviewBody(t, admissionv1.Create, deploymentPod("bad"), nil), code: 400,
			message: `annotation habitat.sh/topology: "chaos" is not allowed; want one of standalone, leader`},
		"owner gone": {body: reviewBody(t, admissionv1.Create, stsPod("gone", 0), nil), code: 404,
			message: `StatefulSet shop/gone: owner not found: statefulsets.apps "gone" not found`},
		"not a pod": {body: reviewBody(t, admissionv1.Create, stsPod("db", 0), func(r *admissionv1.AdmissionRequest) {
			r.Resource = metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
		}), code: 400, message: "habring mutates pods only, but was sent apps/v1 deployments; fix the webhook configuration's rules"},
		"pod subresource": {body: reviewBody(t, admissionv1.Create, stsPod("db", 0), func(r *admissionv1.AdmissionRequest) {
			r.SubResource = "status"
		}), code: 400, message: "habring mutates pods only, but was sent v1 pods/status; fix the webhook configuration's rules"},
		"pod with no containers": {body: reviewBody(t, admissionv1.Create, func() *corev1.Pod { p := stsPod("db", 1); p.Spec.Containers = nil; return p }(), nil),
			code: 400, message: "pod has no containers to run the Supervisor in; give the workload's pod template a container running the Habitat Supervisor"},
		"object not a pod": {body: reviewBody(t, admissionv1.Create, map[string]any{"spec": "nope"}, nil), code: 400,
			message: "request object is not a Pod: json: cannot unmarshal string into Go struct field Pod.spec of type v1.PodSpec"},
	}
	for name, tc := range denials {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			resp := responseOf(t, post(t, f.router, tc.body))
			require.False(t, resp.Allowed)
			require.Nil(t, resp.Patch)
			require.Equal(t, tc.code, resp.Result.Code)
			require.True(t, strings.HasPrefix(resp.Result.Message, tc.message), resp.Result.Message)
		})
	}
	t.Run("update is left alone", func(t *testing.T) {
		t.Parallel()
		resp := responseOf(t, post(t, f.router, reviewBody(t, admissionv1.Update, stsPod("db", 0), nil)))
		require.True(t, resp.Allowed)
		require.Nil(t, resp.Patch)
	})
}

func TestOwnerCacheMissFallsBackToGET(t *testing.T) {
	t.Parallel()
	// The informer lists and watches nothing, as if the StatefulSet had been created a
	// moment ago and its watch event were still on the way: only a GET finds it.
	f := newFixtureWith(t, func(c *fake.Clientset) {
		c.PrependReactor("list", "statefulsets", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, &appsv1.StatefulSetList{}, nil
		})
		c.PrependWatchReactor("statefulsets", func(k8stesting.Action) (bool, watch.Interface, error) { return true, watch.NewFake(), nil })
	}, nil)
	require.NoError(t, f.client.Tracker().Add(ringSTS("late", 1)))
	resp := responseOf(t, post(t, f.router, reviewBody(t, admissionv1.Create, stsPod("late", 0), nil)))
	require.True(t, resp.Allowed)
	require.NotNil(t, resp.Patch)
	require.InDelta(t, 1, testutil.ToFloat64(f.metrics.OwnerLookups.WithLabelValues("StatefulSet", "api")), 0)
}

func TestAPIServerErrorIsNotAnAdmission(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.client.PrependReactor("get", "statefulsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	resp := responseOf(t, post(t, f.router, reviewBody(t, admissionv1.Create, stsPod("db", 0), nil)))
	require.False(t, resp.Allowed)
	require.Equal(t, int32(500), resp.Result.Code)
	require.Equal(t, "habring could not decide: StatefulSet shop/db: connection refused", resp.Result.Message)
}

type panicSource struct{}

func (panicSource) Workload(context.Context, string, patch.Owner, *corev1.Pod) (patch.Workload, error) {
	panic("boom")
}
func (panicSource) Ring(context.Context, string, string) (contract.Ring, error) { panic("boom") }

func TestPanicIsRecoveredAndCounted(t *testing.T) {
	t.Parallel()
	m := NewMetrics()
	h := &Handler{Source: panicSource{}, Injector: patch.NewInjector(patch.Options{}), Metrics: m, Log: slog.New(slog.DiscardHandler)}
	router := NewRouter(h, func() error { return nil }, m, slog.New(slog.DiscardHandler))
	w := post(t, router, reviewBody(t, admissionv1.Create, stsPod("db", 0), nil))
	require.Equal(t, http.StatusInternalServerError, w.Code)
	require.Equal(t, "internal error\n", w.Body.String())
	require.InDelta(t, 1, testutil.ToFloat64(m.Panics), 0)
}

func TestHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	m := NewMetrics()
	readyErr := errors.New("caches not synced yet")
	router := NewRouter(http.NotFoundHandler(), func() error { return readyErr }, m, slog.New(slog.DiscardHandler))
	get := func(path string) (int, string) {
		w := httptest.NewRecorder()
		router.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		b, _ := io.ReadAll(w.Body)
		return w.Code, string(b)
	}
	code, body := get("/healthz")
	require.Equal(t, 200, code)
	require.Equal(t, "ok\n", body)
	code, body = get("/readyz")
	require.Equal(t, 503, code)
	require.Equal(t, "caches not synced yet\n", body)
	readyErr = nil
	code, _ = get("/readyz")
	require.Equal(t, 200, code)
	code, body = get("/metrics")
	require.Equal(t, 200, code)
	require.Contains(t, body, "habring_panics_total 0")
	require.Contains(t, body, "habring_cache_synced 0")
}

func TestCertReady(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	require.ErrorContains(t, certReady(nil, now), "no serving certificate")
	leaf := &x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	require.NoError(t, certReady(leaf, now))
	require.EqualError(t, certReady(leaf, now.Add(2*time.Hour)), "serving certificate expired at 2026-11-23T01:00:00Z; check the cert-manager Certificate and its Issuer")
	require.ErrorContains(t, certReady(leaf, now.Add(-2*time.Hour)), "not valid before")
}

func applyPatch(t *testing.T, pod *corev1.Pod, p []byte) *corev1.Pod {
	t.Helper()
	raw, err := json.Marshal(pod)
	require.NoError(t, err)
	dp, err := jsonpatch5.DecodePatch(p)
	require.NoError(t, err)
	out, err := dp.Apply(raw)
	require.NoError(t, err)
	var got corev1.Pod
	require.NoError(t, json.Unmarshal(out, &got))
	return &got
}
