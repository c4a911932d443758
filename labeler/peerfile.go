package labeler

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/labeler/kube"
)

// keepPeerFile watches the ring's EndpointSlices in this namespace and rewrites the peer
// watch file whenever the live members change. The Supervisor reads the file only while
// it knows no other member, so this is what heals a member restarted alone.
func (l *Labeler) keepPeerFile(ctx context.Context) {
	var last string
	l.syncSlices(ctx, contract.LabelRing+"="+l.cfg.Ring, func(slices map[string]kube.EndpointSlice) {
		var ring []kube.EndpointSlice
		for _, s := range slices {
			// The list and watch are already filtered by the API server; checking again
			// costs nothing and keeps another ring's members out whatever serves them.
			if s.Metadata.Labels[contract.LabelRing] == l.cfg.Ring {
				ring = append(ring, s)
			}
		}
		content := PeerFile(l.cfg.PodName, ring, l.cfg.MaxPeers)
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
	})
}

// Watches end after watchTimeout (the server closes them, jittered as client-go's
// reflector does); a failed list or watch is tried again after a back-off from
// retryMin to retryMax (each ±20%).
const (
	watchTimeout       = 5 * time.Minute
	retryMin, retryMax = time.Second, 30 * time.Second
)

// syncSlices keeps the EndpointSlices matching selector, by name, as client-go's reflector
// does: list, then watch from the list's resourceVersion (bookmarks keep it fresh), watch
// again from the last one when a watch ends, and list again when the server says it is
// gone (410). changed gets the whole set after the list and after every change, until
// ctx ends.
func (l *Labeler) syncSlices(ctx context.Context, selector string, changed func(map[string]kube.EndpointSlice)) {
	retry := &backoff.ExponentialBackOff{InitialInterval: retryMin, Multiplier: 2, RandomizationFactor: 0.2, MaxInterval: retryMax}
	pause := func(what string, err error) bool {
		d := retry.NextBackOff()
		l.log.Warn("EndpointSlices: "+what+" failed; trying again", "in", d.Round(time.Millisecond), "err", err)
		return sleep(ctx, l.clock, d)
	}
	for ctx.Err() == nil {
		list, err := l.api.ListEndpointSlices(ctx, selector)
		if err != nil {
			if ctx.Err() != nil || !pause("list", err) {
				return
			}
			continue
		}
		store := make(map[string]kube.EndpointSlice, len(list.Items))
		for _, s := range list.Items {
			store[s.Metadata.Name] = s
		}
		changed(store)
		rv := list.Metadata.ResourceVersion
		for ctx.Err() == nil {
			w, err := l.api.WatchEndpointSlices(ctx, selector, rv, jitter(watchTimeout, 1))
			if kube.IsGone(err) {
				break // list again
			}
			if err != nil {
				if ctx.Err() != nil || !pause("watch", err) {
					return
				}
				continue
			}
			next, gone := l.follow(w, store, rv, changed)
			w.Stop()
			if gone {
				break
			}
			rv = next
			retry.Reset()
		}
	}
}

// follow applies one watch's events to store; it returns the last resourceVersion seen and
// whether the server said it is gone (list again).
func (l *Labeler) follow(w kube.Watch[kube.EndpointSlice], store map[string]kube.EndpointSlice, rv string, changed func(map[string]kube.EndpointSlice)) (string, bool) {
	for {
		ev, err := w.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, context.Canceled) {
				l.log.Debug("EndpointSlices: watch ended", "err", err)
			}
			return rv, false
		}
		switch ev.Type {
		case kube.Error:
			if kube.IsGone(ev.Err) {
				return rv, true
			}
			l.log.Warn("EndpointSlices: watch error", "err", ev.Err)
			return rv, false
		case kube.Added, kube.Modified:
			store[ev.Object.Metadata.Name] = ev.Object
			changed(store)
		case kube.Deleted:
			delete(store, ev.Object.Metadata.Name)
			changed(store)
		}
		if v := ev.Object.Metadata.ResourceVersion; v != "" {
			rv = v
		}
	}
}

// PeerFile is the watch file's content: one live member IP a line (the pod itself
// excluded, unready addresses ignored), at most maxPeers, in contract.LiveMembers order.
func PeerFile(podName string, slices []kube.EndpointSlice, maxPeers int) string {
	var members []contract.Member
	for _, s := range slices {
		for _, ep := range s.Endpoints {
			var kind, name string
			if ep.TargetRef != nil {
				kind, name = ep.TargetRef.Kind, ep.TargetRef.Name
			}
			if m, ok := contract.EndpointMember(s.AddressType, ep.Addresses, ep.Conditions.Ready, kind, name); ok {
				members = append(members, m)
			}
		}
	}
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
