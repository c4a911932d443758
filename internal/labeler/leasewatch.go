package labeler

import (
	"context"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// leaseWatch follows one Lease, in every labeler of the group (the followers too), and
// remembers since when, by this labeler's clock, it has been as it is (its
// resourceVersion). client-go's elector judges a Lease run out by that rule but from its
// own first read, so a labeler that begins contending when its Supervisor is elected
// would wait out a dead holder's whole term again, however long the Lease has been still;
// with the watch it can take over at once (takeOver). The watch also tells a contender at
// once when a Lease is given up, where the elector would find out at its next retry.
type leaseWatch struct {
	name     string
	key      string // the store's key: namespace/name
	clock    clock.Clock
	store    cache.Store
	synced   func() bool
	changed  chan struct{} // poked after each change
	onChange func()        // called after each change too
	stop     context.CancelFunc
	done     chan struct{}

	mu    sync.Mutex
	rv    string    // the Lease's resourceVersion as last seen; "" when there is none
	since time.Time // when rv was first seen
}

// watchLease starts following the Lease name until ctx ends or close; onChange runs after
// each change.
func (l *Labeler) watchLease(ctx context.Context, name string, onChange func()) *leaseWatch {
	w := &leaseWatch{name: name, key: l.cfg.Namespace + "/" + name, clock: l.clock,
		changed: make(chan struct{}, 1), onChange: onChange, done: make(chan struct{})}
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	var ctl cache.Controller
	w.store, ctl = informer[*coordinationv1.LeaseList](l, &coordinationv1.Lease{}, l.kube.CoordinationV1().Leases(l.cfg.Namespace),
		func(o *metav1.ListOptions) { o.FieldSelector = sel },
		l.failures("lease-watch", "list or watch of the leader Lease"), w.note)
	w.synced = ctl.HasSynced
	ctx, w.stop = context.WithCancel(ctx)
	go func() { defer close(w.done); ctl.RunWithContext(ctx) }()
	return w
}

// close stops the watch and waits for it.
func (w *leaseWatch) close() {
	w.stop()
	<-w.done
}

// note records a change: a new resourceVersion, or none (deleted). A list again after a
// broken watch that finds the Lease as it was changes nothing.
func (w *leaseWatch) note() {
	rv := ""
	if o, ok, _ := w.store.GetByKey(w.key); ok {
		rv = o.(*coordinationv1.Lease).ResourceVersion
	}
	w.mu.Lock()
	if rv != w.rv || w.since.IsZero() {
		w.rv, w.since = rv, w.clock.Now()
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
	w.onChange()
}

// seen is the Lease as last seen (nil: there is none) and since when it is so; ok is
// false until the watch has its first list.
func (w *leaseWatch) seen() (lease *coordinationv1.Lease, since time.Time, ok bool) {
	if !w.synced() {
		return nil, time.Time{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	o, found, _ := w.store.GetByKey(w.key)
	if !found {
		return nil, w.since, true
	}
	lease = o.(*coordinationv1.Lease)
	if lease.ResourceVersion != w.rv { // in the store, its handler not yet called
		return lease, w.clock.Now(), true
	}
	return lease, w.since, true
}
