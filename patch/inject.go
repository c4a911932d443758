package patch

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
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

// DefaultMaxPeers is how many peers a pod is given when Options.MaxPeers is zero: enough
// that one stale or restarting member does not strand a joining Supervisor.
const DefaultMaxPeers = 5

// DefaultClusterDomain is the kubelet's default --cluster-domain.
const DefaultClusterDomain = "cluster.local"

// Result is a finished injection.
type Result struct {
	Pod   *corev1.Pod
	Plan  Plan
	Patch []jsonpatch.Operation
}

// withDefaults fills the zero fields of o: the one place the mutation's defaults apply.
func (o Options) withDefaults() Options {
	if o.MaxPeers == 0 {
		o.MaxPeers = DefaultMaxPeers
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
func Inject(pod *corev1.Pod, w Workload, s Spec, namespace string, ring Ring, opts Options) (*Result, error) {
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
	return &Result{Pod: out, Plan: plan, Patch: ops}, nil
}

// mutable is the part of a pod Mutate may change, with corev1.Pod's JSON names and
// omitempty rules, so a patch computed on it has the paths it would have on the whole pod.
// Diffing only this part skips what is most of a real pod's bytes (managedFields, owner
// references, status) and was a third of the admission's CPU time; the golden tests apply
// every patch to the whole input and compare whole pods, so a change Mutate made outside
// this view would fail them.
type mutable struct {
	Metadata struct {
		Labels      map[string]string `json:"labels,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	} `json:"metadata"`
	Spec struct {
		Volumes        []corev1.Volume           `json:"volumes,omitempty"`
		InitContainers []corev1.Container        `json:"initContainers,omitempty"`
		Containers     []corev1.Container        `json:"containers"`
		ReadinessGates []corev1.PodReadinessGate `json:"readinessGates,omitempty"`
	} `json:"spec"`
}

func mutableOf(p *corev1.Pod) *mutable {
	var m mutable
	m.Metadata.Labels, m.Metadata.Annotations = p.Labels, p.Annotations
	m.Spec.Volumes, m.Spec.InitContainers, m.Spec.Containers = p.Spec.Volumes, p.Spec.InitContainers, p.Spec.Containers
	m.Spec.ReadinessGates = p.Spec.ReadinessGates
	return &m
}

// Diff returns the JSON patch that turns from into to (see mutable for its scope).
func Diff(from, to *corev1.Pod) ([]jsonpatch.Operation, error) {
	a, err := json.Marshal(mutableOf(from))
	if err != nil {
		return nil, fmt.Errorf("encode pod: %w", err)
	}
	b, err := json.Marshal(mutableOf(to))
	if err != nil {
		return nil, fmt.Errorf("encode mutated pod: %w", err)
	}
	ops, err := jsonpatch.CreatePatch(a, b)
	if err != nil {
		return nil, fmt.Errorf("diff pod: %w", err)
	}
	// The library walks Go maps, so sibling keys come out in random order. Sorting by path
	// (array indices as numbers) makes the patch reproducible; it is only safe while no op
	// removes an array element (removals must stay highest-index first), which Mutate never
	// asks for, so in that case the library's order is kept.
	if !slices.ContainsFunc(ops, func(op jsonpatch.Operation) bool { return op.Operation == "remove" }) {
		slices.SortStableFunc(ops, func(x, y jsonpatch.Operation) int { return comparePaths(x.Path, y.Path) })
	}
	return ops, nil
}

// comparePaths orders JSON pointers segment by segment, numeric segments as numbers.
func comparePaths(a, b string) int {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := range min(len(as), len(bs)) {
		if as[i] == bs[i] {
			continue
		}
		ai, aerr := strconv.Atoi(as[i])
		bi, berr := strconv.Atoi(bs[i])
		if aerr == nil && berr == nil {
			return cmp.Compare(ai, bi)
		}
		return strings.Compare(as[i], bs[i])
	}
	return cmp.Compare(len(as), len(bs))
}

// Injected reports whether the webhook already mutated pod (reinvocation, or a pod
// created from a copy of an injected one).
func Injected(pod *corev1.Pod) bool { return pod.Annotations[AnnotationStatus] == StatusInjected }

// OptedOut reports whether pod carries habitat.sh/inject: disabled.
func OptedOut(pod *corev1.Pod) bool { return pod.Annotations[AnnotationInject] == InjectDisabled }

// Mutate returns a copy of pod with plan and s applied. Whatever the user already set
// (a flag, an env var, a container or volume of the same name) is kept as it is.
func Mutate(pod *corev1.Pod, s Spec, plan Plan, opts Options) *corev1.Pod {
	opts = opts.withDefaults()
	out := pod.DeepCopy()
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	out.Labels[LabelRing] = s.Ring

	idx := 0
	if s.Container != "" {
		idx = slices.IndexFunc(out.Spec.Containers, func(c corev1.Container) bool { return c.Name == s.Container })
	}
	sup := &out.Spec.Containers[idx]
	userSet := supervisorArgs(sup, s, plan)

	addEnv(sup, corev1.EnvVar{Name: PodIPEnv, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "status.podIP"}}})
	if s.RingKey != nil {
		addEnv(sup, secretEnv(RingKeyEnv, s.RingKey))
	}
	if s.GatewayAuth != nil {
		addEnv(sup, secretEnv(GatewayAuthEnv, s.GatewayAuth))
	}
	if s.PeerMode == PeerModeWatchFile {
		addVolume(out, corev1.Volume{Name: PeersVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1Mi"))}}})
		addMount(sup, corev1.VolumeMount{Name: PeersVolume, MountPath: PeersDir, ReadOnly: true})
	}
	if s.Labeler {
		addLabeler(out, s, opts)
	}
	if s.JoinedGate && !slices.ContainsFunc(out.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool { return g.ConditionType == ConditionRingJoined }) {
		out.Spec.ReadinessGates = append(out.Spec.ReadinessGates, corev1.PodReadinessGate{ConditionType: ConditionRingJoined})
	}

	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnotationStatus] = StatusInjected
	out.Annotations[AnnotationPeers] = strings.Join(plan.Peers, ",")
	why := plan.Reason
	if s.PeerMode == PeerModeWatchFile {
		why = "watch-file: the labeler keeps " + PeerWatchFile + " filled with live members; " + why
	}
	if len(userSet) > 0 {
		why += "; already set by the pod, left alone: " + strings.Join(userSet, " ")
	}
	out.Annotations[AnnotationPeersReason] = why
	return out
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
		if s.PeerMode == PeerModeWatchFile {
			flag("--peer-watch-file", PeerWatchFile)
		} else {
			flag("--peer", plan.Peers...)
		}
	}
	if plan.Permanent {
		boolFlag("--permanent-peer")
	}
	flag("--listen-gossip", "0.0.0.0:"+strconv.Itoa(GossipPort))
	flag("--sys-ip-address", "$("+PodIPEnv+")")
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

func addLabeler(pod *corev1.Pod, s Spec, opts Options) {
	const name = LabelerContainerName
	if slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == name }) ||
		slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == name }) {
		return
	}
	args := []string{"--ring=" + s.Ring}
	if s.PeerMode == PeerModeWatchFile {
		args = append(args, "--peer-watch-file="+PeerWatchFile, "--max-peers="+strconv.Itoa(opts.MaxPeers))
	}
	c := corev1.Container{
		Name:    name,
		Image:   opts.LabelerImage,
		Command: []string{LabelerCommand},
		Args:    args,
		Env: []corev1.EnvVar{
			{Name: "HABRING_POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
			{Name: "HABRING_POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}},
		},
		Ports: []corev1.ContainerPort{{Name: "habring-health", ContainerPort: LabelerHealthPort, Protocol: corev1.ProtocolTCP}},
		// /readyz answers once the peer file is written (watch-file mode) or at once; as a
		// native sidecar's startup probe it holds the Supervisor back until then.
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(LabelerHealthPort)}},
			PeriodSeconds:    1,
			FailureThreshold: 60,
		},
		Resources: corev1.ResourceRequirements{
			// habring-labeler measures 16 MiB resident idle, 19 MiB holding the leader
			// Lease (README "Performance").
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("24Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("48Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To[int64](65532),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		// Its own token, in its own container only: the Supervisor never holds credentials
		// that can label pods. client-go's in-cluster config reads it from this path.
		VolumeMounts: []corev1.VolumeMount{{Name: LabelerTokenVolume, MountPath: ServiceAccountDir, ReadOnly: true}},
	}
	if s.GatewayAuth != nil {
		c.Env = append(c.Env, secretEnv(GatewayAuthEnv, s.GatewayAuth))
	}
	if s.PeerMode == PeerModeWatchFile {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: PeersVolume, MountPath: PeersDir})
	}
	addVolume(pod, labelerTokenVolume())
	if opts.NativeSidecar {
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, c)
	} else {
		pod.Spec.Containers = append(pod.Spec.Containers, c)
	}
}

// labelerTokenVolume is the same projection the ServiceAccount admission plugin gives
// every container (kube-api-access-*), made for the labeler alone: a bound, expiring token,
// the cluster CA and the namespace.
func labelerTokenVolume() corev1.Volume {
	return corev1.Volume{Name: LabelerTokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: ptr.To[int32](0o444),
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{
				Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		},
	}}}
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
