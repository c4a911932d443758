package labeler

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/patch"
)

// keepPeerFile watches the ring's EndpointSlices in this namespace and rewrites the peer
// watch file whenever the live members change. The Supervisor reads the file only while
// it knows no other member, so this is what heals a member restarted alone.
func (l *Labeler) keepPeerFile(ctx context.Context) {
	inf := cache.NewSharedIndexInformer(l.api.EndpointSlices(contract.LabelRing+"="+l.cfg.Ring), &discoveryv1.EndpointSlice{}, 0, cache.Indexers{})
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke}); err != nil {
		l.log.Error("watch endpointslices", "err", err)
		return
	}
	go inf.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return
	}
	var last string
	write := func() {
		var slices []*discoveryv1.EndpointSlice
		for _, o := range inf.GetStore().List() {
			// The list/watch is already filtered by the API server; checking again costs
			// nothing and keeps another ring's members out whatever serves the watch.
			if s := o.(*discoveryv1.EndpointSlice); s.Labels[contract.LabelRing] == l.cfg.Ring {
				slices = append(slices, s)
			}
		}
		content := PeerFile(l.cfg.PodName, slices, l.cfg.MaxPeers)
		if content == last && l.peersReady.Load() {
			return
		}
		if err := writeAtomic(l.cfg.PeerWatchFile, []byte(content)); err != nil {
			l.log.Error("write peer watch file", "path", l.cfg.PeerWatchFile, "err", err)
			return
		}
		last = content
		l.peersReady.Store(true)
		l.log.Info("peer watch file written", "path", l.cfg.PeerWatchFile, "peers", strings.Count(content, "\n"))
	}
	write()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			write()
		}
	}
}

// PeerFile is the watch file's content: one live member IP a line (the pod itself
// excluded, unready addresses ignored), at most maxPeers, in contract.LiveMembers order.
func PeerFile(podName string, slices []*discoveryv1.EndpointSlice, maxPeers int) string {
	members := contract.LiveMembers(podName, contract.Ring{Members: patch.Members(slices)})
	var b strings.Builder
	for i, m := range members {
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
