package patch

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"

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
	// Pod is the pod as admitted: a copy, sharing nothing with the pod given or with Patch.
	Pod  *corev1.Pod
	Plan Plan
	// Patch is what Mutate did to the pod, as JSON patch operations on the pod as the API
	// server sent it.
	Patch []jsonpatch.Operation
}

// PatchJSON is Patch as the webhook sends it: json.Marshal of the operations.
func (r *Result) PatchJSON() ([]byte, error) {
	return json.Marshal(r.Patch)
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
// left untouched. The patch is the operations Mutate performed, at paths into the pod as
// the API server sent it, so fields unknown to these types (a newer API server's) are
// neither removed nor reordered.
func Inject(pod *corev1.Pod, w Workload, s Spec, namespace string, ring contract.Ring, opts Options) (*Result, error) {
	opts = opts.withDefaults()
	scope := Scope{Ring: s.Ring, Namespace: namespace, ClusterDomain: opts.ClusterDomain}
	plan, err := Peers(pod.Name, w, scope, ring, opts.MaxPeers)
	if err != nil {
		return nil, err
	}
	out, ops := Mutate(pod, s, plan, opts)
	return &Result{Pod: out, Plan: plan, Patch: ops}, nil
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

// Mutate returns a copy of pod with plan and s applied, pod untouched, and the JSON patch
// operations that make the same changes to pod as the API server sent it. The copy and
// the operations' values are built for this call: they share nothing with pod, with each
// other or with any other call. Whatever the user already set (a flag, an env var, a
// container or volume of the same name) is kept as it is.
func Mutate(pod *corev1.Pod, s Spec, plan Plan, opts Options) (*corev1.Pod, []jsonpatch.Operation) {
	opts = opts.withDefaults()
	m := &mutation{pod: pod.DeepCopy()}
	m.setKeys("/metadata/labels", &m.pod.Labels, map[string]string{contract.LabelRing: s.Ring})

	sup := 0
	if s.Container != "" {
		sup = slices.IndexFunc(m.pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == s.Container })
	}
	args, userSet := supervisorArgs(&m.pod.Spec.Containers[sup], s, plan)
	m.appendArgs(sup, args)

	m.addEnv(sup, corev1.EnvVar{Name: contract.PodIPEnv, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "status.podIP"}}})
	if s.RingKey != nil {
		m.addEnv(sup, secretEnv(contract.RingKeyEnv, s.RingKey))
	}
	if s.GatewayAuth != nil {
		m.addEnv(sup, secretEnv(contract.GatewayAuthEnv, s.GatewayAuth))
	}
	if s.PeerMode == contract.PeerModeWatchFile {
		m.addVolume(peersVolume())
		m.addMount(sup, corev1.VolumeMount{Name: contract.PeersVolume, MountPath: contract.PeersDir, ReadOnly: true})
	}
	if s.Labeler && !hasLabeler(m.pod) {
		m.addVolume(labelerTokenVolume())
		m.addContainer(labeler(s, opts), opts.NativeSidecar)
	}
	if s.JoinedGate {
		m.addReadinessGate(contract.ConditionRingJoined)
	}

	why := plan.Reason
	if s.PeerMode == contract.PeerModeWatchFile {
		why = "watch-file: the labeler keeps " + contract.PeerWatchFile + " filled with live members; " + why
	}
	if len(userSet) > 0 {
		why += "; already set by the pod, left alone: " + strings.Join(userSet, " ")
	}
	m.setKeys("/metadata/annotations", &m.pod.Annotations, map[string]string{
		contract.AnnotationStatus:      contract.StatusInjected,
		contract.AnnotationPeers:       strings.Join(plan.Peers, ","),
		contract.AnnotationBootstrap:   strconv.FormatBool(plan.Bootstrap),
		contract.AnnotationPeersReason: why,
	})
	return m.pod, m.ops
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

// supervisorArgs returns the Supervisor flags to append to c's args, and the flags that
// were already there. Each flag is one "--name=value" word: Habitat's CLI takes --peer and
// --bind as multi-valued, so a bare "--peer a" followed by a package identifier would
// swallow it.
// Appending keeps a leading "run <pkg>"/"start <pkg>" in place; flag-only args are what
// images from `hab pkg export container` expect (their init.sh runs `hab sup run`).
func supervisorArgs(c *corev1.Container, s Spec, plan Plan) (add, userSet []string) {
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

	for name := range supervisorFlags {
		if set[name] {
			userSet = append(userSet, name)
		}
	}
	slices.Sort(userSet)
	return add, userSet
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

func secretEnv(name string, ref *SecretRef) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: ref.Name}, Key: ref.Key}}}
}
