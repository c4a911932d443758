package labeler

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	discoveryv1client "k8s.io/client-go/kubernetes/typed/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/habring/habring/internal/kubeconfig"
)

// FieldManager names the labeler's writes in managedFields, and is its User-Agent: the
// API server names the Lease writes of client-go's elector, which send no field manager,
// after it.
const FieldManager = "habring-labeler"

// requestTimeout bounds each request the labeler makes but its watches (their reflectors
// bound those): the client has no timeout of its own, which would cut watches.
const requestTimeout = 30 * time.Second

// Connect returns the labeler's client: the kubeconfig at path, or with none the
// in-cluster config, the projected token the webhook mounts into this container alone
// (client-go reads it again as kubelet rotates it). Every request the labeler makes is in
// its own namespace: its pod, the pods labelled leader, its group's Lease and its ring's
// EndpointSlices.
func Connect(path string) (Client, error) {
	rc, err := kubeconfig.Load(path, FieldManager)
	if err != nil {
		return nil, err
	}
	var c clients
	if c.core, err = corev1client.NewForConfig(rc); err != nil {
		return nil, err
	}
	if c.coordination, err = coordinationv1client.NewForConfig(rc); err != nil {
		return nil, err
	}
	if c.discovery, err = discoveryv1client.NewForConfig(rc); err != nil {
		return nil, err
	}
	return c, nil
}

// Client is the labeler's three API groups: client-go's typed clients of them, not the
// whole clientset, whose other groups' clients every ring pod would link for nothing.
// kubernetes.Interface (a fake in the tests) is one.
type Client interface {
	CoreV1() corev1client.CoreV1Interface
	CoordinationV1() coordinationv1client.CoordinationV1Interface
	DiscoveryV1() discoveryv1client.DiscoveryV1Interface
}

type clients struct {
	core         *corev1client.CoreV1Client
	coordination *coordinationv1client.CoordinationV1Client
	discovery    *discoveryv1client.DiscoveryV1Client
}

func (c clients) CoreV1() corev1client.CoreV1Interface { return c.core }
func (c clients) CoordinationV1() coordinationv1client.CoordinationV1Interface {
	return c.coordination
}
func (c clients) DiscoveryV1() discoveryv1client.DiscoveryV1Interface { return c.discovery }

// pods is the labeler's namespace's pods.
func (l *Labeler) pods() corev1client.PodInterface { return l.kube.CoreV1().Pods(l.cfg.Namespace) }

// patchPod patches pod (or its subresource) as the labeler, within requestTimeout.
func (l *Labeler) patchPod(ctx context.Context, pod string, pt types.PatchType, body []byte, subresource ...string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	_, err := l.pods().Patch(ctx, pod, pt, body, metav1.PatchOptions{FieldManager: FieldManager}, subresource...)
	return err
}

// failures counts and logs the labeler's failed requests of one kind: every failure is
// counted (habring_labeler_request_failures_total{request}), but logged only when it
// differs from the last one, and once when the requests succeed again, so a denial or an
// API server that stops answering is said once, not at every try.
type failures struct {
	l       *Labeler
	request string // the metric's label: label, status, leader-list, lease-get, ...
	what    string // the log's words for it
	mu      sync.Mutex
	last    string // the last failure's message; "" while the requests succeed
	// deniedEvent is when the last HabringDenied Event was recorded; zero when the
	// requests succeed.
	deniedEvent time.Time
}

// deniedEvery is how often a denial that goes on is recorded again as an Event: often
// enough for habring check's ten-minute window, rarely enough to leave client-go's
// per-pod Warning budget (25, then one per five minutes) to the labeler's other Events.
const deniedEvery = 4 * time.Minute

func (l *Labeler) failures(request, what string) *failures {
	return &failures{l: l, request: request, what: what}
}

// observe records the outcome of one request; hint says what to do about a denial.
func (f *failures) observe(err error, hint string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		if f.last != "" {
			f.l.log.Info(f.what+" succeeds again", "request", f.request)
			f.last = ""
		}
		if !f.deniedEvent.IsZero() { // habring check stops counting the denial
			f.l.event(corev1.EventTypeNormal, EventAllowed, "%s allowed again", f.what)
			f.deniedEvent = time.Time{}
		}
		return
	}
	f.l.metrics.requestFailed(f.request)
	if apierrors.IsForbidden(err) && hint != "" && (err.Error() != f.last || f.l.clock.Since(f.deniedEvent) >= deniedEvery) {
		// When it changes, and again every deniedEvery while it goes on: how habring check
		// tells a denial that goes on from one fixed.
		f.l.event(corev1.EventTypeWarning, EventDenied, "%s denied: %v. Fix: %s", f.what, err, hint)
		f.deniedEvent = f.l.clock.Now()
	}
	if err.Error() == f.last {
		f.l.log.Debug(f.what+" failed again", "request", f.request, "err", err)
		return
	}
	f.last = err.Error()
	args := []any{"request", f.request, "err", err}
	if apierrors.IsForbidden(err) && hint != "" {
		args = append(args, "fix", hint)
	}
	f.l.log.Warn(f.what+" failed; will retry", args...)
}

// watchTimeout is how long each of the labeler's watches lasts before client-go's
// reflector opens the next from where the last ended: the API server's own default for a
// watch that asks none (--min-request-timeout, 30 min, up to twice that), not client-go's
// 5 to 10 min, sized for controllers spread over API servers. Every ring pod holds two
// watches, and each new one is a request.
const watchTimeout = 30 * time.Minute

// listWatch is a typed client's List and Watch (LeaseInterface, EndpointSliceInterface).
type listWatch[L runtime.Object] interface {
	List(context.Context, metav1.ListOptions) (L, error)
	Watch(context.Context, metav1.ListOptions) (watch.Interface, error)
}

// informer is client-go's reflector and store for the objects of api that selector picks
// (it sets a label or field selector): a watch that ends is resumed from its
// resourceVersion, a 410 lists again, a failure backs off. Each list and watch request's
// failure is counted and logged once (fails); changed runs after each change the store
// takes. Run the controller to start it.
func informer[L runtime.Object](l *Labeler, obj runtime.Object, api listWatch[L], selector func(*metav1.ListOptions),
	fails *failures, changed func()) (cache.Store, cache.Controller) {
	observe := func(err error) {
		if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) { // the reflector lists again
			fails.observe(err, rbacHint(l.cfg.Namespace))
		}
	}
	// As client-go's generated informers do: a client that cannot stream the initial list
	// (a fake) is listed the old way.
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			selector(&o)
			got, err := api.List(ctx, o)
			observe(err)
			return got, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			selector(&o)
			w, err := api.Watch(ctx, o)
			observe(err)
			return w, err
		},
	}, l.kube)
	return cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw, ObjectType: obj, MinWatchTimeout: watchTimeout,
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { changed() }, UpdateFunc: func(any, any) { changed() }, DeleteFunc: func(any) { changed() },
		},
	})
}
