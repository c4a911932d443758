package patch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/go-openapi/jsonpointer"
	corev1 "k8s.io/api/core/v1"
)

// Operation is one JSON patch operation (RFC 6902). habring only writes "add" and
// "replace", and always with a value. Not gomodules.xyz/jsonpatch's Operation, which would
// do: its MarshalJSON marshals each operation on its own inside the outer json.Marshal,
// which then re-scans every operation's bytes to compact them. That was a third of a
// typical admission (profiled 2026-12-04); a plain struct is marshalled in one pass.
type Operation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// mutation writes the JSON patch that changes a pod as the API server sent it. It reads
// the pod and never changes it: the patch is the whole result, and the pod as admitted is
// the patch applied (Apply). Mutate only adds and sets: no operation removes anything, so
// none moves an index another one relies on.
type mutation struct {
	pod *corev1.Pod
	ops []Operation
	// added counts the elements this mutation appended to each list, by path: the pod's
	// own lists do not grow.
	added map[string]int
}

func op(o, path string, v any) Operation { return Operation{Op: o, Path: path, Value: v} }

// appendTo writes the operation that appends v to the list at path, which held have
// elements in the pod: a list that is empty or absent is added whole as [v] (there is no
// end of an absent list to add to; an "add" of a member that exists, an explicit [] or
// null, replaces it), else v is added at its end ("-", RFC 6902 section 4.1). It returns
// v's index.
func (m *mutation) appendTo(path string, have int, v any) int {
	n := have + m.added[path]
	switch e, shared := v.(encoded); {
	case n == 0 && shared:
		m.ops = append(m.ops, op("add", path, encoded{json: e.list}))
	case n == 0:
		m.ops = append(m.ops, op("add", path, []any{v}))
	default:
		m.ops = append(m.ops, op("add", path+"/-", v))
	}
	m.added[path]++
	return n
}

// setKeys sets the keys of kv in the string map at path, mp as the pod has it (labels,
// annotations): the map added whole when the pod has none or an empty one, else each key
// added or replaced, in key order. A key that already holds its value is left alone. Keys
// are escaped as RFC 6901 says (~ as ~0, / as ~1) by go-openapi's jsonpointer: neither
// JSON patch library exports its escaper.
func (m *mutation) setKeys(path string, mp, kv map[string]string) {
	if len(mp) == 0 {
		m.ops = append(m.ops, op("add", path, kv))
		return
	}
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		old, had := mp[k]
		switch {
		case had && old == kv[k]:
			continue
		case had:
			m.ops = append(m.ops, op("replace", path+"/"+jsonpointer.Escape(k), kv[k]))
		default:
			m.ops = append(m.ops, op("add", path+"/"+jsonpointer.Escape(k), kv[k]))
		}
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
	if len(c.Args) == 0 {
		m.ops = append(m.ops, op("add", containerPath(i)+"/args", args))
		return
	}
	m.ops = append(m.ops, op("replace", containerPath(i)+"/args", slices.Concat(c.Args, args)))
}

// addEnv gives container i the variable e unless it has one of that name.
func (m *mutation) addEnv(i int, e corev1.EnvVar) {
	c := &m.pod.Spec.Containers[i]
	if !slices.ContainsFunc(c.Env, func(x corev1.EnvVar) bool { return x.Name == e.Name }) {
		m.appendTo(containerPath(i)+"/env", len(c.Env), e)
	}
}

// addMount gives container i the mount vm unless it mounts something of that name or at
// that path.
func (m *mutation) addMount(i int, vm corev1.VolumeMount) {
	c := &m.pod.Spec.Containers[i]
	if !slices.ContainsFunc(c.VolumeMounts, func(x corev1.VolumeMount) bool { return x.Name == vm.Name || x.MountPath == vm.MountPath }) {
		m.appendTo(containerPath(i)+"/volumeMounts", len(c.VolumeMounts), vm)
	}
}

// addVolume gives the pod the volume v, named name, unless it has one of that name.
func (m *mutation) addVolume(name string, v any) {
	if !slices.ContainsFunc(m.pod.Spec.Volumes, func(x corev1.Volume) bool { return x.Name == name }) {
		m.appendTo("/spec/volumes", len(m.pod.Spec.Volumes), v)
	}
}

// addReadinessGate gives the pod the readiness gate of condition t unless it has one.
func (m *mutation) addReadinessGate(t corev1.PodConditionType) {
	if !slices.ContainsFunc(m.pod.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool { return g.ConditionType == t }) {
		m.appendTo("/spec/readinessGates", len(m.pod.Spec.ReadinessGates), corev1.PodReadinessGate{ConditionType: t})
	}
}

// encoded is a value marshalled once, when an Injector is made; every patch that carries
// it copies its bytes (encoding/json copies what a Marshaler returns). Its fields are
// unexported so that no caller holding an Operation can change what every pod shares.
type encoded struct {
	json []byte
	list []byte // the list of this value alone, [json], for a list the pod lacks
}

// MarshalJSON returns a copy: encodePatch reads e.json itself, and a caller holding an
// Operation from Mutate must not be able to change what every pod shares.
func (e encoded) MarshalJSON() ([]byte, error) {
	if len(e.json) == 0 {
		return nil, errNotMade
	}
	return bytes.Clone(e.json), nil
}

// errNotMade is the error of an Injector not made by NewInjector.
var errNotMade = errors.New("patch: the Injector was not made by NewInjector")

// encode encodes v, a value of habring's own making: API types whose only Marshalers
// (Quantity, IntOrString) cannot fail, so an error is a bug here, not bad input.
func encode(v any) encoded {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("patch: encode %T: %v", v, err))
	}
	return encoded{json: b, list: slices.Concat([]byte("["), b, []byte("]"))}
}

// encodePatch is json.Marshal(ops), byte for byte, without reading the encoded values
// again: encoding/json validates and compacts whatever a Marshaler returns, and doing that
// to the shared labeler container (1.6 KB) on every admission was 5 µs of a typical one's
// 37 (profiled 2026-12-04). Those bytes came from json.Marshal when NewInjector made them.
func encodePatch(ops []Operation) ([]byte, error) {
	if len(ops) == 0 {
		return json.Marshal(ops) // null or [], as json.Marshal says them
	}
	var b bytes.Buffer
	size := 2
	for i := range ops { // grown once: a typical pod's patch is 2.8 KB
		size += 256
		if v, shared := ops[i].Value.(encoded); shared {
			size += len(v.json)
		}
	}
	b.Grow(size)
	enc := json.NewEncoder(&b) // escapes HTML as json.Marshal does; ends each value with '\n'
	b.WriteByte('[')
	for i := range ops {
		if i > 0 {
			b.WriteByte(',')
		}
		v, shared := ops[i].Value.(encoded)
		if shared && len(v.json) == 0 {
			return nil, errNotMade
		}
		if !shared {
			if err := enc.Encode(&ops[i]); err != nil {
				return nil, err
			}
			b.Truncate(b.Len() - 1)
			continue
		}
		// The operation with a null value, cut before the null: {"op":…,"path":…,"value":
		if err := enc.Encode(&Operation{Op: ops[i].Op, Path: ops[i].Path}); err != nil {
			return nil, err
		}
		b.Truncate(b.Len() - len("null}\n"))
		b.Write(v.json)
		b.WriteByte('}')
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}
