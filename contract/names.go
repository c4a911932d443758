package contract

// The names below are API (see README "Annotations"): change them only with a migration note.
const (
	// LabelRing, on a pod, is set by the webhook so Services can select ring members; on a
	// Service, it marks the Service whose EndpointSlices list the ring's live members.
	LabelRing = "habitat.sh/ring"
	// LabelRole is kept by the labeler: RoleLeader, RoleFollower or RoleNone.
	LabelRole = "habitat.sh/role"

	// LabelInject on a Namespace opts it in (value "enabled"); the webhook sees no other.
	LabelInject = "habitat.sh/inject"

	// AnnotationRing names the ring a workload's pods join (a DNS-1123 label).
	AnnotationRing = "habitat.sh/ring"
	// AnnotationTopology is passed as --topology: "standalone" or "leader".
	AnnotationTopology = "habitat.sh/topology"
	// AnnotationGroup is passed as --group.
	AnnotationGroup = "habitat.sh/group"
	// AnnotationBinds is a comma-separated list of name:service.group[@org], each a --bind.
	AnnotationBinds = "habitat.sh/binds"
	// AnnotationRingKeySecret is <secret>[/<key>]: HAB_RING_KEY comes from that Secret.
	AnnotationRingKeySecret = "habitat.sh/ring-key-secret" //nolint:gosec // an annotation name, not a credential
	// AnnotationGatewayAuthSecret is <secret>[/<key>]: HAB_SUP_GATEWAY_AUTH_TOKEN for the
	// Supervisor and the labeler comes from that Secret.
	AnnotationGatewayAuthSecret = "habitat.sh/gateway-auth-secret" //nolint:gosec // an annotation name, not a credential
	// AnnotationPeerMode is "args" (default) or "watch-file".
	AnnotationPeerMode = "habitat.sh/peer-mode"
	// AnnotationContainer names the container that runs the Supervisor (default: the first).
	AnnotationContainer = "habitat.sh/container"
	// AnnotationLabeler is "enabled" or "disabled"; the default is enabled for the leader
	// topology and disabled otherwise (without an election there is no role to publish).
	AnnotationLabeler = "habitat.sh/labeler"
	// AnnotationReadinessGate is "ring-joined": the pod gets the readiness gate
	// ConditionRingJoined, which its labeler sets once its Supervisor has joined the ring.
	AnnotationReadinessGate = "habitat.sh/readiness-gate"
	// AnnotationInject on a pod (value "disabled") opts that pod out.
	AnnotationInject = "habitat.sh/inject"

	// AnnotationStatus is set to StatusInjected on every pod the webhook mutated; it is
	// the idempotency marker that makes reinvocation safe.
	AnnotationStatus = "habitat.sh/status"
	// AnnotationPeers records the injected peers, comma-separated ("" when bootstrapping).
	AnnotationPeers = "habitat.sh/peers"
	// AnnotationPeersReason says, for a person reading the pod, why those peers were chosen
	// and which flags the user had already set. It is prose: no program reads it.
	AnnotationPeersReason = "habitat.sh/peers-reason"
	// AnnotationBootstrap is the webhook's decision, as data: "true" on the pod admitted
	// to start an empty ring (pod 0 of a StatefulSet with no live member, given no
	// peer), "false" on every other injected pod. The labeler's ring-joined gate reads
	// it; the webhook overwrites any value a pod template carried.
	AnnotationBootstrap = "habitat.sh/bootstrap"

	// ConditionRingJoined is the pod condition (and readiness gate) the labeler sets:
	// True once the pod's Supervisor knows another alive member of the ring, or it is the
	// bootstrap pod of an empty ring; False, with a reason, while it knows none.
	ConditionRingJoined = "habitat.sh/ring-joined"
)

// Values of the contract's enumerations.
const (
	InjectEnabled  = "enabled"
	InjectDisabled = "disabled"
	StatusInjected = "injected"

	BootstrapTrue  = "true"
	BootstrapFalse = "false"

	TopologyStandalone = "standalone"
	TopologyLeader     = "leader"

	PeerModeArgs      = "args"
	PeerModeWatchFile = "watch-file"

	LabelerEnabled  = "enabled"
	LabelerDisabled = "disabled"

	ReadinessGateRingJoined = "ring-joined"

	RoleLeader   = "leader"
	RoleFollower = "follower"
	RoleNone     = "none"
)

// Habitat Supervisor defaults, as `hab sup run --help` documents them:
// --listen-gossip 0.0.0.0:9638 and --listen-http 0.0.0.0:9631.
const (
	// GossipPort is the Supervisor's default --listen-gossip port (SWIM over UDP and
	// rumors over TCP); a --peer without a port means this one.
	GossipPort = 9638
	// GatewayPort is the Supervisor's HTTP gateway (/census), which the labeler reads.
	GatewayPort = 9631
)

// Names of what the webhook adds to a pod.
const (
	// LabelerContainerName is the sidecar's container name.
	LabelerContainerName = "habring-labeler"
	// LabelerCommand is the sidecar's command: the labeler's own binary in habring's image
	// (cmd/habring-labeler), which links only what the labeler uses.
	LabelerCommand = "/habring-labeler"
	// LabelerTokenVolume holds the labeler's own projected service-account token.
	LabelerTokenVolume = "habring-labeler-token" //nolint:gosec // a volume name, not a credential
	// PeersVolume is the emptyDir shared by the labeler and the Supervisor in watch-file mode.
	PeersVolume = "habring-peers"
	// PeersDir is where PeersVolume is mounted in both containers.
	PeersDir = "/var/run/habring"
	// PeerWatchFile is the file the labeler writes and the Supervisor watches.
	PeerWatchFile = PeersDir + "/peers"
	// PodIPEnv carries status.podIP into the Supervisor container for --sys-ip-address.
	PodIPEnv = "HABRING_POD_IP"
	// RingKeyEnv and GatewayAuthEnv are the Supervisor's own environment variables.
	RingKeyEnv     = "HAB_RING_KEY"
	GatewayAuthEnv = "HAB_SUP_GATEWAY_AUTH_TOKEN"
	// ServiceAccountDir is where client-go's in-cluster config looks for a token; the
	// labeler's own token is mounted there in the labeler container only.
	ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	// LabelerHealthPort serves the labeler's /healthz and /readyz.
	LabelerHealthPort = 9646

	// DefaultRingKeySecretKey and DefaultGatewayAuthSecretKey are the Secret keys read when
	// the annotation names only the Secret.
	DefaultRingKeySecretKey     = "ring-key"
	DefaultGatewayAuthSecretKey = "gateway-auth-token"
)

// DefaultMaxPeers is how many peers a pod is given (the webhook's --max-peers default, the
// labeler's watch-file length) when nothing else is set: enough that one stale or
// restarting member does not strand a joining Supervisor.
const DefaultMaxPeers = 5
