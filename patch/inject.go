package patch

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/habring/habring/contract"
)

// Options are the webhook-wide settings of the mutation.
type Options struct {
	// MaxPeers caps the peer list (default DefaultMaxPeers when zero).
	MaxPeers int
	// ClusterDomain forms the stable names <pod>.<service>.<ns>.svc.<ClusterDomain>
	// (default DefaultClusterDomain when empty).
	ClusterDomain string
	// LabelerImage is the image of the labeler sidecar (habring itself).
	LabelerImage string
	// NativeSidecar puts the labeler in initContainers with restartPolicy Always
	// (Kubernetes 1.29+), so it starts before the Supervisor and stops after it.
	NativeSidecar bool
}

// Ways to run the labeler (the webhook's and render's --sidecar-mode).
const (
	SidecarNative    = "native"    // an init container with restartPolicy: Always (Kubernetes 1.29+)
	SidecarContainer = "container" // a regular container
)

// DefaultClusterDomain is the kubelet's default --cluster-domain.
const DefaultClusterDomain = "cluster.local"

// Result is a finished injection.
type Result struct {
	Pod   *corev1.Pod
	Plan  Plan
	Patch []jsonpatch.Operation
	// labeler is the labeler container Patch adds, built and encoded once for every pod
	// of the ring (WritePatch); nil when it adds none.
	labeler *built
}

// withDefaults fills the zero fields of o: the one place the mutation's defaults apply.
func (o Options) withDefaults() Options {
	if o.MaxPeers == 0 {
		o.MaxPeers = contract.DefaultMaxPeers
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = DefaultClusterDomain
	}
	return o
}

// Inject computes the peers of pod, created in namespace, and the pod as admitted. pod is
// left untouched. The patch is the difference between pod and the result as the Go types
// see them, so fields unknown to these types (a newer API server's) are neither removed
// nor reordered.
func Inject(pod *corev1.Pod, w Workload, s Spec, namespace string, ring contract.Ring, opts Options) (*Result, error) {
	opts = opts.withDefaults()
	scope := Scope{Ring: s.Ring, Namespace: namespace, ClusterDomain: opts.ClusterDomain}
	plan, err := Peers(pod.Name, w, scope, ring, opts.MaxPeers)
	if err != nil {
		return nil, err
	}
	out := Mutate(pod, s, plan, opts)
	ops, err := Diff(pod, out)
	if err != nil {
		return nil, err
	}
	res := &Result{Pod: out, Plan: plan, Patch: ops}
	if s.Labeler && !hasLabeler(pod) {
		res.labeler = sidecarOf(s, opts).built()
	}
	return res, nil
}

// Diff returns the JSON patch that turns from into to (see diffView for its scope).
//
// gomodules.xyz/jsonpatch computes it from both views encoded and decoded again as generic
// JSON, which was most of an admission's time. Its work is cut to what changed, with the
// same operations as a diff of the whole views: an element equal on both sides (same index)
// stands as an empty object on both, where the diff finds nothing; elements appended to a
// list (the labeler container, its volume) are "add" operations of the typed value at
// their index, or of the whole list when the pod had none: the operations the library
// gives for them, without encoding and decoding them twice.
func Diff(from, to *corev1.Pod) ([]jsonpatch.Operation, error) {
	var adds []jsonpatch.Operation
	var a, b diffView
	mapOps("/metadata/labels", from.Labels, to.Labels, &adds)
	mapOps("/metadata/annotations", from.Annotations, to.Annotations, &adds)
	a.Spec.Volumes, b.Spec.Volumes = shrink("/spec/volumes", true, from.Spec.Volumes, to.Spec.Volumes, &adds)
	a.Spec.InitContainers, b.Spec.InitContainers = shrink("/spec/initContainers", true, from.Spec.InitContainers, to.Spec.InitContainers, &adds)
	a.Spec.Containers, b.Spec.Containers = shrink("/spec/containers", false, from.Spec.Containers, to.Spec.Containers, &adds)
	a.Spec.ReadinessGates, b.Spec.ReadinessGates = shrink("/spec/readinessGates", true, from.Spec.ReadinessGates, to.Spec.ReadinessGates, &adds)
	if a.unchanged() && b.unchanged() && a.lengths() == b.lengths() {
		// Nothing left for the library: every element equal, or grown into adds.
		return sortOps(adds), nil
	}
	ab, err := json.Marshal(&a)
	if err != nil {
		return nil, fmt.Errorf("encode pod: %w", err)
	}
	bb, err := json.Marshal(&b)
	if err != nil {
		return nil, fmt.Errorf("encode mutated pod: %w", err)
	}
	ops, err := jsonpatch.CreatePatch(ab, bb)
	if err != nil {
		return nil, fmt.Errorf("diff pod: %w", err)
	}
	return sortOps(append(ops, adds...)), nil
}

// sortOps orders ops by path. The library walks Go maps, so sibling keys come out in
// random order; sorted by path (array indices as numbers), the patch is reproducible. It
// is only safe while no op removes an array element (removals must stay highest-index
// first), which Mutate never asks for, so in that case the library's order is kept.
func sortOps(ops []jsonpatch.Operation) []jsonpatch.Operation {
	if !slices.ContainsFunc(ops, func(op jsonpatch.Operation) bool { return op.Operation == "remove" }) {
		slices.SortStableFunc(ops, func(x, y jsonpatch.Operation) int { return comparePaths(x.Path, y.Path) })
	}
	return ops
}

// diffView is the part of a pod Mutate may change, with corev1.Pod's JSON names and
// omitempty rules, so a patch computed on it has the paths it would have on the whole pod.
// Diffing only this part skips what is most of a real pod's bytes (managedFields, owner
// references, status) and was a third of the admission's CPU time; the golden tests apply
// every patch to the whole input and compare whole pods, so a change Mutate made outside
// this view would fail them.
// Its lists hold what shrink leaves of them; labels and annotations are diffed by mapOps.
type diffView struct {
	Spec struct {
		Volumes        []any `json:"volumes,omitempty"`
		InitContainers []any `json:"initContainers,omitempty"`
		Containers     []any `json:"containers"`
		ReadinessGates []any `json:"readinessGates,omitempty"`
	} `json:"spec"`
}

// unchanged stands for a list element equal on both sides: {} on both, nothing to diff.
type unchanged struct{}

// unchanged reports whether every element of the view's lists is unchanged.
func (v *diffView) unchanged() bool {
	for _, l := range [][]any{v.Spec.Volumes, v.Spec.InitContainers, v.Spec.Containers, v.Spec.ReadinessGates} {
		for _, e := range l {
			if _, ok := e.(unchanged); !ok {
				return false
			}
		}
	}
	return true
}

// lengths are the view's list lengths, nil lists as -1 (encoded as null or left out).
func (v *diffView) lengths() [4]int {
	n := func(l []any) int {
		if l == nil {
			return -1
		}
		return len(l)
	}
	return [4]int{n(v.Spec.Volumes), n(v.Spec.InitContainers), n(v.Spec.Containers), n(v.Spec.ReadinessGates)}
}

// shrink returns what the generic diff needs of the list at path (omitEmpty: its JSON
// field is left out when empty): equal elements as unchanged, changed ones as they are;
// appended elements go to adds instead. A list that shrank is left whole to the library.
func shrink[T any](path string, omitEmpty bool, from, to []T, adds *[]jsonpatch.Operation) (fromView, toView []any) {
	whole := func(l []T) []any {
		if l == nil {
			return nil
		}
		out := make([]any, len(l))
		for i := range l {
			out[i] = &l[i]
		}
		return out
	}
	switch {
	case len(to) < len(from) || (len(from) == 0 && !omitEmpty):
		return whole(from), whole(to)
	case len(from) == 0:
		addTail(path, 0, reflect.ValueOf(&to).Elem(), adds)
		return nil, nil
	}
	fromView, toView = make([]any, len(from)), make([]any, len(from))
	for i := range from {
		fv, tv, ok := changedFields(path+"/"+strconv.Itoa(i), reflect.ValueOf(&from[i]).Elem(), reflect.ValueOf(&to[i]).Elem(), adds)
		switch {
		case !ok && reflect.DeepEqual(&from[i], &to[i]):
			fromView[i], toView[i] = unchanged{}, unchanged{}
		case !ok:
			fromView[i], toView[i] = &from[i], &to[i]
		case len(fv) == 0 && len(tv) == 0: // equal, or only grown lists (their adds are out)
			fromView[i], toView[i] = unchanged{}, unchanged{}
		default:
			fromView[i], toView[i] = fv, tv
		}
	}
	addTail(path, len(from), reflect.ValueOf(&to).Elem(), adds)
	return fromView, toView
}

// addTail puts in adds the operations the library's diff gives for the elements of list
// to from index n on: the whole list when the other side left it out of the JSON (n = 0:
// empty, and omitted), else each element at its index.
func addTail(path string, n int, to reflect.Value, adds *[]jsonpatch.Operation) {
	switch {
	case to.Len() <= n:
	case n == 0:
		*adds = append(*adds, jsonpatch.NewOperation("add", path, to.Addr().Interface()))
	default:
		for i := n; i < to.Len(); i++ {
			*adds = append(*adds, jsonpatch.NewOperation("add", path+"/"+strconv.Itoa(i), to.Index(i).Addr().Interface()))
		}
	}
}

// mapOps puts in ops what the library's diff gives for a string map at path whose JSON
// field is left out when empty (labels, annotations): the whole map added or removed when
// one side has none, else a remove, add or replace per key (keys escaped, in key order).
func mapOps(path string, from, to map[string]string, ops *[]jsonpatch.Operation) {
	switch {
	case len(from) == 0 && len(to) == 0:
		return
	case len(from) == 0:
		*ops = append(*ops, jsonpatch.NewOperation("add", path, to))
		return
	case len(to) == 0:
		*ops = append(*ops, jsonpatch.NewOperation("remove", path, nil))
		return
	}
	for _, k := range slices.Sorted(maps.Keys(from)) {
		if _, ok := to[k]; !ok {
			*ops = append(*ops, jsonpatch.NewOperation("remove", path+"/"+escapePointer(k), nil))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(to)) {
		v, had := from[k]
		switch {
		case !had:
			*ops = append(*ops, jsonpatch.NewOperation("add", path+"/"+escapePointer(k), to[k]))
		case v != to[k]:
			*ops = append(*ops, jsonpatch.NewOperation("replace", path+"/"+escapePointer(k), to[k]))
		}
	}
}

// changedFields views two values of one struct type at path by the fields that differ (a
// container whose args and env Mutate extended): each a map from the field's JSON name to
// its value, a field left out of a side where encoding/json would leave it out
// (omitempty, omitzero), so the diff finds the same operations as on the whole values. A list
// field that only grew is left out of both and its new elements go to adds, as for
// shrink's lists. ok is false for a type it cannot view so (not a struct, or with
// embedded fields).
func changedFields(path string, a, b reflect.Value, adds *[]jsonpatch.Operation) (av, bv map[string]any, ok bool) {
	fields, ok := jsonFieldsOf(a.Type())
	if !ok {
		return nil, nil, false
	}
	for _, f := range fields {
		x, y := a.Field(f.index), b.Field(f.index)
		if equal(x, y) {
			continue
		}
		xp, yp := x.Addr().Interface(), y.Addr().Interface() // pointers: no copy boxed
		if appended(path+"/"+escapePointer(f.name), f, x, y, adds) {
			continue
		}
		if av == nil {
			av, bv = map[string]any{}, map[string]any{}
		}
		if !f.omitted(x) {
			av[f.name] = xp
		}
		if !f.omitted(y) {
			bv[f.name] = yp
		}
	}
	return av, bv, true
}

// equal is reflect.DeepEqual of two addressable values of one type, without its cost for
// what most of a container's fields are: strings, booleans, numbers, nil pointers, nil
// or unequal-length slices.
func equal(x, y reflect.Value) bool {
	switch x.Kind() {
	case reflect.String:
		return x.String() == y.String()
	case reflect.Bool:
		return x.Bool() == y.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return x.Int() == y.Int()
	case reflect.Pointer, reflect.Map:
		if x.IsNil() || y.IsNil() {
			return x.IsNil() && y.IsNil()
		}
	case reflect.Slice:
		if x.IsNil() || y.IsNil() || x.Len() != y.Len() {
			return x.IsNil() && y.IsNil()
		}
	}
	return reflect.DeepEqual(x.Addr().Interface(), y.Addr().Interface())
}

// appended reports whether list y is list x with elements added at its end, and if so
// puts the operations that add them in adds: the whole list when x is left out of the
// JSON (empty, omitempty), else each new element at its index.
func appended(path string, f jsonField, x, y reflect.Value, adds *[]jsonpatch.Operation) bool {
	if x.Kind() != reflect.Slice || y.Len() <= x.Len() || (x.Len() == 0 && !f.omitted(x)) {
		return false
	}
	if x.Len() > 0 && !reflect.DeepEqual(x.Interface(), y.Slice(0, x.Len()).Interface()) {
		return false
	}
	addTail(path, x.Len(), y, adds)
	return true
}

// escapePointer escapes a JSON pointer segment (RFC 6901): ~ as ~0, / as ~1.
func escapePointer(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

type jsonField struct {
	name                string
	index               int
	omitEmpty, omitZero bool
}

// omitted: encoding/json leaves the field's value v out.
func (f jsonField) omitted(v reflect.Value) bool {
	return (f.omitEmpty && isEmptyJSON(v)) || (f.omitZero && v.IsZero())
}

var jsonFieldCache sync.Map // reflect.Type → []jsonField, or nil when it cannot be viewed

func jsonFieldsOf(t reflect.Type) ([]jsonField, bool) {
	if v, ok := jsonFieldCache.Load(t); ok {
		fs, _ := v.([]jsonField)
		return fs, fs != nil
	}
	var fields []jsonField
	if t.Kind() == reflect.Struct {
		fields = []jsonField{}
		for i := range t.NumField() {
			sf := t.Field(i)
			name, opts, _ := strings.Cut(sf.Tag.Get("json"), ",")
			options := strings.Split(opts, ",")
			if sf.Anonymous || slices.Contains(options, "inline") || slices.Contains(options, "string") {
				fields = nil // encoded in ways a field-by-field view would not reproduce
				break
			}
			if name == "-" || !sf.IsExported() {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			fields = append(fields, jsonField{name: name, index: i,
				omitEmpty: slices.Contains(options, "omitempty"), omitZero: slices.Contains(options, "omitzero")})
		}
	}
	jsonFieldCache.Store(t, fields)
	return fields, fields != nil
}

// isEmptyJSON is encoding/json's omitempty test.
func isEmptyJSON(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool:
		return !v.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return v.Uint() == 0
	case reflect.Float32, reflect.Float64:
		return v.Float() == 0
	case reflect.Interface, reflect.Pointer:
		return v.IsNil()
	}
	return false
}

// comparePaths orders JSON pointers segment by segment, numeric segments as numbers.
// It allocates nothing: it runs on every pair of operations.
func comparePaths(a, b string) int {
	for {
		as, arest, amore := strings.Cut(a, "/")
		bs, brest, bmore := strings.Cut(b, "/")
		if as != bs {
			if isIndex(as) && isIndex(bs) {
				return cmp.Or(cmp.Compare(len(as), len(bs)), strings.Compare(as, bs)) // no leading zeros in indices
			}
			return strings.Compare(as, bs)
		}
		switch {
		case !amore && !bmore:
			return 0
		case !amore:
			return -1
		case !bmore:
			return 1
		}
		a, b = arest, brest
	}
}

// isIndex: a JSON pointer segment that is an array index.
func isIndex(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// Injected reports whether the webhook already mutated pod (reinvocation, or a pod
// created from a copy of an injected one).
func Injected(pod *corev1.Pod) bool {
	return pod.Annotations[contract.AnnotationStatus] == contract.StatusInjected
}

// OptedOut reports whether pod carries habitat.sh/inject: disabled.
func OptedOut(pod *corev1.Pod) bool {
	return pod.Annotations[contract.AnnotationInject] == contract.InjectDisabled
}

// Mutate returns a copy of pod with plan and s applied, pod untouched; the copy shares
// what it does not change with pod, and the labeler container and its volume with every
// pod of the ring, so treat it as read only. Whatever the user already
// set (a flag, an env var, a container or volume of the same name) is kept as it is.
func Mutate(pod *corev1.Pod, s Spec, plan Plan, opts Options) *corev1.Pod {
	opts = opts.withDefaults()
	// Copied where it changes, shared where it does not (the result must be read only):
	// a deep copy of the whole pod was a tenth of an admission.
	out := *pod
	out.Labels, out.Annotations = maps.Clone(pod.Labels), maps.Clone(pod.Annotations)
	out.Spec.Containers = slices.Clone(pod.Spec.Containers)
	// Clipped: an append makes a new array, never writes past pod's lists into their spare capacity.
	out.Spec.InitContainers = slices.Clip(pod.Spec.InitContainers)
	out.Spec.Volumes = slices.Clip(pod.Spec.Volumes)
	out.Spec.ReadinessGates = slices.Clip(pod.Spec.ReadinessGates)
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	out.Labels[contract.LabelRing] = s.Ring

	idx := 0
	if s.Container != "" {
		idx = slices.IndexFunc(out.Spec.Containers, func(c corev1.Container) bool { return c.Name == s.Container })
	}
	pod.Spec.Containers[idx].DeepCopyInto(&out.Spec.Containers[idx]) // the one container that changes
	sup := &out.Spec.Containers[idx]
	userSet := supervisorArgs(sup, s, plan)

	addEnv(sup, corev1.EnvVar{Name: contract.PodIPEnv, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "status.podIP"}}})
	if s.RingKey != nil {
		addEnv(sup, secretEnv(contract.RingKeyEnv, s.RingKey))
	}
	if s.GatewayAuth != nil {
		addEnv(sup, secretEnv(contract.GatewayAuthEnv, s.GatewayAuth))
	}
	if s.PeerMode == contract.PeerModeWatchFile {
		addVolume(&out, peersVol)
		addMount(sup, corev1.VolumeMount{Name: contract.PeersVolume, MountPath: contract.PeersDir, ReadOnly: true})
	}
	if s.Labeler {
		addLabeler(&out, s, opts)
	}
	if s.JoinedGate && !slices.ContainsFunc(out.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool { return g.ConditionType == contract.ConditionRingJoined }) {
		out.Spec.ReadinessGates = append(out.Spec.ReadinessGates, corev1.PodReadinessGate{ConditionType: contract.ConditionRingJoined})
	}

	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[contract.AnnotationStatus] = contract.StatusInjected
	out.Annotations[contract.AnnotationPeers] = strings.Join(plan.Peers, ",")
	out.Annotations[contract.AnnotationBootstrap] = strconv.FormatBool(plan.Bootstrap)
	why := plan.Reason
	if s.PeerMode == contract.PeerModeWatchFile {
		why = "watch-file: the labeler keeps " + contract.PeerWatchFile + " filled with live members; " + why
	}
	if len(userSet) > 0 {
		why += "; already set by the pod, left alone: " + strings.Join(userSet, " ")
	}
	out.Annotations[contract.AnnotationPeersReason] = why
	return &out
}

// supervisorFlags are the flags habring may add, with the forms a user may have written
// them in; a user's own value always wins.
var supervisorFlags = map[string][]string{
	"--peer":            {"--peer"},
	"--peer-watch-file": {"--peer-watch-file"},
	"--permanent-peer":  {"--permanent-peer", "-I"},
	"--listen-gossip":   {"--listen-gossip"},
	"--sys-ip-address":  {"--sys-ip-address"},
	"--topology":        {"--topology", "-t"},
	"--group":           {"--group"},
	"--bind":            {"--bind"},
}

// supervisorArgs appends the Supervisor flags to c's args and returns the flags that were
// already there. Each flag is one "--name=value" word: Habitat's CLI takes --peer and --bind
// as multi-valued, so a bare "--peer a" followed by a package identifier would swallow it.
// Appending keeps a leading "run <pkg>"/"start <pkg>" in place; flag-only args are what
// images from `hab pkg export container` expect (their init.sh runs `hab sup run`).
func supervisorArgs(c *corev1.Container, s Spec, plan Plan) []string {
	set := map[string]bool{}
	for _, word := range slices.Concat(c.Command, c.Args) {
		for flag, forms := range supervisorFlags {
			for _, f := range forms {
				if word == f || strings.HasPrefix(word, f+"=") {
					set[flag] = true
				}
			}
		}
	}
	if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "HAB_LISTEN_GOSSIP" }) {
		set["--listen-gossip"] = true
	}
	var add []string
	// flag adds name=value for each value (nothing for none); boolFlag adds a bare flag.
	flag := func(name string, values ...string) {
		if !set[name] {
			for _, v := range values {
				add = append(add, name+"="+v)
			}
		}
	}
	boolFlag := func(name string) {
		if !set[name] {
			add = append(add, name)
		}
	}
	// --peer and --peer-watch-file are mutually exclusive: a user's choice of either wins.
	if !set["--peer"] && !set["--peer-watch-file"] {
		if s.PeerMode == contract.PeerModeWatchFile {
			flag("--peer-watch-file", contract.PeerWatchFile)
		} else {
			flag("--peer", plan.Peers...)
		}
	}
	if plan.Permanent {
		boolFlag("--permanent-peer")
	}
	flag("--listen-gossip", "0.0.0.0:"+strconv.Itoa(contract.GossipPort))
	flag("--sys-ip-address", "$("+contract.PodIPEnv+")")
	if s.Topology != "" {
		flag("--topology", s.Topology)
	}
	if s.Group != "" {
		flag("--group", s.Group)
	}
	flag("--bind", s.Binds...)
	c.Args = append(c.Args, add...)

	var userSet []string
	for name := range supervisorFlags {
		if set[name] {
			userSet = append(userSet, name)
		}
	}
	slices.Sort(userSet)
	return userSet
}

// Quantities parsed once: Mutate runs on every admission. (Copies are values: a
// Quantity's cached string is filled at parse time, so copies share no mutable state.)
var (
	labelerCPU         = resource.MustParse("10m")
	labelerMemory      = resource.MustParse("16Mi")
	labelerMemoryLimit = resource.MustParse("32Mi")
	peersSizeLimit     = resource.MustParse("1Mi")
)

// hasLabeler reports whether the pod already has a container named as the labeler.
func hasLabeler(pod *corev1.Pod) bool {
	named := func(c corev1.Container) bool { return c.Name == contract.LabelerContainerName }
	return slices.ContainsFunc(pod.Spec.Containers, named) || slices.ContainsFunc(pod.Spec.InitContainers, named)
}

func addLabeler(pod *corev1.Pod, s Spec, opts Options) {
	if hasLabeler(pod) {
		return
	}
	addVolume(pod, tokenVolume)
	c := sidecarOf(s, opts).built().container
	if opts.NativeSidecar {
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, c)
	} else {
		pod.Spec.Containers = append(pod.Spec.Containers, c)
	}
}

func secretEnv(name string, ref *SecretRef) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: ref.Name}, Key: ref.Key}}}
}

func addEnv(c *corev1.Container, e corev1.EnvVar) {
	if !slices.ContainsFunc(c.Env, func(x corev1.EnvVar) bool { return x.Name == e.Name }) {
		c.Env = append(c.Env, e)
	}
}

func addMount(c *corev1.Container, m corev1.VolumeMount) {
	if !slices.ContainsFunc(c.VolumeMounts, func(x corev1.VolumeMount) bool { return x.Name == m.Name || x.MountPath == m.MountPath }) {
		c.VolumeMounts = append(c.VolumeMounts, m)
	}
}

func addVolume(pod *corev1.Pod, v corev1.Volume) {
	if !slices.ContainsFunc(pod.Spec.Volumes, func(x corev1.Volume) bool { return x.Name == v.Name }) {
		pod.Spec.Volumes = append(pod.Spec.Volumes, v)
	}
}
