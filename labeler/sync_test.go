package labeler

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/habring/habring/labeler/kube"
)

// scriptedSlices answers the EndpointSlice list and watch from a script, and records the
// resourceVersions the watches asked for.
type scriptedSlices struct {
	API
	mu      sync.Mutex
	lists   []*kube.EndpointSliceList
	listErr []error
	watches [][]kube.Event[kube.EndpointSlice] // each watch's events, then io.EOF
	asked   []string
}

func (s *scriptedSlices) ListEndpointSlices(context.Context, string) (*kube.EndpointSliceList, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.listErr) > 0 {
		err := s.listErr[0]
		s.listErr = s.listErr[1:]
		return nil, err
	}
	l := s.lists[0]
	s.lists = s.lists[1:]
	return l, nil
}

func (s *scriptedSlices) WatchEndpointSlices(ctx context.Context, _, rv string, _ time.Duration) (kube.Watch[kube.EndpointSlice], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, rv)
	if len(s.watches) == 0 {
		return &scriptedWatch{ctx: ctx}, nil // the last one stays open
	}
	w := &scriptedWatch{ctx: ctx, events: s.watches[0], ends: true}
	s.watches = s.watches[1:]
	return w, nil
}

type scriptedWatch struct {
	ctx    context.Context
	events []kube.Event[kube.EndpointSlice]
	ends   bool
}

func (w *scriptedWatch) Next() (kube.Event[kube.EndpointSlice], error) {
	if len(w.events) > 0 {
		ev := w.events[0]
		w.events = w.events[1:]
		return ev, nil
	}
	if w.ends {
		return kube.Event[kube.EndpointSlice]{}, io.EOF
	}
	<-w.ctx.Done()
	return kube.Event[kube.EndpointSlice]{}, w.ctx.Err()
}

func (w *scriptedWatch) Stop() {}

func slice(name, rv string) kube.EndpointSlice {
	return kube.EndpointSlice{Metadata: kube.ObjectMeta{Name: name, ResourceVersion: rv}}
}

// syncSlices follows client-go's reflector: a watch that ends is resumed from the last
// resourceVersion seen (bookmarks included), a 410 lists again, and a failed list is
// retried after a back-off.
func TestSyncSlicesResumesAndRelists(t *testing.T) {
	t.Parallel()
	api := &scriptedSlices{
		listErr: []error{errors.New("connection refused")},
		lists: []*kube.EndpointSliceList{
			{Metadata: kube.ListMeta{ResourceVersion: "1"}, Items: []kube.EndpointSlice{slice("a", "1")}},
			{Metadata: kube.ListMeta{ResourceVersion: "9"}, Items: []kube.EndpointSlice{slice("c", "8")}},
		},
		watches: [][]kube.Event[kube.EndpointSlice]{
			{{Type: kube.Added, Object: slice("b", "2")}, {Type: kube.Bookmark, Object: slice("", "4")}},
			{{Type: kube.Deleted, Object: slice("a", "5")}, {Type: kube.Error, Err: &kube.StatusError{Code: 410, Reason: "Expired"}}},
		},
	}
	clk := testingclock.NewFakeClock(time.Now())
	l := New(Defaults(), api, clk, slog.New(slog.DiscardHandler))
	var mu sync.Mutex
	var seen [][]string
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.syncSlices(ctx, "habitat.sh/ring=main", func(s map[string]kube.EndpointSlice) {
			mu.Lock()
			seen = append(seen, slices.Sorted(maps.Keys(s)))
			mu.Unlock()
		})
	}()
	require.Eventually(t, clk.HasWaiters, 5*time.Second, time.Millisecond, "a failed list waits")
	clk.Step(retryMax)
	require.Eventually(t, func() bool {
		api.mu.Lock()
		defer api.mu.Unlock()
		return len(api.asked) == 3
	}, 5*time.Second, time.Millisecond)
	cancel()
	<-done
	require.Equal(t, []string{"1", "4", "9"}, api.asked, "resumed from the bookmark; after the 410, from the new list")
	require.Equal(t, [][]string{{"a"}, {"a", "b"}, {"b"}, {"c"}}, seen)
}
