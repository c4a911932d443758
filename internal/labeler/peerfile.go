package labeler

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/patch"
)

// keepPeerFile watches the ring's EndpointSlices in this namespace and rewrites the peer
// watch file whenever the live members change. The Supervisor reads the file only while
// it knows no other member, so this is what heals a member restarted alone.
//
// The slices come from client-go's reflector (informer): the file is written once the
// first list is in, even an empty one (the labeler is ready only then), and after every
// change.
func (l *Labeler) keepPeerFile(ctx context.Context) {
	sel := contract.LabelRing + "=" + l.cfg.Ring
	api := l.kube.DiscoveryV1().EndpointSlices(l.cfg.Namespace)
	changed := make(chan struct{}, 1)
	store, ctl := informer[*discoveryv1.EndpointSliceList](l, &discoveryv1.EndpointSlice{}, api,
		func(o *metav1.ListOptions) { o.LabelSelector = sel },
		l.failures("endpointslices", "list or watch of the ring's EndpointSlices"),
		func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
	var running sync.WaitGroup
	defer running.Wait() // the informer stops with ctx, before the labeler returns
	running.Go(func() { ctl.RunWithContext(ctx) })
	if !cache.WaitForCacheSync(ctx.Done(), ctl.HasSynced) {
		return
	}
	var last string
	for {
		var ring []discoveryv1.EndpointSlice
		for _, o := range store.List() {
			s := o.(*discoveryv1.EndpointSlice)
			// The list and watch are already filtered by the API server; checking again
			// costs nothing and keeps another ring's members out whatever serves them.
			if s.Labels[contract.LabelRing] == l.cfg.Ring {
				ring = append(ring, *s)
			}
		}
		content := PeerFile(l.cfg.PodName, ring, l.cfg.MaxPeers)
		if content != last || !l.peersReady.Load() {
			if err := writeAtomic(l.cfg.PeerWatchFile, []byte(content)); err != nil {
				l.log.Error("write peer watch file", "path", l.cfg.PeerWatchFile, "err", err)
			} else {
				last = content
				l.peersReady.Store(true)
				l.log.Info("peer watch file written", "path", l.cfg.PeerWatchFile, "peers", strings.Count(content, "\n"))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// PeerFile is the watch file's content: one live member IP a line (the pod itself
// excluded, unready addresses ignored), at most maxPeers, in contract.LiveMembers order.
func PeerFile(podName string, slices []discoveryv1.EndpointSlice, maxPeers int) string {
	ptrs := make([]*discoveryv1.EndpointSlice, len(slices))
	for i := range slices {
		ptrs[i] = &slices[i]
	}
	members := patch.Members(ptrs) // the webhook's own reading of the slices
	var b strings.Builder
	for i, m := range contract.LiveMembers(podName, contract.Ring{Members: members}) {
		if i == maxPeers {
			break
		}
		b.WriteString(m.IP)
		b.WriteByte('\n')
	}
	return b.String()
}

// writeAtomic replaces path in one rename, so the Supervisor never reads half a file.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // a no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
