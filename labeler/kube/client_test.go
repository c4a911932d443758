package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/ptr"
)

// The client sends what the API server expects: the paths, the patch types, the field
// manager, the JSON bodies and the token, and gives back errors the caller can tell apart.
func TestRequests(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen, bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery+" "+r.Header.Get("Content-Type")+" "+r.Header.Get("Authorization")+" "+r.Header.Get("User-Agent"))
		if len(b) > 0 {
			bodies = append(bodies, string(b))
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/leases/missing"):
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"leases \"missing\" not found"}`))
		case r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/leases/stale"):
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409,"message":"the object has been modified"}`))
		case strings.Contains(r.URL.Path, "/leases"):
			_, _ = w.Write([]byte(`{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":"l","resourceVersion":"7","uid":"u-1","ownerReferences":[{"kind":"Pod","name":"p"}]},"spec":{"holderIdentity":"redis-0","renewTime":"2026-12-01T12:00:00.123456Z"}}`))
		case strings.HasSuffix(r.URL.Path, "/pods/forbidden"):
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte("plain text, no Status"))
		case r.URL.Path == "/api/v1/namespaces/shop/pods":
			_, _ = w.Write([]byte(`{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[{"metadata":{"name":"redis-0"},"status":{"podIP":"10.0.0.1"}}]}`))
		default:
			_, _ = w.Write([]byte(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"redis-0","labels":{"habitat.sh/role":"leader"}},"spec":{"readinessGates":[{"conditionType":"habitat.sh/ring-joined"}],"containers":[{"name":"x"}]}}`))
		}
	}))
	defer srv.Close()
	c, err := New(&Config{Host: srv.URL, Token: "t0k", UserAgent: "habring-labeler"}, "shop", "habring-labeler")
	require.NoError(t, err)
	ctx := t.Context()
	p, err := c.GetPod(ctx, "redis-0")
	require.NoError(t, err)
	require.Equal(t, "leader", p.Metadata.Labels["habitat.sh/role"])
	require.Equal(t, []PodReadinessGate{{ConditionType: "habitat.sh/ring-joined"}}, p.Spec.ReadinessGates)
	require.NoError(t, c.PatchPod(ctx, "redis-0", MergePatch, []byte(`{"metadata":{}}`)))
	require.NoError(t, c.PatchPod(ctx, "redis-0", StrategicMergePatch, []byte(`{"status":{}}`), "status"))
	pods, err := c.ListPods(ctx, "habitat.sh/role=leader,habitat.sh/ring=main")
	require.NoError(t, err)
	require.Len(t, pods, 1)
	require.Equal(t, "10.0.0.1", pods[0].Status.PodIP)
	_, err = c.GetLease(ctx, "missing")
	require.True(t, IsNotFound(err), "%v", err)
	require.False(t, IsConflict(err))
	require.EqualError(t, err, `leases "missing" not found`)
	l, err := c.GetLease(ctx, "l")
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 12, 1, 12, 0, 0, 123456000, time.UTC), l.Spec.RenewTime.UTC())
	l.Spec.HolderIdentity = ptr.To("redis-1")
	updated, err := c.UpdateLease(ctx, l)
	require.NoError(t, err)
	require.Equal(t, "7", updated.Metadata.ResourceVersion)
	l.Metadata.Name = "stale"
	_, err = c.UpdateLease(ctx, l)
	require.True(t, IsConflict(err), "%v", err)
	_, err = c.CreateLease(ctx, NewLease("l", LeaseSpec{HolderIdentity: ptr.To("redis-0"), LeaseDurationSeconds: ptr.To[int32](15)}))
	require.NoError(t, err)
	err = c.PatchPod(ctx, "forbidden", MergePatch, []byte(`{}`))
	require.True(t, IsForbidden(err), "%v", err)
	require.ErrorContains(t, err, "PATCH /api/v1/namespaces/shop/pods/forbidden: 403 plain text, no Status")
	require.Equal(t, []string{
		"GET /api/v1/namespaces/shop/pods/redis-0?  Bearer t0k habring-labeler",
		"PATCH /api/v1/namespaces/shop/pods/redis-0?fieldManager=habring-labeler application/merge-patch+json Bearer t0k habring-labeler",
		"PATCH /api/v1/namespaces/shop/pods/redis-0/status?fieldManager=habring-labeler application/strategic-merge-patch+json Bearer t0k habring-labeler",
		"GET /api/v1/namespaces/shop/pods?labelSelector=habitat.sh%2Frole%3Dleader%2Chabitat.sh%2Fring%3Dmain  Bearer t0k habring-labeler",
		"GET /apis/coordination.k8s.io/v1/namespaces/shop/leases/missing?  Bearer t0k habring-labeler",
		"GET /apis/coordination.k8s.io/v1/namespaces/shop/leases/l?  Bearer t0k habring-labeler",
		"PUT /apis/coordination.k8s.io/v1/namespaces/shop/leases/l?fieldManager=habring-labeler application/json Bearer t0k habring-labeler",
		"PUT /apis/coordination.k8s.io/v1/namespaces/shop/leases/stale?fieldManager=habring-labeler application/json Bearer t0k habring-labeler",
		"POST /apis/coordination.k8s.io/v1/namespaces/shop/leases?fieldManager=habring-labeler application/json Bearer t0k habring-labeler",
		"PATCH /api/v1/namespaces/shop/pods/forbidden?fieldManager=habring-labeler application/merge-patch+json Bearer t0k habring-labeler",
	}, seen)
	// The update sends back every metadata field it read (the owner, the uid) with the
	// resourceVersion as the precondition, and the spec's times in the API's format.
	var put map[string]any
	require.NoError(t, json.Unmarshal([]byte(bodies[2]), &put))
	require.Equal(t, map[string]any{"name": "l", "resourceVersion": "7", "uid": "u-1", "ownerReferences": []any{map[string]any{"kind": "Pod", "name": "p"}}}, put["metadata"])
	require.Equal(t, map[string]any{"holderIdentity": "redis-1", "renewTime": "2026-12-01T12:00:00.123456Z"}, put["spec"])
	require.Equal(t, "coordination.k8s.io/v1", put["apiVersion"])
	require.JSONEq(t, `{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"l"},"spec":{"holderIdentity":"redis-0","leaseDurationSeconds":15}}`, bodies[4])
}

// An API server that stops answering fails the request after requestTimeout, not never;
// the caller's context ends it sooner.
func TestRequestEndsWithItsContext(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	c, err := New(&Config{Host: srv.URL}, "shop", "")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err = c.GetPod(ctx, "redis-0")
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// A token file is read again once a minute, as it rotates; one that cannot be read keeps
// the last good token; none at all is an error that names the file.
func TestTokenFileRotates(t *testing.T) {
	t.Parallel()
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "token")
	c, err := New(&Config{Host: srv.URL, TokenFile: file}, "shop", "")
	require.NoError(t, err)
	_, err = c.GetPod(t.Context(), "p")
	require.ErrorContains(t, err, "token file "+file)
	require.NoError(t, os.WriteFile(file, []byte("one\n"), 0o600))
	_, err = c.GetPod(t.Context(), "p")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(file, []byte("two"), 0o600))
	_, err = c.GetPod(t.Context(), "p")
	require.NoError(t, err)
	c.mu.Lock()
	c.tokenRead = c.tokenRead.Add(-tokenRefresh) // a minute later
	c.mu.Unlock()
	_, err = c.GetPod(t.Context(), "p")
	require.NoError(t, err)
	require.NoError(t, os.Remove(file))
	c.mu.Lock()
	c.tokenRead = c.tokenRead.Add(-tokenRefresh)
	c.mu.Unlock()
	_, err = c.GetPod(t.Context(), "p")
	require.NoError(t, err)
	require.Equal(t, []string{"Bearer one", "Bearer one", "Bearer two", "Bearer two"}, got)
}

// A watch decodes its stream: objects, bookmarks, the server's error events; it ends
// with io.EOF when the server closes it.
func TestWatch(t *testing.T) {
	t.Parallel()
	var query string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.RawQuery
		for _, line := range []string{
			`{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"11","labels":{"habitat.sh/ring":"main"}},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":true},"targetRef":{"kind":"Pod","name":"db-0"}}]}}`,
			`{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"12"}}}`,
			`{"type":"DELETED","object":{"metadata":{"name":"a","resourceVersion":"13"}}}`,
			`{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version: 1 (13)"}}`,
		} {
			_, _ = fmt.Fprintln(w, line)
		}
	}))
	defer srv.Close()
	c, err := New(&Config{Host: srv.URL}, "shop", "")
	require.NoError(t, err)
	w, err := c.WatchEndpointSlices(t.Context(), "habitat.sh/ring=main", "10", 5*time.Minute)
	require.NoError(t, err)
	defer w.Stop()
	require.Equal(t, "allowWatchBookmarks=true&labelSelector=habitat.sh%2Fring%3Dmain&resourceVersion=10&timeoutSeconds=300&watch=true", query)
	ev, err := w.Next()
	require.NoError(t, err)
	require.Equal(t, Added, ev.Type)
	require.Equal(t, "a", ev.Object.Metadata.Name)
	require.Equal(t, []Endpoint{{Addresses: []string{"10.0.0.1"}, Conditions: EndpointConditions{Ready: ptr.To(true)}, TargetRef: &ObjectReference{Kind: "Pod", Name: "db-0"}}}, ev.Object.Endpoints)
	ev, err = w.Next()
	require.NoError(t, err)
	require.Equal(t, Bookmark, ev.Type)
	require.Equal(t, "12", ev.Object.Metadata.ResourceVersion)
	ev, err = w.Next()
	require.NoError(t, err)
	require.Equal(t, Deleted, ev.Type)
	ev, err = w.Next()
	require.NoError(t, err)
	require.Equal(t, Error, ev.Type)
	require.True(t, IsGone(ev.Err), "%v", ev.Err)
	_, err = w.Next()
	require.ErrorIs(t, err, io.EOF)
}

// A watch stream that is not JSON, or has an event of an unknown type, is an error, not a
// silent end.
func TestWatchRefusesGarbage(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"not JSON":     "<html>",
		"unknown type": `{"type":"SURPRISE","object":{}}`,
		"bad object":   `{"type":"ADDED","object":{"metadata":"x"}}`,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) }))
		c, err := New(&Config{Host: srv.URL}, "shop", "")
		require.NoError(t, err)
		w, err := c.WatchEndpointSlices(t.Context(), "x=y", "1", time.Minute)
		require.NoError(t, err)
		_, err = w.Next()
		require.Error(t, err, name)
		require.NotErrorIs(t, err, io.EOF, name)
		w.Stop()
		srv.Close()
	}
}
