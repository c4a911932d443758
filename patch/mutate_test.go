package patch_test

import (
	"encoding/json"
	"testing"

	jsonpatch5 "github.com/evanphx/json-patch/v5"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/patch"
)

// Mutate's operations apply to every form in which JSON can say "none" (a list or map left
// out, empty, or null) and "some" (with keys that need escaping in a pointer), and give the
// pod Mutate returns.
func TestMutateOperationsApply(t *testing.T) {
	t.Parallel()
	full := patch.Spec{Ring: "main", PeerMode: contract.PeerModeWatchFile, Labeler: true, JoinedGate: true,
		RingKey: &patch.SecretRef{Name: "ring-key", Key: "key"}, GatewayAuth: &patch.SecretRef{Name: "gw", Key: "auth"}}
	plan := patch.Plan{Peers: []string{"10.0.0.1"}, Reason: "1 live member(s)"}
	tests := map[string]struct {
		raw  string
		spec patch.Spec
		opts patch.Options
	}{
		"everything left out": {raw: `{"metadata":{"name":"db-1"},"spec":{"containers":[{"name":"sup"}]}}`},
		"everything empty": {raw: `{"metadata":{"name":"db-1","labels":{},"annotations":{}},
			"spec":{"containers":[{"name":"sup","args":[],"env":[],"volumeMounts":[]}],"initContainers":[],"volumes":[],"readinessGates":[]}}`},
		"everything null": {raw: `{"metadata":{"name":"db-1","labels":null,"annotations":null},
			"spec":{"containers":[{"name":"sup","args":null,"env":null,"volumeMounts":null}],"initContainers":null,"volumes":null,"readinessGates":null}}`},
		"some of everything": {raw: `{"metadata":{"name":"db-1","labels":{"a/b~c":"x","habitat.sh/ring":"old"},
			"annotations":{"habitat.sh/peers":"stale","x~y/z":"1"}},
			"spec":{"containers":[{"name":"sup","args":["run","core/redis"],"env":[{"name":"A","value":"1"}],
			"volumeMounts":[{"name":"data","mountPath":"/data"}]},{"name":"other"}],
			"initContainers":[{"name":"init"}],"volumes":[{"name":"data","emptyDir":{}}],"readinessGates":[{"conditionType":"x"}]}}`},
		"a regular container sidecar, a container named": {
			raw:  `{"metadata":{"name":"db-1"},"spec":{"containers":[{"name":"app"},{"name":"sup","args":["--peer=x"]}]}}`,
			spec: patch.Spec{Ring: "main", PeerMode: contract.PeerModeArgs, Labeler: true, Container: "sup"},
			opts: patch.Options{NativeSidecar: false}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			spec, opts := tc.spec, tc.opts
			if spec.Ring == "" {
				spec, opts = full, patch.Options{NativeSidecar: true}
			}
			var pod corev1.Pod
			require.NoError(t, json.Unmarshal([]byte(tc.raw), &pod))
			out, ops := patch.Mutate(&pod, spec, plan, opts)
			p, err := json.Marshal(ops)
			require.NoError(t, err)
			decoded, err := jsonpatch5.DecodePatch(p)
			require.NoError(t, err)
			patched, err := decoded.Apply([]byte(tc.raw))
			require.NoError(t, err, "patch %s", p)
			var after corev1.Pod
			require.NoError(t, json.Unmarshal(patched, &after))
			require.Equal(t, out, &after, "patch %s", p)
		})
	}
}

// What Mutate returns is its own: changing one result changes neither the pod given, nor
// the operations, nor the result of another call.
func TestMutateSharesNothing(t *testing.T) {
	t.Parallel()
	spec := patch.Spec{Ring: "main", PeerMode: contract.PeerModeWatchFile, Labeler: true, GatewayAuth: &patch.SecretRef{Name: "gw", Key: "auth"}}
	plan := patch.Plan{Peers: []string{"10.0.0.1"}, Reason: "1 live member(s)"}
	opts := patch.Options{LabelerImage: "habring", NativeSidecar: true}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sup", Args: make([]string, 1, 10)}}}}
	before := pod.DeepCopy()

	first, ops := patch.Mutate(pod, spec, plan, opts)
	opsJSON, err := json.Marshal(ops)
	require.NoError(t, err)
	second, _ := patch.Mutate(pod, spec, plan, opts)
	want := second.DeepCopy()

	// Scribble over everything of the first result that could be shared.
	first.Labels["x"], first.Annotations["x"] = "x", "x"
	sup, lab := &first.Spec.Containers[0], &first.Spec.InitContainers[0]
	sup.Args[0], sup.Args[len(sup.Args)-1] = "x", "x"
	sup.Env[0].ValueFrom.FieldRef.FieldPath = "x"
	sup.VolumeMounts[0].MountPath = "x"
	lab.Args[0], lab.Env[0].ValueFrom.FieldRef.FieldPath = "x", "x"
	lab.Env[len(lab.Env)-1].ValueFrom.SecretKeyRef.Name = "x"
	lab.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("9")
	lab.SecurityContext.Capabilities.Drop[0] = "x"
	*lab.RestartPolicy, *lab.SecurityContext.RunAsUser = "x", 1
	for i := range first.Spec.Volumes {
		v := &first.Spec.Volumes[i]
		if v.EmptyDir != nil {
			v.EmptyDir.SizeLimit.Add(resource.MustParse("1Gi"))
			v.EmptyDir.Medium = "x"
		}
		if v.Projected != nil {
			*v.Projected.DefaultMode = 0
			*v.Projected.Sources[0].ServiceAccountToken.ExpirationSeconds = 1
			v.Projected.Sources[1].ConfigMap.Items[0].Key = "x"
		}
	}
	first.Spec.Volumes = append(first.Spec.Volumes[:0], corev1.Volume{Name: "x"})

	require.Equal(t, before, pod, "the pod given")
	after, err := json.Marshal(ops)
	require.NoError(t, err)
	require.JSONEq(t, string(opsJSON), string(after), "the operations")
	require.Equal(t, want, second, "another call's result")
	third, _ := patch.Mutate(pod, spec, plan, opts)
	require.Equal(t, want, third, "a later call's result")
}
