package patch

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
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

// Injector mutates pods with one set of Options. The labeler container and its token
// volume are the same for every pod of those Options: NewInjector encodes them once, and
// every patch carries those bytes. (Built and encoded for each pod they were a quarter of
// a typical admission's time and allocations, and took the webhook under half the echo
// floor's throughput; measured 2026-12-04.) Nothing in an Injector changes after
// NewInjector: one serves any number of admissions at once.
type Injector struct {
	opts                 Options
	labeler, tokenVolume encoded
}

// NewInjector returns the Injector of opts, its zero fields set to their defaults.
func NewInjector(opts Options) *Injector {
	opts = opts.withDefaults()
	return &Injector{opts: opts, labeler: encode(labelerContainer(opts)), tokenVolume: encode(labelerTokenVolume())}
}

// Result is a finished injection.
type Result struct {
	Plan Plan
	// Patch is the JSON patch (RFC 6902) the webhook sends: the operations Mutate wrote,
	// at paths into the pod as the API server sent it. Apply gives the pod as admitted.
	Patch []byte
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

// Inject computes the peers of pod, created in namespace, and the patch that admits it.
// pod is left untouched. The patch is the operations Mutate wrote, at paths into the pod
// as the API server sent it, so fields unknown to these types (a newer API server's) are
// neither removed nor reordered.
func (inj *Injector) Inject(pod *corev1.Pod, w Workload, s Spec, namespace string, ring contract.Ring) (*Result, error) {
	scope := Scope{Ring: s.Ring, Namespace: namespace, ClusterDomain: inj.opts.ClusterDomain}
	plan, err := Peers(pod.Name, w, scope, ring, inj.opts.MaxPeers)
	if err != nil {
		return nil, err
	}
	p, err := encodePatch(inj.Mutate(pod, s, plan))
	if err != nil {
		return nil, fmt.Errorf("encode the patch: %w", err)
	}
	return &Result{Plan: plan, Patch: p}, nil
}

// Apply returns pod with the JSON patch p applied, pod untouched: what the API server
// makes of the webhook's answer. render shows pods this way.
func Apply(pod *corev1.Pod, p []byte) (*corev1.Pod, error) {
	raw, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	ops, err := jsonpatch.DecodePatch(p)
	if err != nil {
		return nil, fmt.Errorf("decode the patch: %w", err)
	}
	if raw, err = ops.Apply(raw); err != nil {
		return nil, fmt.Errorf("apply the patch: %w", err)
	}
	var out corev1.Pod
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decode the patched pod: %w", err)
	}
	return &out, nil
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

// Mutate returns the JSON patch operations that apply plan and s to pod as the API server
// sent it. It reads pod and never changes it; the operations' values are built for this
// call or encoded once by NewInjector, and shared with nothing a caller can change.
// Whatever the user already set (a flag, an env var, a container or volume of the same
// name) is kept as it is.
func (inj *Injector) Mutate(pod *corev1.Pod, s Spec, plan Plan) []Operation {
	m := &mutation{pod: pod, added: map[string]int{}}
	m.setKeys("/metadata/labels", pod.Labels, map[string]string{contract.LabelRing: s.Ring})

	sup := 0
	if s.Container != "" {
		sup = slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == s.Container })
	}
	args, userSet := supervisorArgs(&pod.Spec.Containers[sup], s, plan)
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
		m.addVolume(contract.PeersVolume, peersVolume())
		m.addMount(sup, corev1.VolumeMount{Name: contract.PeersVolume, MountPath: contract.PeersDir, ReadOnly: true})
	}
	if s.Labeler && !hasLabeler(pod) {
		m.addVolume(contract.LabelerTokenVolume, inj.tokenVolume)
		inj.addLabeler(m, s)
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
	m.setKeys("/metadata/annotations", pod.Annotations, map[string]string{
		contract.AnnotationStatus:      contract.StatusInjected,
		contract.AnnotationPeers:       strings.Join(plan.Peers, ","),
		contract.AnnotationBootstrap:   strconv.FormatBool(plan.Bootstrap),
		contract.AnnotationPeersReason: why,
	})
	return m.ops
}

// addLabeler appends the labeler container, the one every pod of inj's options gets, to
// the containers (or init containers, as a native sidecar), then adds to it what is this
// pod's own: its args, the gateway credential, the peer file's mount.
func (inj *Injector) addLabeler(m *mutation, s Spec) {
	list, have := "/spec/containers", len(m.pod.Spec.Containers)
	if inj.opts.NativeSidecar {
		list, have = "/spec/initContainers", len(m.pod.Spec.InitContainers)
	}
	at := list + "/" + strconv.Itoa(m.appendTo(list, have, inj.labeler))
	// The shared container has env and volume mounts, so "-" has a list to append to.
	m.ops = append(m.ops, op("add", at+"/args", labelerArgs(s, inj.opts)))
	if s.GatewayAuth != nil {
		m.ops = append(m.ops, op("add", at+"/env/-", secretEnv(contract.GatewayAuthEnv, s.GatewayAuth)))
	}
	if s.PeerMode == contract.PeerModeWatchFile {
		m.ops = append(m.ops, op("add", at+"/volumeMounts/-", corev1.VolumeMount{Name: contract.PeersVolume, MountPath: contract.PeersDir}))
	}
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
	labelerMemoryLimit = resource.MustParse("64Mi")
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
