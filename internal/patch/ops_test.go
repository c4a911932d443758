package patch

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

// encodePatch gives json.Marshal's bytes whatever the operations hold: HTML and the
// characters JavaScript reads as line ends (escaped by both), values encoded once (as
// values and as the list of one), a nil value, and no operations at all.
func TestEncodePatch(t *testing.T) {
	t.Parallel()
	shared := encode(corev1.Container{Name: "<c>&\u2028", Image: "i"})
	tests := map[string][]Operation{
		"none":  nil,
		"empty": {},
		"plain": {op("add", "/metadata/annotations/a~1b", "<x> & \u2028\u2029 \"q\""), op("replace", "/spec/containers/0/args", []string{"--a=<b>"})},
		"shared": {op("add", "/spec/initContainers", encoded{json: shared.list}), op("add", "/spec/initContainers/-", shared),
			op("add", "/spec/initContainers/1/args", []string{"x"})},
		"nil value": {op("add", "/metadata/labels/x", nil), op("add", "/spec/containers/-", shared)},
	}
	for name, ops := range tests {
		want, err := json.Marshal(ops)
		require.NoError(t, err, name)
		got, err := encodePatch(ops)
		require.NoError(t, err, name)
		require.Equal(t, string(want), string(got), name)
	}
}

// An Injector not made by NewInjector fails to encode, and says so, rather than sending
// a patch with an empty value.
func TestZeroInjectorFails(t *testing.T) {
	t.Parallel()
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "sup"}}, Volumes: []corev1.Volume{{Name: "v"}}}}
	_, err := encodePatch(new(Injector).Mutate(pod, Spec{Ring: "main", Labeler: true}, Plan{}))
	require.ErrorIs(t, err, errNotMade)
	_, err = json.Marshal(new(Injector).Mutate(pod, Spec{Ring: "main", Labeler: true}, Plan{}))
	require.ErrorIs(t, err, errNotMade)
}
