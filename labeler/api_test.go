package labeler

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/habring/habring/labeler/kube"
)

// clientsetAPI answers API from a typed clientset: the tests' fake one. Objects cross
// between client-go's types and package kube's as JSON, as they do over the wire, and
// errors as the Status the API server would send. (Only tests link the clientset; the
// labeler's binary does not.)
type clientsetAPI struct {
	c  kubernetes.Interface
	ns string
}

// viaJSON converts in (a client-go object) to T (package kube's, or back) as the wire would.
func viaJSON[T any](in any) (*T, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	out := new(T)
	return out, json.Unmarshal(b, out)
}

// answer converts a clientset answer to package kube's types and errors.
func answer[T any](in any, err error) (*T, error) {
	if err != nil {
		return nil, kubeError(err)
	}
	return viaJSON[T](in)
}

// kubeError is a clientset error as kube.Client returns it: the API server's Status.
func kubeError(err error) error {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		s := st.Status()
		return &kube.StatusError{Code: int(s.Code), Reason: string(s.Reason), Message: s.Message}
	}
	return err
}

func (a clientsetAPI) GetPod(ctx context.Context, name string) (*kube.Pod, error) {
	return answer[kube.Pod](a.c.CoreV1().Pods(a.ns).Get(ctx, name, metav1.GetOptions{}))
}

func (a clientsetAPI) PatchPod(ctx context.Context, name, pt string, body []byte, sub ...string) error {
	_, err := answer[kube.Pod](a.c.CoreV1().Pods(a.ns).Patch(ctx, name, types.PatchType(pt), body, metav1.PatchOptions{FieldManager: FieldManager}, sub...))
	return err
}

func (a clientsetAPI) ListPods(ctx context.Context, sel string) ([]kube.Pod, error) {
	l, err := answer[kube.PodList](a.c.CoreV1().Pods(a.ns).List(ctx, metav1.ListOptions{LabelSelector: sel}))
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func (a clientsetAPI) GetLease(ctx context.Context, name string) (*kube.Lease, error) {
	return answer[kube.Lease](a.c.CoordinationV1().Leases(a.ns).Get(ctx, name, metav1.GetOptions{}))
}

func (a clientsetAPI) CreateLease(ctx context.Context, l *kube.Lease) (*kube.Lease, error) {
	typed, err := viaJSON[coordinationv1.Lease](l)
	if err != nil {
		return nil, err
	}
	return answer[kube.Lease](a.c.CoordinationV1().Leases(a.ns).Create(ctx, typed, metav1.CreateOptions{FieldManager: FieldManager}))
}

func (a clientsetAPI) UpdateLease(ctx context.Context, l *kube.Lease) (*kube.Lease, error) {
	typed, err := viaJSON[coordinationv1.Lease](l)
	if err != nil {
		return nil, err
	}
	return answer[kube.Lease](a.c.CoordinationV1().Leases(a.ns).Update(ctx, typed, metav1.UpdateOptions{FieldManager: FieldManager}))
}

func (a clientsetAPI) ListEndpointSlices(ctx context.Context, sel string) (*kube.EndpointSliceList, error) {
	return answer[kube.EndpointSliceList](a.c.DiscoveryV1().EndpointSlices(a.ns).List(ctx, metav1.ListOptions{LabelSelector: sel}))
}

func (a clientsetAPI) WatchEndpointSlices(ctx context.Context, sel, rv string, timeout time.Duration) (kube.Watch[kube.EndpointSlice], error) {
	secs := int64(timeout / time.Second)
	w, err := a.c.DiscoveryV1().EndpointSlices(a.ns).Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: rv, TimeoutSeconds: &secs})
	if err != nil {
		return nil, kubeError(err)
	}
	return fakeWatch{w}, nil
}

// fakeWatch is a client-go watch as a kube.Watch.
type fakeWatch struct{ w watch.Interface }

func (f fakeWatch) Next() (kube.Event[kube.EndpointSlice], error) {
	ev, ok := <-f.w.ResultChan()
	if !ok {
		return kube.Event[kube.EndpointSlice]{}, io.EOF
	}
	obj, err := viaJSON[kube.EndpointSlice](ev.Object)
	if err != nil {
		return kube.Event[kube.EndpointSlice]{}, err
	}
	return kube.Event[kube.EndpointSlice]{Type: string(ev.Type), Object: *obj}, nil
}

func (f fakeWatch) Stop() { f.w.Stop() }
