package labeler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
)

func readCensus(t *testing.T, name string) *Census {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	var c Census
	require.NoError(t, json.Unmarshal(b, &c))
	return &c
}

func TestDecide(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file, group     string
		role, wantGroup string
		ambiguous       bool
	}{
		{file: "census_leader.json", role: contract.RoleLeader, wantGroup: "redis.default"},
		{file: "census_follower.json", role: contract.RoleFollower, wantGroup: "redis.default"},
		{file: "census_election_in_progress.json", role: contract.RoleNone, wantGroup: "redis.default"},
		// leader_id still names this member and its leader flag is still set: not a leader.
		{file: "census_no_quorum.json", role: contract.RoleNone, wantGroup: "redis.default"},
		{file: "census_standalone.json", role: contract.RoleNone, wantGroup: "nginx.default"},
		{file: "sample-census-output.json", role: contract.RoleNone, wantGroup: "builder-router.default"},
		{file: "census_leader.json", group: "redis.default", role: contract.RoleLeader, wantGroup: "redis.default"},
		{file: "census_leader.json", group: "redis.prod", role: contract.RoleNone, wantGroup: "redis.prod"},
		{file: "sample-census-output.json", group: "builder-api.default", role: contract.RoleNone, wantGroup: "builder-api.default"},
	}
	for _, tc := range tests {
		t.Run(tc.file+"/"+tc.group, func(t *testing.T) {
			t.Parallel()
			role, group, err := Decide(readCensus(t, tc.file), tc.group)
			require.NoError(t, err)
			require.Equal(t, tc.role, role)
			require.Equal(t, tc.wantGroup, group)
		})
	}
	t.Run("member of two groups", func(t *testing.T) {
		t.Parallel()
		c := readCensus(t, "census_leader.json")
		g := c.Groups["redis.default"]
		c.Groups["sentinel.default"] = g
		_, _, err := Decide(c, "")
		require.ErrorIs(t, err, ErrAmbiguousGroup)
		require.EqualError(t, err, "local member belongs to several service groups: redis.default, sentinel.default; set --service-group to one of them")
	})
	t.Run("leader_id is the local member, but it is not alive in its own census", func(t *testing.T) {
		t.Parallel()
		c := readCensus(t, "census_leader.json")
		g := c.Groups["redis.default"]
		g.Population[c.LocalMemberID] = CensusMember{Alive: false}
		role, _, err := Decide(c, "")
		require.NoError(t, err)
		require.Equal(t, contract.RoleNone, role)
		delete(g.Population, c.LocalMemberID)
		role, _, err = Decide(c, "redis.default")
		require.NoError(t, err)
		require.Equal(t, contract.RoleNone, role, "a leader absent from its own population")
	})
	t.Run("not loaded yet", func(t *testing.T) {
		t.Parallel()
		role, _, err := Decide(&Census{LocalMemberID: "x"}, "")
		require.NoError(t, err)
		require.Equal(t, contract.RoleNone, role)
	})
}

func TestGatewayErrors(t *testing.T) {
	t.Parallel()
	leader, err := os.ReadFile("testdata/census_leader.json")
	require.NoError(t, err)
	tests := map[string]struct {
		handler http.HandlerFunc
		token   string
		want    string // error substring; "" means success
	}{
		"ok": {handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(leader) }},
		"token sent": {token: "s3cret", handler: func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer s3cret" {
				http.Error(w, "", http.StatusUnauthorized)
				return
			}
			_, _ = w.Write(leader)
		}},
		"401":      {handler: func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "", http.StatusUnauthorized) }, want: "401 Unauthorized: the gateway auth token is missing or wrong"},
		"redacted": {handler: func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "", http.StatusNotFound) }, want: "HAB_FEAT_REDACT_HTTP"},
		"500":      {handler: func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "", http.StatusInternalServerError) }, want: "supervisor gateway answered 500 Internal Server Error"},
		"malformed": {handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"census_groups":`)) },
			want: "census is not valid JSON: unexpected end of JSON input"},
		"not a census": {handler: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{}`)) }, want: "census has no local_member_id"},
		"huge": {handler: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"x":"`))
			chunk := []byte(strings.Repeat("a", 1<<20))
			for range 9 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}, want: "census larger than 8388608 bytes; not read"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tc.handler)
			t.Cleanup(srv.Close)
			g := &Gateway{URL: srv.URL, Token: tc.token, Client: srv.Client()}
			c, err := g.Census(t.Context())
			if tc.want == "" {
				require.NoError(t, err)
				require.Equal(t, "e4b3a1f07c2d4e8b9a6f5d3c2b1a0e9f", c.LocalMemberID)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err = (&Gateway{URL: "http://127.0.0.1:1", Client: http.DefaultClient}).Census(t.Context())
	require.ErrorContains(t, err, "supervisor gateway: ")
}

// supervisor is an httptest Supervisor whose census the test changes over time.
type supervisor struct {
	mu    sync.Mutex
	body  []byte // nil: gateway down (503)
	reads int
	srv   *httptest.Server
}

func (s *supervisor) set(t *testing.T, file string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if file == "" {
		s.body = nil
		return
	}
	b, err := os.ReadFile(filepath.Join("testdata", file))
	require.NoError(t, err)
	s.body = b
}

func (s *supervisor) readCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

func (s *supervisor) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if s.body == nil {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write(s.body)
}

// tick moves the labeler's clock by d once its loop waits on it, and returns once the
// loop has read the census again (and written whatever follows) and waits again. d must
// reach past the loop's next wake-up.
func tick(t *testing.T, clk *testingclock.FakeClock, sup *supervisor, d time.Duration) {
	t.Helper()
	require.Eventually(t, clk.HasWaiters, 5*time.Second, time.Millisecond, "the census loop never waited")
	before := sup.readCount()
	clk.Step(d)
	require.Eventually(t, func() bool { return sup.readCount() > before && clk.HasWaiters() }, 5*time.Second, time.Millisecond,
		"the census loop did not read again after %s", d)
}

// scrape is the labeler's /metrics.
func scrape(t *testing.T, l *Labeler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	l.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}

// runLabeler starts a labeler of pod in namespace shop on a fake clock (step it with
// tick), against a census gateway serving census (switch it with sup.set). stop cancels
// it and checks it returned cleanly.
func runLabeler(t *testing.T, census string, client kubernetes.Interface, pod string, log *slog.Logger, tweak func(*Config)) (l *Labeler, sup *supervisor, clk *testingclock.FakeClock, stop func()) {
	t.Helper()
	sup = &supervisor{}
	sup.set(t, census)
	srv := httptest.NewServer(sup)
	sup.srv = srv
	t.Cleanup(srv.Close)
	cfg := Defaults()
	cfg.Gateway, cfg.PodName, cfg.Namespace, cfg.HealthListen = srv.URL, pod, "shop", "127.0.0.1:0"
	if tweak != nil {
		tweak(&cfg)
	}
	require.NoError(t, cfg.Validate()) // interval 1s, stale after 30s: on the fake clock
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clk = testingclock.NewFakeClock(time.Now())
	l = New(cfg, client, clk, log)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	return l, sup, clk, func() {
		cancel()
		require.NoError(t, <-done)
	}
}

func TestRoleFollowsCensus(t *testing.T) {
	t.Parallel()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "redis-1", Namespace: "shop", Labels: map[string]string{"app": "redis"}}}
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "redis-0", Namespace: "shop"}}
	client := fake.NewClientset(pod, other)
	var mu sync.Mutex
	var writes []string // "name: patch body", in order
	client.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.PatchAction)
		mu.Lock()
		writes = append(writes, p.GetName()+": "+string(p.GetPatch()))
		mu.Unlock()
		return false, nil, nil // let the tracker apply it
	})
	written := func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), writes...) }

	// At a 5 s interval, so the backoff's steps below are far apart from --stale-after.
	l, sup, clk, stop := runLabeler(t, "census_follower.json", client, "redis-1", nil, func(c *Config) { c.Interval = 5 * time.Second })
	cfg := l.cfg

	label := func(role string) string { return `redis-1: {"metadata":{"labels":{"habitat.sh/role":"` + role + `"}}}` }
	step := func() { tick(t, clk, sup, 2*cfg.Interval) } // past the interval and its 20% jitter
	require.Eventually(t, func() bool { return len(written()) == 1 }, 5*time.Second, time.Millisecond)
	require.Equal(t, []string{label("follower")}, written())
	for range 3 {
		step() // more reads of the same census: no more writes
	}
	require.Equal(t, 4, sup.readCount())
	require.Equal(t, []string{label("follower")}, written())

	sup.set(t, "census_election_in_progress.json")
	step()
	require.Equal(t, []string{label("follower"), label("none")}, written())
	sup.set(t, "census_leader.json")
	step() // the Lease (fence.go) is won, then the label written
	require.Eventually(t, func() bool { return len(written()) == 3 }, 5*time.Second, time.Millisecond)
	require.Equal(t, []string{label("follower"), label("none"), label("leader")}, written())
	require.True(t, l.censusOK.Load())
	lease, err := client.CoordinationV1().Leases("shop").Get(t.Context(), LeaseName("", "redis.default"), metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "redis-1", *lease.Spec.HolderIdentity)

	// Gateway down: the label stays "leader" until --stale-after, then becomes "none".
	sup.set(t, "")
	step() // 10s after the last good read
	require.False(t, l.censusOK.Load())
	tick(t, clk, sup, 15*time.Second) // 25s (the backoff's first step is at most 6s)
	require.Equal(t, []string{label("follower"), label("none"), label("leader")}, written(), "label dropped before --stale-after")
	tick(t, clk, sup, 10*time.Second) // 35s (its second at most 9s): stale
	require.Equal(t, []string{label("follower"), label("none"), label("leader"), label("none")}, written())

	stop()
	got, err := client.CoreV1().Pods("shop").Get(t.Context(), "redis-1", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"app": "redis", contract.LabelRole: "none"}, got.Labels)
	lease, err = client.CoordinationV1().Leases("shop").Get(t.Context(), LeaseName("", "redis.default"), metav1.GetOptions{})
	require.NoError(t, err)
	require.Empty(t, ptr.Deref(lease.Spec.HolderIdentity, ""), "the Lease is given up once the label is off")
	untouched, err := client.CoreV1().Pods("shop").Get(t.Context(), "redis-0", metav1.GetOptions{})
	require.NoError(t, err)
	require.Empty(t, untouched.Labels)
}

// A gateway that refuses connections is a Supervisor that is not running (its pod's
// 127.0.0.1:9631 has no listener): the leader label comes off at the next read, not after
// --stale-after, so a Service selecting the leader leaves a dead one at once. (An answer
// that fails, as above, keeps the label until --stale-after.)
func TestLeaderLabelOffWhenTheSupervisorIsGone(t *testing.T) {
	t.Parallel()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "redis-1", Namespace: "shop"}}
	client := fake.NewClientset(pod)
	l, sup, clk, stop := runLabeler(t, "census_leader.json", client, "redis-1", nil, nil)
	defer stop()
	role := func() string {
		p, err := client.CoreV1().Pods("shop").Get(t.Context(), "redis-1", metav1.GetOptions{})
		require.NoError(t, err)
		return p.Labels[contract.LabelRole]
	}
	require.Eventually(t, func() bool { return role() == contract.RoleLeader }, 5*time.Second, time.Millisecond)
	sup.srv.Close() // the Supervisor's process is gone: connection refused
	require.Eventually(t, clk.HasWaiters, 5*time.Second, time.Millisecond)
	clk.Step(2 * l.cfg.Interval) // one read, far before --stale-after
	require.Eventually(t, func() bool { return role() == contract.RoleNone }, 5*time.Second, time.Millisecond)
}

func TestKeepsExistingLabelWithoutWriting(t *testing.T) {
	t.Parallel()
	// A restarted leader's labeler: its pod is labelled and it still holds its Lease. It
	// renews the Lease at once and the label never blinks.
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: LeaseName("", "redis.default"), Namespace: "shop"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("redis-0"), LeaseDurationSeconds: ptr.To[int32](15),
			AcquireTime: &metav1.MicroTime{Time: time.Now()}, RenewTime: &metav1.MicroTime{Time: time.Now()}}}
	client := fake.NewClientset(lease, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "redis-0", Namespace: "shop", Labels: map[string]string{contract.LabelRole: "leader"}}})
	var patches atomic.Int32
	client.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { patches.Add(1); return false, nil, nil })
	l, sup, clk, stop := runLabeler(t, "census_leader.json", client, "redis-0", nil, nil)
	for range 3 {
		tick(t, clk, sup, 2*l.cfg.Interval)
	}
	require.GreaterOrEqual(t, sup.readCount(), 4) // and one more when the Lease is renewed
	require.True(t, l.censusOK.Load())
	require.Zero(t, patches.Load(), "a restart of the labeler rewrote an unchanged label")
	stop()
	require.EqualValues(t, 1, patches.Load(), "stopping, the leader's labeler takes its label off (then gives up the Lease)")
	got, err := client.CoreV1().Pods("shop").Get(t.Context(), "redis-0", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, contract.RoleNone, got.Labels[contract.LabelRole])
}

func TestPeerFile(t *testing.T) {
	t.Parallel()
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "redis-x", Namespace: "shop", Labels: map[string]string{contract.LabelRing: "main"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.12"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "redis-2"}},
			{Addresses: []string{"10.0.0.11"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "redis-1"}},
			{Addresses: []string{"10.0.0.10"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "redis-0"}},
			{Addresses: []string{"10.0.0.13"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "redis-3"}}, // unset ready counts as ready
		},
	}
	wire := slice.DeepCopy()
	slices := []discoveryv1.EndpointSlice{*wire}
	require.Equal(t, "10.0.0.10\n10.0.0.12\n10.0.0.13\n", PeerFile("redis-9", slices, 5))
	require.Equal(t, "10.0.0.12\n10.0.0.13\n", PeerFile("redis-0", slices, 5), "itself excluded")
	require.Equal(t, "10.0.0.10\n", PeerFile("redis-9", slices, 1))
	wire.AddressType = "IPv6"
	require.Empty(t, PeerFile("redis-9", []discoveryv1.EndpointSlice{*wire}, 5), "IPv4 only")
	require.Empty(t, PeerFile("redis-0", nil, 5))

	// Run keeps the file up to date from the watch, and /readyz turns ready once written.
	dir := t.TempDir()
	client := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "redis-9", Namespace: "shop"}})
	cfg := Defaults()
	cfg.Gateway, cfg.PodName, cfg.Namespace, cfg.HealthListen = "http://127.0.0.1:1", "redis-9", "shop", "127.0.0.1:0"
	cfg.Ring, cfg.PeerWatchFile = "main", filepath.Join(dir, "peers")
	require.NoError(t, cfg.Validate())
	l := New(cfg, client, testingclock.NewFakeClock(time.Now()), slog.New(slog.DiscardHandler))
	ready := func() int {
		w := httptest.NewRecorder()
		l.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return w.Code
	}
	require.Equal(t, http.StatusServiceUnavailable, ready())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = l.Run(ctx) }()
	read := func() string { b, _ := os.ReadFile(cfg.PeerWatchFile); return string(b) }
	require.Eventually(t, func() bool { return ready() == http.StatusOK }, 5*time.Second, 5*time.Millisecond)
	require.Empty(t, read(), "no members yet: an empty file, so a bootstrapping Supervisor starts alone")
	_, err := client.DiscoveryV1().EndpointSlices("shop").Create(t.Context(), slice, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return read() == "10.0.0.10\n10.0.0.12\n10.0.0.13\n" }, 5*time.Second, 5*time.Millisecond, "file: %q", read())
	other := slice.DeepCopy()
	other.Name, other.Labels = "other-ring", map[string]string{contract.LabelRing: "cache"}
	other.Endpoints = other.Endpoints[:1]
	other.Endpoints[0].Addresses = []string{"10.9.9.9"}
	_, err = client.DiscoveryV1().EndpointSlices("shop").Create(t.Context(), other, metav1.CreateOptions{})
	require.NoError(t, err)
	// Events arrive in order: once a later member of this ring is in the file, the other
	// ring's slice has been seen too, and must have been left out.
	later := slice.DeepCopy()
	later.Name = "redis-y"
	later.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.14"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "redis-4"}}}
	_, err = client.DiscoveryV1().EndpointSlices("shop").Create(t.Context(), later, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(read(), "10.0.0.14") }, 5*time.Second, 5*time.Millisecond, "file: %q", read())
	require.Equal(t, "10.0.0.10\n10.0.0.12\n10.0.0.13\n10.0.0.14\n", read(), "another ring's members leaked in")
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	c := Defaults()
	c.Gateway, c.StaleAfter, c.PeerWatchFile, c.MaxPeers = "127.0.0.1:9631", 500*time.Millisecond, "/x", 0
	require.EqualError(t, c.Validate(), strings.Join([]string{
		`--gateway "127.0.0.1:9631": want an http:// URL`,
		"--stale-after 500ms: want at least --interval (1s)",
		"--pod-name and --namespace are required (the webhook sets HABRING_POD_NAME and HABRING_POD_NAMESPACE from the downward API)",
		"--peer-watch-file needs --ring",
		"--max-peers 0: want at least 1",
	}, "\n"))
	c = Defaults()
	c.PodName, c.Namespace = "p", "ns"
	for _, ring := range []string{"main,habitat.sh/role", "Main", "-main", strings.Repeat("a", 64)} {
		c.Ring = ring
		require.EqualError(t, c.Validate(), fmt.Sprintf("--ring %q: want the ring's habitat.sh/ring, a DNS-1123 label", ring))
	}
	c.Ring = "main-2"
	require.NoError(t, c.Validate())
	c.LeaseDuration = 1500 * time.Millisecond // the Lease would say 1 s, renewed for 1 s
	require.EqualError(t, c.Validate(), "--lease-duration 1.5s: want whole seconds, at least 1s (a Lease says its term in seconds)")
}

// Fencing: the census says this pod leads and it wins the Lease, but another pod of the
// group (its address is in the census) still carries the leader label, as when that pod's
// labeler was killed or cut off from the API server: holding the Lease, this labeler takes
// that label off, then labels its own pod. A pod of another group labelled leader (its
// address unknown to the census) is left alone. Once labelled, it lists nobody per read.
func TestLeaderTakesAStaleLeaderLabelOff(t *testing.T) {
	t.Parallel()
	ringPod := func(name, ip, role string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop",
			Labels: map[string]string{contract.LabelRing: "main", contract.LabelRole: role}}, Status: corev1.PodStatus{PodIP: ip}}
	}
	client := fake.NewClientset(ringPod("redis-1", "10.244.1.11", ""), ringPod("redis-0", "10.244.3.13", contract.RoleLeader),
		ringPod("web-0", "10.244.9.9", contract.RoleLeader))
	var mu sync.Mutex
	var order []string // label writes and pod lists, in order
	client.PrependReactor("*", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		switch a := a.(type) {
		case k8stesting.PatchAction:
			order = append(order, a.GetName()+" "+string(a.GetPatch()))
		case k8stesting.ListAction:
			order = append(order, "list")
		}
		return false, nil, nil
	})
	seen := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(order) }
	l, sup, clk, stop := runLabeler(t, "census_leader.json", client, "redis-1", nil, func(c *Config) { c.Ring = "main" })
	role := func(name string) string {
		p, err := client.CoreV1().Pods("shop").Get(t.Context(), name, metav1.GetOptions{})
		require.NoError(t, err)
		return p.Labels[contract.LabelRole]
	}
	require.Eventually(t, func() bool { return l.fence.held("redis.default") }, 5*time.Second, time.Millisecond, "the Lease is won")
	require.Eventually(t, func() bool { return role("redis-1") == contract.RoleLeader }, 5*time.Second, time.Millisecond)
	assert.Equal(t, contract.RoleNone, role("redis-0"), "the stale leader label of the group")
	assert.Equal(t, contract.RoleLeader, role("web-0"), "another group's leader is not this labeler's business")
	label := func(pod, role string) string {
		return pod + ` {"metadata":{"labels":{"habitat.sh/role":"` + role + `"}}}`
	}
	writes := slices.DeleteFunc(seen(), func(s string) bool { return s == "list" })
	lists := len(seen()) - len(writes)
	fenced := writes
	if len(fenced) > 0 && fenced[0] == label("redis-1", "none") {
		// The Lease not won within acquireWait (a loaded machine; CI saw it): the first
		// decision is "none", and it is written, the pod having no role label yet.
		fenced = fenced[1:]
	}
	require.Equal(t, []string{label("redis-0", "none"), label("redis-1", "leader")}, fenced,
		"the other pod's label comes off before this one's goes on")
	for range 3 {
		tick(t, clk, sup, 2*l.cfg.Interval)
	}
	assert.Len(t, seen(), len(writes)+lists, "a labelled leader writes and lists nothing while the census stays the same")
	assert.Contains(t, scrape(t, l), "habring_labeler_stale_leader_labels_removed_total 1")
	assert.Contains(t, scrape(t, l), `habring_labeler_leader{group="redis.default"} 1`)
	assert.Contains(t, scrape(t, l), `habring_labeler_waiting{group="redis.default"} 0`)
	stop()
}

// A labeler whose Supervisor leads while another pod holds the group's Lease says it
// waits, in its metrics (the chart's HabringLabelerFenced alert).
func TestWaitingOnTheLeaseIsExported(t *testing.T) {
	t.Parallel()
	now := metav1.NewMicroTime(time.Now())
	client := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "redis-1", Namespace: "shop"}},
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: LeaseName("main", "redis.default"), Namespace: "shop"},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("redis-0"), LeaseDurationSeconds: ptr.To[int32](20), AcquireTime: &now, RenewTime: &now}})
	l, _, _, stop := runLabeler(t, "census_leader.json", client, "redis-1", nil, func(c *Config) { c.Ring = "main" })
	defer stop()
	require.Eventually(t, func() bool {
		return strings.Contains(scrape(t, l), `habring_labeler_waiting{group="redis.default"} 1`)
	}, 5*time.Second, 10*time.Millisecond)
	require.Contains(t, scrape(t, l), `habring_labeler_leader{group="redis.default"} 0`)
}

// Quorum visibility: members by health and the margin, from the upstream census examples.
// Dead members that never departed count in the total: 1 alive of 3 has no quorum.
func TestQuorumOf(t *testing.T) {
	t.Parallel()
	for file, want := range map[string]struct {
		q      Quorum
		margin int
	}{
		"census_leader.json":    {Quorum{Alive: 3}, 1},
		"census_no_quorum.json": {Quorum{Alive: 1, Confirmed: 2}, -1},
	} {
		q := QuorumOf(readCensus(t, file).Groups["redis.default"])
		require.Equal(t, want.q, q, file)
		require.Equal(t, want.margin, q.Margin(), file)
	}
	for _, tc := range []struct {
		q      Quorum
		margin int
	}{
		{Quorum{Alive: 5}, 2}, {Quorum{Alive: 4, Confirmed: 1}, 1}, {Quorum{Alive: 3, Confirmed: 1}, 0},
		{Quorum{Alive: 3, Confirmed: 2}, 0}, {Quorum{Alive: 2, Suspect: 1, Confirmed: 2}, -1}, {Quorum{Alive: 3, Departed: 9}, 1},
		{Quorum{Alive: 1}, 0},
	} {
		require.Equal(t, tc.margin, tc.q.Margin(), "%+v", tc.q)
	}
}

// The metrics carry the group's members by health and its margin, and the labeler says
// once that the quorum is at its edge.
func TestQuorumMetricsAndEdgeLog(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "redis-1", Namespace: "shop"}})
	var logs syncBuffer
	l, sup, clk, stop := runLabeler(t, "census_follower.json", client, "redis-1", slog.New(slog.NewTextHandler(&logs, nil)), nil)
	cfg := l.cfg
	scrape := func() string { return scrape(t, l) }
	tick(t, clk, sup, 2*cfg.Interval)
	require.Contains(t, scrape(), `habring_labeler_members{group="redis.default",health="alive"} 3`)
	require.Contains(t, scrape(), `habring_labeler_quorum_margin{group="redis.default"} 1`)
	require.Contains(t, scrape(), `habring_labeler_leader{group="redis.default"} 0`)
	sup.set(t, "census_no_quorum.json")
	for range 3 {
		tick(t, clk, sup, 2*cfg.Interval)
	}
	require.Contains(t, scrape(), `habring_labeler_members{group="redis.default",health="confirmed"} 2`)
	require.Contains(t, scrape(), `habring_labeler_quorum_margin{group="redis.default"} -1`)
	stop()
	require.Equal(t, 1, strings.Count(logs.String(), "quorum is at its edge"), "said once, not on every read:\n%s", logs.String())
	require.Equal(t, []string{"hab sup depart 2f6d8b0a4c1e4a7f9d2b6c8e0a3f5d71", "hab sup depart 7a9c2e4f61b84d0a8c3e5f7a9b1d3c5e"},
		DepartCommands(readCensus(t, "census_no_quorum.json").Groups["redis.default"]))
	require.Contains(t, logs.String(), "hab sup depart ", "the warning names the commands")
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The ring-joined condition, on a pod with that readiness gate: True while the Supervisor
// knows another alive member, False ("Alone") when the others are dead; only written when
// it changes. A bootstrap pod (admitted with no peers) counts as joined even alone.
func TestRingJoinedCondition(t *testing.T) {
	t.Parallel()
	for _, bootstrap := range []bool{false, true} {
		t.Run(fmt.Sprintf("bootstrap=%t", bootstrap), func(t *testing.T) {
			t.Parallel()
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "redis-1", Namespace: "shop",
				Annotations: map[string]string{contract.AnnotationStatus: contract.StatusInjected, contract.AnnotationPeers: "10.244.1.11",
					contract.AnnotationPeersReason: "1 live member(s)"}},
				Spec: corev1.PodSpec{ReadinessGates: []corev1.PodReadinessGate{{ConditionType: contract.ConditionRingJoined}}}}
			if bootstrap {
				pod.Annotations[contract.AnnotationPeers] = ""
				pod.Annotations[contract.AnnotationBootstrap] = contract.BootstrapTrue
			}
			client := fake.NewClientset(pod)
			var statusPatches atomic.Int32
			client.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() == "status" {
					statusPatches.Add(1)
				}
				return false, nil, nil
			})
			l, sup, clk, stop := runLabeler(t, "census_follower.json", client, "redis-1", nil, nil)
			cfg := l.cfg
			condition := func() (corev1.ConditionStatus, string) {
				p, err := client.CoreV1().Pods("shop").Get(t.Context(), "redis-1", metav1.GetOptions{})
				require.NoError(t, err)
				for _, c := range p.Status.Conditions {
					if c.Type == contract.ConditionRingJoined {
						return c.Status, c.Reason
					}
				}
				return "", ""
			}
			tick(t, clk, sup, 2*cfg.Interval)
			tick(t, clk, sup, 2*cfg.Interval)
			st, reason := condition()
			require.Equal(t, corev1.ConditionTrue, st)
			require.Equal(t, "Joined", reason)
			require.EqualValues(t, 1, statusPatches.Load(), "written once, not on every read")

			sup.set(t, "census_no_quorum.json") // the two others are dead (confirmed)
			tick(t, clk, sup, 2*cfg.Interval)
			st, reason = condition()
			if bootstrap {
				require.Equal(t, corev1.ConditionTrue, st)
				require.Equal(t, "Bootstrapping", reason)
			} else {
				require.Equal(t, corev1.ConditionFalse, st)
				require.Equal(t, "Alone", reason)
			}
			stop()
		})
	}
}

// What an operator wants to see is an Event on the labeler's own pod, as `kubectl describe
// pod` finds it: labelled leader, then, its Supervisor a follower, labelled follower; a
// request the API server denies, with the fix.
func TestEventsOnOwnPod(t *testing.T) {
	t.Parallel()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "redis-0", Namespace: "shop", UID: "uid-redis-0"}}
	client := fake.NewClientset(pod)
	var deny atomic.Bool
	client.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if deny.Load() {
			return true, nil, apierrors.NewForbidden(corev1.Resource("pods"), "redis-0", errors.New("RBAC: no RoleBinding"))
		}
		return false, nil, nil
	})
	events := func() []string {
		list, err := client.CoreV1().Events("shop").List(t.Context(), metav1.ListOptions{})
		require.NoError(t, err)
		var out []string
		for _, e := range list.Items {
			if e.InvolvedObject.UID == pod.UID && e.InvolvedObject.Kind == "Pod" && e.Source.Component == EventComponent {
				out = append(out, e.Type+" "+e.Reason+": "+e.Message)
			}
		}
		slices.Sort(out)
		return out
	}
	_, sup, clk, stop := runLabeler(t, "census_leader.json", client, "redis-0", nil, nil)
	defer stop()
	require.Eventually(t, func() bool {
		return slices.Contains(events(), "Normal HabringLeader: labelled leader of service group redis.default, holding the Lease habring--redis.default")
	}, 10*time.Second, 10*time.Millisecond, "%v", events())
	deny.Store(true)
	sup.set(t, "census_follower.json")
	require.Eventually(t, func() bool {
		clk.Step(time.Second)
		return slices.ContainsFunc(events(), func(e string) bool {
			return strings.HasPrefix(e, "Warning HabringDenied: role label update denied: ") && strings.Contains(e, "Fix: give the pod's service account the habring-labeler RoleBinding in shop")
		})
	}, 10*time.Second, 10*time.Millisecond, "%v", events())
	deny.Store(false)
	require.Eventually(t, func() bool {
		clk.Step(time.Second)
		return slices.Contains(events(), "Normal HabringFollower: labelled follower of service group redis.default")
	}, 10*time.Second, 10*time.Millisecond, "%v", events())
}

// A standalone group elects nothing: its members are exported, its quorum margin is not
// (it would only raise the chart's quorum alerts).
func TestStandaloneGroupHasNoQuorumMargin(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nginx-0", Namespace: "shop"}})
	l, _, _, stop := runLabeler(t, "census_standalone.json", client, "nginx-0", nil, nil)
	defer stop()
	require.Eventually(t, func() bool {
		return strings.Contains(scrape(t, l), `habring_labeler_members{group="nginx.default",health="alive"}`)
	},
		5*time.Second, 10*time.Millisecond)
	require.NotContains(t, scrape(t, l), "habring_labeler_quorum_margin{")
}
