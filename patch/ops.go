package patch

import (
	"maps"
	"slices"
	"strconv"

	"github.com/go-openapi/jsonpointer"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
)

// mutation is a pod being changed and the JSON patch that makes the same changes to the
// pod as the API server sent it. Each helper changes the Go value and writes down the
// operation that does it, so the patch is what Mutate did, at paths that exist in the raw
// object whatever fields the Go types do not know. Mutate only adds and sets: no helper
// removes anything, so no operation moves an index another one relies on.
type mutation struct {
	pod *corev1.Pod
	ops []jsonpatch.Operation
}

// appendOp is the operation that appends v to the list at path, which holds n elements:
// a list that is empty or absent is added whole as [v] (there is no end of an absent list
// to add to; an "add" of a member that exists, an explicit [] or null, replaces it), else
// v is added at its end ("-", RFC 6902 section 4.1).
func appendOp(path string, n int, v any) jsonpatch.Operation {
	if n == 0 {
		return jsonpatch.NewOperation("add", path, []any{v})
	}
	return jsonpatch.NewOperation("add", path+"/-", v)
}

// appendTo appends v to *list, the list at path, and records the operation; opValue is v
// as the patch carries it, a copy that shares nothing with the pod.
func appendTo[T any](m *mutation, path string, list *[]T, v T, opValue any) {
	m.ops = append(m.ops, appendOp(path, len(*list), opValue))
	*list = append(*list, v)
}

// setKeys sets the keys of kv in *mp, the string map at path (labels, annotations): the
// map added whole when the pod has none or an empty one, else each key added or replaced,
// in key order. A key that already holds its value is left alone. Keys are escaped as
// RFC 6901 says (~ as ~0, / as ~1) by go-openapi's jsonpointer: neither JSON patch
// library exports its escaper.
func (m *mutation) setKeys(path string, mp *map[string]string, kv map[string]string) {
	if len(*mp) == 0 {
		m.ops = append(m.ops, jsonpatch.NewOperation("add", path, maps.Clone(kv)))
		*mp = maps.Clone(kv)
		return
	}
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		old, had := (*mp)[k]
		switch {
		case had && old == kv[k]:
			continue
		case had:
			m.ops = append(m.ops, jsonpatch.NewOperation("replace", path+"/"+jsonpointer.Escape(k), kv[k]))
		default:
			m.ops = append(m.ops, jsonpatch.NewOperation("add", path+"/"+jsonpointer.Escape(k), kv[k]))
		}
		(*mp)[k] = kv[k]
	}
}

func containerPath(i int) string { return "/spec/containers/" + strconv.Itoa(i) }

// appendArgs appends args to container i's args, in one operation: the whole list
// replaced when the container had args, added when it had none.
func (m *mutation) appendArgs(i int, args []string) {
	if len(args) == 0 {
		return
	}
	c := &m.pod.Spec.Containers[i]
	op := "replace"
	if len(c.Args) == 0 {
		op = "add"
	}
	c.Args = append(c.Args, args...)
	m.ops = append(m.ops, jsonpatch.NewOperation(op, containerPath(i)+"/args", slices.Clone(c.Args)))
}

// addEnv gives container i the variable e unless it has one of that name.
func (m *mutation) addEnv(i int, e corev1.EnvVar) {
	c := &m.pod.Spec.Containers[i]
	if !slices.ContainsFunc(c.Env, func(x corev1.EnvVar) bool { return x.Name == e.Name }) {
		appendTo(m, containerPath(i)+"/env", &c.Env, e, e.DeepCopy())
	}
}

// addMount gives container i the mount vm unless it mounts something of that name or at
// that path.
func (m *mutation) addMount(i int, vm corev1.VolumeMount) {
	c := &m.pod.Spec.Containers[i]
	if !slices.ContainsFunc(c.VolumeMounts, func(x corev1.VolumeMount) bool { return x.Name == vm.Name || x.MountPath == vm.MountPath }) {
		appendTo(m, containerPath(i)+"/volumeMounts", &c.VolumeMounts, vm, vm.DeepCopy())
	}
}

// addVolume gives the pod the volume v unless it has one of that name.
func (m *mutation) addVolume(v corev1.Volume) {
	if !slices.ContainsFunc(m.pod.Spec.Volumes, func(x corev1.Volume) bool { return x.Name == v.Name }) {
		appendTo(m, "/spec/volumes", &m.pod.Spec.Volumes, v, v.DeepCopy())
	}
}

// addContainer appends c to the pod's containers, or to its init containers with init.
func (m *mutation) addContainer(c corev1.Container, init bool) {
	if init {
		appendTo(m, "/spec/initContainers", &m.pod.Spec.InitContainers, c, c.DeepCopy())
	} else {
		appendTo(m, "/spec/containers", &m.pod.Spec.Containers, c, c.DeepCopy())
	}
}

// addReadinessGate gives the pod the readiness gate of condition t unless it has one.
func (m *mutation) addReadinessGate(t corev1.PodConditionType) {
	if !slices.ContainsFunc(m.pod.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool { return g.ConditionType == t }) {
		g := corev1.PodReadinessGate{ConditionType: t}
		appendTo(m, "/spec/readinessGates", &m.pod.Spec.ReadinessGates, g, g)
	}
}
