package labeler

import (
	"context"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// API is every request the labeler makes, all in its own namespace: its pod, the pods
// labelled leader, its group's Lease and its ring's EndpointSlices.
//
// Run answers it with client-go REST clients over a scheme of just those three API
// groups: the typed clientset (kubernetes.Interface) would register every group's types
// at start, several MiB in every ring pod (README "Performance").
type API interface {
	GetPod(ctx context.Context, name string) (*corev1.Pod, error)
	// PatchPod patches the pod, or its subresource ("status") when one is named.
	PatchPod(ctx context.Context, name string, pt types.PatchType, body []byte, subresource ...string) error
	ListPods(ctx context.Context, labelSelector string) ([]corev1.Pod, error)
	GetLease(ctx context.Context, name string) (*coordinationv1.Lease, error)
	CreateLease(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error)
	UpdateLease(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error)
	// EndpointSlices lists and watches the EndpointSlices matching labelSelector.
	EndpointSlices(labelSelector string) cache.ListerWatcher
}

// FieldManager names the labeler's writes in managedFields.
const FieldManager = "habring-labeler"

// restAPI is API over client-go's REST clients, one per API group.
type restAPI struct {
	ns                        string
	core, coordination, disco rest.Interface
}

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
	params = runtime.NewParameterCodec(scheme)
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, coordinationv1.AddToScheme, discoveryv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err) // static registrations: only a programming error gets here
		}
	}
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
}

// NewAPI makes the REST clients for namespace ns from rc.
func NewAPI(rc *rest.Config, ns string) (API, error) {
	client := func(gv schema.GroupVersion, apiPath string) (rest.Interface, error) {
		c := rest.CopyConfig(rc)
		c.GroupVersion, c.APIPath = &gv, apiPath
		c.NegotiatedSerializer = codecs.WithoutConversion()
		c.ContentType = runtime.ContentTypeJSON
		r, err := rest.RESTClientFor(c)
		if err != nil {
			return nil, fmt.Errorf("REST client for %s: %w", gv, err)
		}
		return r, nil
	}
	a := &restAPI{ns: ns}
	var err error
	if a.core, err = client(corev1.SchemeGroupVersion, "/api"); err != nil {
		return nil, err
	}
	if a.coordination, err = client(coordinationv1.SchemeGroupVersion, "/apis"); err != nil {
		return nil, err
	}
	if a.disco, err = client(discoveryv1.SchemeGroupVersion, "/apis"); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *restAPI) GetPod(ctx context.Context, name string) (*corev1.Pod, error) {
	p := &corev1.Pod{}
	return p, a.core.Get().Namespace(a.ns).Resource("pods").Name(name).Do(ctx).Into(p)
}

func (a *restAPI) PatchPod(ctx context.Context, name string, pt types.PatchType, body []byte, subresource ...string) error {
	return a.core.Patch(pt).Namespace(a.ns).Resource("pods").Name(name).SubResource(subresource...).
		VersionedParams(&metav1.PatchOptions{FieldManager: FieldManager}, params).Body(body).Do(ctx).Error()
}

func (a *restAPI) ListPods(ctx context.Context, labelSelector string) ([]corev1.Pod, error) {
	list := &corev1.PodList{}
	err := a.core.Get().Namespace(a.ns).Resource("pods").VersionedParams(&metav1.ListOptions{LabelSelector: labelSelector}, params).
		Do(ctx).Into(list)
	return list.Items, err
}

func (a *restAPI) GetLease(ctx context.Context, name string) (*coordinationv1.Lease, error) {
	l := &coordinationv1.Lease{}
	return l, a.coordination.Get().Namespace(a.ns).Resource("leases").Name(name).Do(ctx).Into(l)
}

func (a *restAPI) CreateLease(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	return out, a.coordination.Post().Namespace(a.ns).Resource("leases").
		VersionedParams(&metav1.CreateOptions{FieldManager: FieldManager}, params).Body(lease).Do(ctx).Into(out)
}

func (a *restAPI) UpdateLease(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	out := &coordinationv1.Lease{}
	return out, a.coordination.Put().Namespace(a.ns).Resource("leases").Name(lease.Name).
		VersionedParams(&metav1.UpdateOptions{FieldManager: FieldManager}, params).Body(lease).Do(ctx).Into(out)
}

func (a *restAPI) EndpointSlices(labelSelector string) cache.ListerWatcher {
	opts := func(o metav1.ListOptions) *metav1.ListOptions {
		o.LabelSelector = labelSelector
		return &o
	}
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			list := &discoveryv1.EndpointSliceList{}
			return list, a.disco.Get().Namespace(a.ns).Resource("endpointslices").VersionedParams(opts(o), params).Do(ctx).Into(list)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.Watch = true
			return a.disco.Get().Namespace(a.ns).Resource("endpointslices").VersionedParams(opts(o), params).Watch(ctx)
		},
	}
}
