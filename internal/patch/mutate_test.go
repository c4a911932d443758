package patch_test

import (
	"encoding/json"
	"fmt"
	"testing"

	jsonpatch5 "github.com/evanphx/json-patch/v5"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/patch"
)

// Mutate's operations apply to every form in which JSON can say "none" (a list or map left
// out, empty, or null) and "some" (with keys that need escaping in a pointer): each form of
// "none" gives the same pod, whatever the pod had is kept, and what Mutate adds is all
// there (a second Mutate finds nothing more to add).
func TestMutateOperationsApply(t *testing.T) {
	t.Parallel()
	full := patch.Spec{Ring: "main", PeerMode: contract.PeerModeWatchFile, Labeler: true, JoinedGate: true,
		RingKey: &patch.SecretRef{Name: "ring-key", Key: "key"}, GatewayAuth: &patch.SecretRef{Name: "gw", Key: "auth"}}
	plan := patch.Plan{Peers: []string{"10.0.0.1"}, Reason: "1 live member(s)"}
	native := patch.NewInjector(patch.Options{NativeSidecar: true})
	leftOut := `{"metadata":{"name":"db-1"},"spec":{"containers":[{"name":"sup"}]}}`
	reference, _ := mutate(t, native, leftOut, full, plan)
	tests := map[string]struct {
		raw   string
		spec  patch.Spec
		inj   *patch.Injector
		check func(t *testing.T, after *corev1.Pod)
	}{
		"everything left out": {raw: leftOut},
		"everything empty": {raw: `{"metadata":{"name":"db-1","labels":{},"annotations":{}},
			"spec":{"containers":[{"name":"sup","args":[],"env":[],"volumeMounts":[]}],"initContainers":[],"volumes":[],"readinessGates":[]}}`},
		"everything null": {raw: `{"metadata":{"name":"db-1","labels":null,"annotations":null},
			"spec":{"containers":[{"name":"sup","args":null,"env":null,"volumeMounts":null}],"initContainers":null,"volumes":null,"readinessGates":null}}`},
		"some of everything": {raw: `{"metadata":{"name":"db-1","labels":{"a/b~c":"x","habitat.sh/ring":"old"},
			"annotations":{"habitat.sh/peers":"stale","x~y/z":"1"}},
			"spec":{"containers":[{"name":"sup","args":["run","core/redis"],"env":[{"name":"A","value":"1"}],
			"volumeMounts":[{"name":"data","mountPath":"/data"}]},{"name":"other"}],
			"initContainers":[{"name":"init"}],"volumes":[{"name":"data","emptyDir":{}}],"readinessGates":[{"conditionType":"x"}]}}`,
			check: func(t *testing.T, after *corev1.Pod) {
				require.Equal(t, map[string]string{"a/b~c": "x", contract.LabelRing: "main"}, after.Labels)
				require.Equal(t, "1", after.Annotations["x~y/z"])
				require.Equal(t, "10.0.0.1", after.Annotations[contract.AnnotationPeers])
				sup := after.Spec.Containers[0]
				require.Equal(t, []string{"run", "core/redis"}, sup.Args[:2])
				require.Equal(t, corev1.EnvVar{Name: "A", Value: "1"}, sup.Env[0])
				require.Equal(t, "data", sup.VolumeMounts[0].Name)
				require.Equal(t, corev1.Container{Name: "other"}, after.Spec.Containers[1])
				require.Equal(t, []string{"init", contract.LabelerContainerName}, names(after.Spec.InitContainers))
				require.Equal(t, "data", after.Spec.Volumes[0].Name)
				require.Equal(t, corev1.PodConditionType("x"), after.Spec.ReadinessGates[0].ConditionType)
			}},
		"a regular container sidecar, a container named": {
			raw:  `{"metadata":{"name":"db-1"},"spec":{"containers":[{"name":"app"},{"name":"sup","args":["--peer=x"]}]}}`,
			spec: patch.Spec{Ring: "main", PeerMode: contract.PeerModeArgs, Labeler: true, Container: "sup"},
			inj:  patch.NewInjector(patch.Options{NativeSidecar: false}),
			check: func(t *testing.T, after *corev1.Pod) {
				require.Equal(t, []string{"app", "sup", contract.LabelerContainerName}, names(after.Spec.Containers))
				require.Equal(t, corev1.Container{Name: "app"}, after.Spec.Containers[0])
				require.Equal(t, "--peer=x", after.Spec.Containers[1].Args[0])
				require.Equal(t, contract.PodIPEnv, after.Spec.Containers[1].Env[0].Name)
				require.Equal(t, []string{"--ring=main"}, after.Spec.Containers[2].Args)
				require.Empty(t, after.Spec.InitContainers)
			}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			spec, inj := tc.spec, tc.inj
			if spec.Ring == "" {
				spec, inj = full, native
			}
			after, p := mutate(t, inj, tc.raw, spec, plan)
			if tc.check == nil {
				require.Equal(t, reference, after, "patch %s", p)
			} else {
				tc.check(t, after)
			}
			for _, op := range inj.Mutate(after, spec, plan) {
				require.Equal(t, "/metadata/annotations/habitat.sh~1peers-reason", op.Path, "a second mutation changed %s; patch %s", op.Path, p)
			}
		})
	}
}

// mutate applies Mutate's patch for raw to raw itself, as the API server does, and to the
// pod as these types decode it, as render does; both give the pod it returns.
func mutate(t *testing.T, inj *patch.Injector, raw string, spec patch.Spec, plan patch.Plan) (*corev1.Pod, []byte) {
	t.Helper()
	var pod corev1.Pod
	require.NoError(t, json.Unmarshal([]byte(raw), &pod))
	p, err := json.Marshal(inj.Mutate(&pod, spec, plan))
	require.NoError(t, err)
	decoded, err := jsonpatch5.DecodePatch(p)
	require.NoError(t, err)
	patched, err := decoded.Apply([]byte(raw))
	require.NoError(t, err, "patch %s", p)
	var after corev1.Pod
	require.NoError(t, json.Unmarshal(patched, &after))
	typed, err := patch.Apply(&pod, p)
	require.NoError(t, err)
	require.Equal(t, typed, &after, "patch %s", p)
	return &after, p
}

func names(cs []corev1.Container) []string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return n
}

// Mutate reads the pod and changes nothing of it, and what it returns is its own:
// scribbling over everything one call's operations hold changes neither the pod given nor
// another call's patch, for a pod that lacks every list and map Mutate adds to (values
// added whole) and one that has them all (values added one by one).
func TestMutateSharesNothing(t *testing.T) {
	t.Parallel()
	spec := patch.Spec{Ring: "main", PeerMode: contract.PeerModeWatchFile, Labeler: true, JoinedGate: true,
		GatewayAuth: &patch.SecretRef{Name: "gw", Key: "auth"}}
	plan := patch.Plan{Peers: []string{"10.0.0.1"}, Reason: "1 live member(s)"}
	inj := patch.NewInjector(patch.Options{LabelerImage: "habring", NativeSidecar: true})
	pods := map[string]*corev1.Pod{
		"lacking all": {Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sup"}}}},
		"having all": {ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"c": "d"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sup", Args: make([]string, 1, 10),
				Env: []corev1.EnvVar{{Name: "E"}}, VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}}},
				InitContainers: []corev1.Container{{Name: "init"}}, Volumes: []corev1.Volume{{Name: "v"}},
				ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "x"}}}},
	}
	for name, pod := range pods {
		before := pod.DeepCopy()
		want, err := json.Marshal(inj.Mutate(pod, spec, plan))
		require.NoError(t, err)

		first := inj.Mutate(pod, spec, plan)
		for _, op := range first {
			scribble(op.Value)
		}

		require.Equal(t, before, pod, "%s: the pod given", name)
		again, err := json.Marshal(inj.Mutate(pod, spec, plan))
		require.NoError(t, err)
		require.JSONEq(t, string(want), string(again), "%s: another call's patch", name)
	}
}

// scribble changes in place whatever a holder of v could reach and change.
func scribble(v any) {
	switch v := v.(type) {
	case json.Marshaler: // the values every pod shares: their bytes
		if b, err := v.MarshalJSON(); err == nil {
			for i := range b {
				b[i] = 'x'
			}
		}
	case []any:
		for _, e := range v {
			scribble(e)
		}
	case []string:
		for i := range v {
			v[i] = "x"
		}
	case map[string]string:
		for k := range v {
			v[k] = "x"
		}
	case corev1.EnvVar:
		if f := v.ValueFrom.FieldRef; f != nil {
			f.FieldPath = "x"
		}
		if r := v.ValueFrom.SecretKeyRef; r != nil {
			r.Name, r.Key = "x", "x"
		}
	case corev1.Volume:
		v.EmptyDir.Medium = "x"
		v.EmptyDir.SizeLimit.Add(resource.MustParse("1Gi"))
	case corev1.VolumeMount, corev1.PodReadinessGate, string: // values: nothing to reach
	default:
		panic(fmt.Sprintf("scribble: an operation holds a %T; teach scribble to change it", v))
	}
}
