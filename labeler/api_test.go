package labeler

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// clientsetAPI answers API from a typed clientset: the tests' fake one. (Only tests link
// the clientset; the labeler's binary does not.)
type clientsetAPI struct {
	c  kubernetes.Interface
	ns string
}

func (a clientsetAPI) GetPod(ctx context.Context, name string) (*corev1.Pod, error) {
	return a.c.CoreV1().Pods(a.ns).Get(ctx, name, metav1.GetOptions{})
}

func (a clientsetAPI) PatchPod(ctx context.Context, name string, pt types.PatchType, body []byte, sub ...string) error {
	_, err := a.c.CoreV1().Pods(a.ns).Patch(ctx, name, pt, body, metav1.PatchOptions{FieldManager: FieldManager}, sub...)
	return err
}

func (a clientsetAPI) ListPods(ctx context.Context, sel string) ([]corev1.Pod, error) {
	l, err := a.c.CoreV1().Pods(a.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func (a clientsetAPI) GetLease(ctx context.Context, name string) (*coordinationv1.Lease, error) {
	return a.c.CoordinationV1().Leases(a.ns).Get(ctx, name, metav1.GetOptions{})
}

func (a clientsetAPI) CreateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return a.c.CoordinationV1().Leases(a.ns).Create(ctx, l, metav1.CreateOptions{FieldManager: FieldManager})
}

func (a clientsetAPI) UpdateLease(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return a.c.CoordinationV1().Leases(a.ns).Update(ctx, l, metav1.UpdateOptions{FieldManager: FieldManager})
}

func (a clientsetAPI) EndpointSlices(sel string) cache.ListerWatcher {
	// The fake clientset cannot stream a list as a watch: say so, as client-go's informers do.
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = sel
			return a.c.DiscoveryV1().EndpointSlices(a.ns).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel
			return a.c.DiscoveryV1().EndpointSlices(a.ns).Watch(ctx, o)
		},
	}, a.c)
}

// The REST API sends what the API server expects: the paths, the patch type, the field
// manager, the JSON bodies, and an error status the caller can tell apart.
func TestRESTAPIRequests(t *testing.T) {
	t.Parallel()
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery+" "+r.Header.Get("Content-Type"))
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/leases/missing"):
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"leases \"missing\" not found"}`))
		case strings.Contains(r.URL.Path, "/leases"):
			_, _ = w.Write([]byte(`{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":"l","resourceVersion":"7"},"spec":{"holderIdentity":"redis-0"}}`))
		case r.URL.Path == "/api/v1/namespaces/shop/pods":
			_, _ = w.Write([]byte(`{"kind":"PodList","apiVersion":"v1","items":[{"metadata":{"name":"redis-0"}}]}`))
		default:
			_, _ = w.Write([]byte(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"redis-0","labels":{"habitat.sh/role":"leader"}}}`))
		}
	}))
	defer srv.Close()
	api, err := NewAPI(&rest.Config{Host: srv.URL}, "shop")
	require.NoError(t, err)
	ctx := t.Context()
	p, err := api.GetPod(ctx, "redis-0")
	require.NoError(t, err)
	require.Equal(t, "leader", p.Labels["habitat.sh/role"])
	require.NoError(t, api.PatchPod(ctx, "redis-0", types.MergePatchType, []byte(`{}`)))
	require.NoError(t, api.PatchPod(ctx, "redis-0", types.StrategicMergePatchType, []byte(`{}`), "status"))
	pods, err := api.ListPods(ctx, "habitat.sh/role=leader")
	require.NoError(t, err)
	require.Len(t, pods, 1)
	_, err = api.GetLease(ctx, "missing")
	require.True(t, apierrors.IsNotFound(err), "%v", err)
	l, err := api.UpdateLease(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l", ResourceVersion: "6"}})
	require.NoError(t, err)
	require.Equal(t, "7", l.ResourceVersion)
	_, err = api.CreateLease(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l"}})
	require.NoError(t, err)
	require.Equal(t, []string{
		"GET /api/v1/namespaces/shop/pods/redis-0? ",
		"PATCH /api/v1/namespaces/shop/pods/redis-0?fieldManager=habring-labeler application/merge-patch+json",
		"PATCH /api/v1/namespaces/shop/pods/redis-0/status?fieldManager=habring-labeler application/strategic-merge-patch+json",
		"GET /api/v1/namespaces/shop/pods?labelSelector=habitat.sh%2Frole%3Dleader ",
		"GET /apis/coordination.k8s.io/v1/namespaces/shop/leases/missing? ",
		"PUT /apis/coordination.k8s.io/v1/namespaces/shop/leases/l?fieldManager=habring-labeler application/json",
		"POST /apis/coordination.k8s.io/v1/namespaces/shop/leases?fieldManager=habring-labeler application/json",
	}, seen)
}
