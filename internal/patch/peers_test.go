package patch

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/habring/habring/contract"
)

func TestPeers(t *testing.T) {
	t.Parallel()
	sts := func(ordinal int) Workload {
		return Workload{Kind: KindStatefulSet, Name: "db", ServiceName: "db", Ordinal: ordinal}
	}
	deploy := Workload{Kind: KindDeployment, Name: "web", Ordinal: -1}
	ring := func(members ...contract.Member) contract.Ring {
		return contract.Ring{Members: members, StatefulSets: []contract.BootstrapSet{{Name: "db", ServiceName: "db", Replicas: 3, Ready: 3}}}
	}
	readyOf := func(n int32) contract.Ring {
		return contract.Ring{StatefulSets: []contract.BootstrapSet{{Name: "db", ServiceName: "db", Replicas: 3, Ready: n}}}
	}
	scope := Scope{Ring: "main", Namespace: "ns", ClusterDomain: "cluster.local"}
	name := func(i string) string { return "db-" + i + ".db.ns.svc.cluster.local" }
	tests := map[string]struct {
		pod       string
		w         Workload
		ring      contract.Ring
		max       int
		want      []string
		permanent bool
		wantErr   error
	}{
		"ordinal 0, nothing live: bootstrap": {pod: "db-0", w: sts(0), ring: ring(), permanent: true},
		"ordinal 0 re-created, others live": {pod: "db-0", w: sts(0), ring: ring(contract.Member{IP: "10.0.0.2", PodName: "db-2"}, contract.Member{IP: "10.0.0.1", PodName: "db-1"}),
			want: []string{"10.0.0.1", "10.0.0.2"}, permanent: true},
		"ordinal 2, nothing live: names of 0 and 1": {pod: "db-2", w: sts(2), ring: ring(), want: []string{name("0"), name("1")}, permanent: true},
		"ordinal 2, pod 1 live: its IP, then the name of 0": {pod: "db-2", w: sts(2), ring: ring(contract.Member{IP: "10.0.0.1", PodName: "db-1"}),
			want: []string{"10.0.0.1", name("0")}, permanent: true},
		"itself excluded by name": {pod: "db-1", w: sts(1), ring: ring(contract.Member{IP: "10.0.0.1", PodName: "db-1"}, contract.Member{IP: "10.0.0.0", PodName: "db-0"}),
			want: []string{"10.0.0.0"}, permanent: true},
		"statefulset members by ordinal, then others by name, duplicates once": {pod: "web-x", w: deploy,
			ring: ring(contract.Member{IP: "10.1.0.9", PodName: "web-b"}, contract.Member{IP: "10.0.0.10", PodName: "db-10"}, contract.Member{IP: "10.1.0.8", PodName: "web-a"}, contract.Member{IP: "10.0.0.2", PodName: "db-2"}, contract.Member{IP: "10.0.0.2", PodName: "db-2"}, contract.Member{IP: "10.2.0.1", PodName: ""}),
			want: []string{"10.0.0.2", "10.0.0.10", "10.2.0.1", "10.1.0.8", "10.1.0.9"}},
		"cap keeps the best":    {pod: "db-2", w: sts(2), ring: ring(contract.Member{IP: "10.0.0.1", PodName: "db-1"}), max: 1, want: []string{"10.0.0.1"}, permanent: true},
		"deployment, live ring": {pod: "", w: deploy, ring: ring(contract.Member{IP: "10.1.0.1", PodName: "web-a"}), want: []string{"10.1.0.1"}},
		"deployment, nothing live: the ring statefulset's names":         {pod: "", w: deploy, ring: ring(), want: []string{name("0"), name("1"), name("2")}},
		"deployment, nothing live, pod 0 ready: only names that resolve": {pod: "", w: deploy, ring: readyOf(1), want: []string{name("0")}},
		"deployment, nothing live, no pod ready yet: denied":             {pod: "", w: deploy, ring: readyOf(0), wantErr: ErrNoBootstrap},
		"deployment, nothing at all: denied":                             {pod: "", w: deploy, ring: contract.Ring{}, wantErr: ErrNoBootstrap},
		"unknown ordinal":                                                {pod: "db-x", w: sts(-1), ring: ring(), wantErr: errAny},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := Peers(tc.pod, tc.w, scope, tc.ring, tc.max)
			if tc.wantErr != nil {
				require.Error(t, err)
				if !errors.Is(tc.wantErr, errAny) {
					require.ErrorIs(t, err, tc.wantErr)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got.Peers)
			require.Equal(t, tc.permanent, got.Permanent)
			again, _ := Peers(tc.pod, tc.w, scope, tc.ring, tc.max)
			require.Equal(t, got, again, "not deterministic")
		})
	}
}

var errAny = errors.New("any error")

func TestOwnerOf(t *testing.T) {
	t.Parallel()
	ctrl := func(apiVersion, kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, Controller: new(true)}}
	}
	tests := map[string]struct {
		refs   []metav1.OwnerReference
		labels map[string]string
		want   Owner
		ok     bool
	}{
		"statefulset":           {refs: ctrl("apps/v1", "StatefulSet", "db"), want: Owner{KindStatefulSet, "db"}, ok: true},
		"deployment via hash":   {refs: ctrl("apps/v1", "ReplicaSet", "web-7f9c"), labels: map[string]string{"pod-template-hash": "7f9c"}, want: Owner{KindDeployment, "web"}, ok: true},
		"replicaset, no hash":   {refs: ctrl("apps/v1", "ReplicaSet", "web-7f9c")},
		"hash does not match":   {refs: ctrl("apps/v1", "ReplicaSet", "web-7f9c"), labels: map[string]string{"pod-template-hash": "abcd"}},
		"name is only the hash": {refs: ctrl("apps/v1", "ReplicaSet", "-7f9c"), labels: map[string]string{"pod-template-hash": "7f9c"}},
		"other group":           {refs: ctrl("example.com/v1", "StatefulSet", "db")},
		"job":                   {refs: ctrl("batch/v1", "Job", "j")},
		"not a controller":      {refs: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db"}}},
		"no owner":              {},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: tc.refs, Labels: tc.labels}}
			got, ok := OwnerOf(pod)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseSpec(t *testing.T) {
	t.Parallel()
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sup"}, {Name: "other"}}}}
	tests := map[string]struct {
		ann     map[string]string
		want    Spec
		wantKey string // the annotation a denial must name
	}{
		"ring only": {ann: map[string]string{contract.AnnotationRing: "main"}, want: Spec{Ring: "main", PeerMode: contract.PeerModeArgs}},
		"everything": {ann: map[string]string{contract.AnnotationRing: "main", contract.AnnotationTopology: "leader", contract.AnnotationGroup: "prod",
			contract.AnnotationBinds: "a:b.c, d:e.f@g,a:b.c", contract.AnnotationRingKeySecret: "k", contract.AnnotationGatewayAuthSecret: "g/tok",
			contract.AnnotationPeerMode: "watch-file", contract.AnnotationContainer: "other"},
			want: Spec{Ring: "main", Topology: "leader", Group: "prod", Binds: []string{"a:b.c", "d:e.f@g"},
				RingKey: &SecretRef{"k", contract.DefaultRingKeySecretKey}, GatewayAuth: &SecretRef{"g", "tok"},
				PeerMode: contract.PeerModeWatchFile, Container: "other", Labeler: true}},
		"labeler forced on":      {ann: map[string]string{contract.AnnotationRing: "main", contract.AnnotationLabeler: "enabled"}, want: Spec{Ring: "main", PeerMode: contract.PeerModeArgs, Labeler: true}},
		"empty ring":             {ann: map[string]string{contract.AnnotationRing: ""}, wantKey: contract.AnnotationRing},
		"ring with a newline":    {ann: map[string]string{contract.AnnotationRing: "main\n--peer=1.2.3.4"}, wantKey: contract.AnnotationRing},
		"group with a space":     {ann: map[string]string{contract.AnnotationRing: "main", contract.AnnotationGroup: "a b"}, wantKey: contract.AnnotationGroup},
		"group with $()":         {ann: map[string]string{contract.AnnotationRing: "main", contract.AnnotationGroup: "$(SECRET)"}, wantKey: contract.AnnotationGroup},
		"bind without group":     {ann: map[string]string{contract.AnnotationRing: "main", contract.AnnotationBinds: "a:b"}, wantKey: contract.AnnotationBinds},
		"peer mode":              {ann: map[string]string{contract.AnnotationRing: "main", contract.AnnotationPeerMode: "dns"}, wantKey: contract.AnnotationPeerMode},
		"labeler":                {ann: map[string]string{contract.AnnotationRing: "main", contract.AnnotationLabeler: "yes"}, wantKey: contract.AnnotationLabeler},
		"secret with a slash":    {ann: map[string]string{contract.AnnotationRing: "main", contract.AnnotationRingKeySecret: "a/b/c"}, wantKey: contract.AnnotationRingKeySecret},
		"huge value":             {ann: map[string]string{contract.AnnotationRing: "main", contract.AnnotationBinds: string(make([]byte, 5000))}, wantKey: contract.AnnotationBinds},
		"unknown container":      {ann: map[string]string{contract.AnnotationRing: "main", contract.AnnotationContainer: "nope"}, wantKey: contract.AnnotationContainer},
		"watch-file, no labeler": {ann: map[string]string{contract.AnnotationRing: "main", contract.AnnotationPeerMode: "watch-file", contract.AnnotationLabeler: "disabled"}, wantKey: contract.AnnotationLabeler},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseSpec(tc.ann, pod)
			if tc.wantKey != "" {
				var ae *AnnotationError
				require.ErrorAs(t, err, &ae)
				require.Equal(t, tc.wantKey, ae.Key)
				require.Contains(t, err.Error(), tc.wantKey)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	_, err := ParseSpec(map[string]string{}, pod)
	require.ErrorIs(t, err, ErrNotInRing)
}

// Bootstraps tells the labeler that its pod starts the ring (the ring-joined condition is
// True for it even alone), in both peer modes; a pod given peers does not.
func TestBootstraps(t *testing.T) {
	t.Parallel()
	scope := Scope{Ring: "main", Namespace: "ns", ClusterDomain: "cluster.local"}
	ring := contract.Ring{StatefulSets: []contract.BootstrapSet{{Name: "db", ServiceName: "db", Replicas: 3, Ready: 0}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "db"}}}}
	inj := NewInjector(Options{})
	admitted := func(plan Plan, spec Spec) *corev1.Pod {
		p, err := json.Marshal(inj.Mutate(pod, spec, plan))
		require.NoError(t, err)
		out, err := Apply(pod, p)
		require.NoError(t, err)
		return out
	}
	for _, mode := range []string{contract.PeerModeArgs, contract.PeerModeWatchFile} {
		spec := Spec{Ring: "main", PeerMode: mode, Labeler: true}
		first, err := Peers("db-0", Workload{Kind: KindStatefulSet, Name: "db", ServiceName: "db", Ordinal: 0}, scope, ring, 5)
		require.NoError(t, err)
		out := admitted(first, spec)
		require.True(t, contract.Bootstraps(out.Annotations), mode)
		second, err := Peers("db-1", Workload{Kind: KindStatefulSet, Name: "db", ServiceName: "db", Ordinal: 1}, scope, ring, 5)
		require.NoError(t, err)
		out = admitted(second, spec)
		require.False(t, contract.Bootstraps(out.Annotations), mode)
	}
	require.False(t, contract.Bootstraps(pod.Annotations), "not injected")
}
