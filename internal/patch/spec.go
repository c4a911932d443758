package patch

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/habring/habring/contract"
)

// ErrNotInRing is returned by ParseSpec when neither the workload nor the pod names a ring:
// the pod is not habring's business and is admitted unchanged.
var ErrNotInRing = errors.New("no habitat.sh/ring annotation")

// ErrNoContainers is a denial: the pod of a ring workload has no container to run the
// Supervisor in (the API server's own validation would refuse it too).
var ErrNoContainers = errors.New("pod has no containers to run the Supervisor in; give the workload's pod template a container running the Habitat Supervisor")

// AnnotationError is a denial the user fixes by editing one annotation.
type AnnotationError struct {
	Key     string // the annotation
	Value   string // what it held (truncated for the message)
	Allowed string // what it may hold
}

func (e *AnnotationError) Error() string {
	v := e.Value
	if len(v) > 64 {
		v = v[:64] + "..."
	}
	return fmt.Sprintf("annotation %s: %q is not allowed; want %s", e.Key, v, e.Allowed)
}

// SecretRef names one key of a Secret in the pod's namespace.
type SecretRef struct {
	Name string
	Key  string
}

// Spec is what a workload asks of habring, parsed and validated from its annotations.
type Spec struct {
	Ring        string
	Topology    string // "" (Supervisor default), TopologyStandalone or TopologyLeader
	Group       string
	Binds       []string
	RingKey     *SecretRef
	GatewayAuth *SecretRef
	PeerMode    string // PeerModeArgs or PeerModeWatchFile
	Container   string // "" means the first container
	Labeler     bool
	JoinedGate  bool // the readiness gate ConditionRingJoined
}

// Habitat identifiers: service groups, bind names, service names and origins are plain
// words; nothing that could end an argument or start another one (no spaces, '=', '$').
var (
	habIdent = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)
	habBind  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}:[A-Za-z0-9_-]{1,63}\.[A-Za-z0-9_-]{1,63}(@[A-Za-z0-9_-]{1,63})?$`)
)

// maxAnnotationValue bounds what is even looked at; the API server already limits all
// annotations of an object to 256 KiB together.
const maxAnnotationValue = 4096

// ParseSpec reads the habring annotations. The pod's own annotations (its template's)
// win over the workload's for each key, so one template of a shared workload can differ.
// It returns ErrNotInRing when no ring is named and an *AnnotationError for any value
// outside the contract.
func ParseSpec(workload map[string]string, pod *corev1.Pod) (Spec, error) {
	get := func(key string) (string, bool) {
		if v, ok := pod.Annotations[key]; ok {
			return strings.TrimSpace(v), true
		}
		v, ok := workload[key]
		return strings.TrimSpace(v), ok
	}
	for _, k := range []string{contract.AnnotationRing, contract.AnnotationTopology, contract.AnnotationGroup, contract.AnnotationBinds,
		contract.AnnotationRingKeySecret, contract.AnnotationGatewayAuthSecret, contract.AnnotationPeerMode, contract.AnnotationContainer, contract.AnnotationLabeler, contract.AnnotationReadinessGate} {
		if v, _ := get(k); len(v) > maxAnnotationValue {
			return Spec{}, &AnnotationError{Key: k, Value: v, Allowed: fmt.Sprintf("at most %d bytes", maxAnnotationValue)}
		}
	}

	var s Spec
	ring, ok := get(contract.AnnotationRing)
	if !ok {
		return Spec{}, ErrNotInRing
	}
	if errs := validation.IsDNS1123Label(ring); len(errs) > 0 {
		return Spec{}, &AnnotationError{Key: contract.AnnotationRing, Value: ring, Allowed: "a DNS-1123 label (lower-case letters, digits and '-', at most 63)"}
	}
	s.Ring = ring

	if v, ok := get(contract.AnnotationTopology); ok {
		if v != contract.TopologyStandalone && v != contract.TopologyLeader {
			return Spec{}, &AnnotationError{Key: contract.AnnotationTopology, Value: v, Allowed: "one of standalone, leader"}
		}
		s.Topology = v
	}
	if v, ok := get(contract.AnnotationGroup); ok {
		if !habIdent.MatchString(v) {
			return Spec{}, &AnnotationError{Key: contract.AnnotationGroup, Value: v, Allowed: "a Habitat group name (letters, digits, '_' and '-', at most 63)"}
		}
		s.Group = v
	}
	if v, ok := get(contract.AnnotationBinds); ok && v != "" {
		for b := range strings.SplitSeq(v, ",") {
			b = strings.TrimSpace(b)
			if !habBind.MatchString(b) {
				return Spec{}, &AnnotationError{Key: contract.AnnotationBinds, Value: v, Allowed: "a comma-separated list of name:service.group[@org]"}
			}
			if !slices.Contains(s.Binds, b) {
				s.Binds = append(s.Binds, b)
			}
		}
	}
	var err error
	if s.RingKey, err = secretRef(get, contract.AnnotationRingKeySecret, contract.DefaultRingKeySecretKey); err != nil {
		return Spec{}, err
	}
	if s.GatewayAuth, err = secretRef(get, contract.AnnotationGatewayAuthSecret, contract.DefaultGatewayAuthSecretKey); err != nil {
		return Spec{}, err
	}

	s.PeerMode = contract.PeerModeArgs
	if v, ok := get(contract.AnnotationPeerMode); ok {
		if v != contract.PeerModeArgs && v != contract.PeerModeWatchFile {
			return Spec{}, &AnnotationError{Key: contract.AnnotationPeerMode, Value: v, Allowed: "one of args, watch-file"}
		}
		s.PeerMode = v
	}

	if v, ok := get(contract.AnnotationContainer); ok {
		if !slices.ContainsFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == v }) {
			return Spec{}, &AnnotationError{Key: contract.AnnotationContainer, Value: v, Allowed: "the name of one of the pod's containers: " + containerNames(pod)}
		}
		s.Container = v
	}
	if len(pod.Spec.Containers) == 0 {
		return Spec{}, ErrNoContainers
	}

	if v, ok := get(contract.AnnotationReadinessGate); ok {
		if v != contract.ReadinessGateRingJoined {
			return Spec{}, &AnnotationError{Key: contract.AnnotationReadinessGate, Value: v, Allowed: "ring-joined"}
		}
		s.JoinedGate = true
	}

	// The labeler publishes the election's outcome, in watch-file mode it is what fills
	// the peer file (a lone Supervisor restarted in place reads nothing else), and it sets
	// the ring-joined condition.
	s.Labeler = s.Topology == contract.TopologyLeader || s.PeerMode == contract.PeerModeWatchFile || s.JoinedGate
	if v, ok := get(contract.AnnotationLabeler); ok {
		switch v {
		case contract.LabelerEnabled:
			s.Labeler = true
		case contract.LabelerDisabled:
			s.Labeler = false
		default:
			return Spec{}, &AnnotationError{Key: contract.AnnotationLabeler, Value: v, Allowed: "one of enabled, disabled"}
		}
	}
	if s.PeerMode == contract.PeerModeWatchFile && !s.Labeler {
		// The labeler is what fills the watch file; without it the file stays empty and a
		// lone Supervisor never finds the ring.
		return Spec{}, &AnnotationError{Key: contract.AnnotationLabeler, Value: contract.LabelerDisabled, Allowed: "enabled when habitat.sh/peer-mode is watch-file (the labeler writes the peer file)"}
	}
	if s.JoinedGate && !s.Labeler {
		// Nobody else sets the condition: the pod would never be Ready.
		return Spec{}, &AnnotationError{Key: contract.AnnotationLabeler, Value: contract.LabelerDisabled, Allowed: "enabled when habitat.sh/readiness-gate is ring-joined (the labeler sets the condition)"}
	}
	return s, nil
}

func secretRef(get func(string) (string, bool), key, defaultKey string) (*SecretRef, error) {
	v, ok := get(key)
	if !ok {
		return nil, nil
	}
	name, k, hasKey := strings.Cut(v, "/")
	if !hasKey {
		k = defaultKey
	}
	if len(validation.IsDNS1123Subdomain(name)) > 0 || len(validation.IsConfigMapKey(k)) > 0 {
		return nil, &AnnotationError{Key: key, Value: v, Allowed: "<secret>[/<key>]: a Secret name in the pod's namespace, optionally a key (default " + defaultKey + ")"}
	}
	return &SecretRef{Name: name, Key: k}, nil
}

func containerNames(pod *corev1.Pod) string {
	names := make([]string, 0, len(pod.Spec.Containers))
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}
