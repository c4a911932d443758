package patch

import (
	"encoding/json"
	"slices"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
)

// sidecar is everything the labeler container depends on: container builds it from these
// alone, so it is built, and encoded, once for each.
type sidecar struct {
	ring, peerMode, image string
	maxPeers              int
	gatewayAuth           SecretRef // zero without one
	native                bool
}

func sidecarOf(s Spec, opts Options) sidecar {
	sc := sidecar{ring: s.Ring, peerMode: s.PeerMode, image: opts.LabelerImage, maxPeers: opts.MaxPeers, native: opts.NativeSidecar}
	if s.GatewayAuth != nil {
		sc.gatewayAuth = *s.GatewayAuth
	}
	return sc
}

// built is a labeler container and its JSON: the same for every pod of a ring, so built
// once and shared by the pods' copies (Mutate's results are read only), and written into
// their patches as it was encoded (Result.WritePatch).
type built struct {
	container corev1.Container
	json      []byte // nil when it could not be encoded: WritePatch encodes it then
}

// sidecars are the labeler containers built, by what they were built from: a few rings'
// worth, forgotten all at once when full.
var sidecars = struct {
	sync.RWMutex
	m map[sidecar]*built
}{m: map[sidecar]*built{}}

const sidecarsKept = 1024

func (sc sidecar) built() *built {
	sidecars.RLock()
	b, ok := sidecars.m[sc]
	sidecars.RUnlock()
	if ok {
		return b
	}
	b = &built{container: sc.container()}
	if j, err := json.Marshal(&b.container); err == nil {
		b.json = j
	}
	sidecars.Lock()
	if len(sidecars.m) >= sidecarsKept {
		clear(sidecars.m)
	}
	sidecars.m[sc] = b
	sidecars.Unlock()
	return b
}

// container is the labeler sidecar's container.
func (sc sidecar) container() corev1.Container {
	args := []string{"--ring=" + sc.ring}
	if sc.peerMode == contract.PeerModeWatchFile {
		args = append(args, "--peer-watch-file="+contract.PeerWatchFile, "--max-peers="+strconv.Itoa(sc.maxPeers))
	}
	c := corev1.Container{
		Name:    contract.LabelerContainerName,
		Image:   sc.image,
		Command: []string{contract.LabelerCommand},
		Args:    args,
		Env: []corev1.EnvVar{
			{Name: "HABRING_POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
			{Name: "HABRING_POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}},
		},
		Ports: []corev1.ContainerPort{{Name: "habring-health", ContainerPort: contract.LabelerHealthPort, Protocol: corev1.ProtocolTCP}},
		// /readyz answers once the peer file is written (watch-file mode) or at once; as a
		// native sidecar's startup probe it holds the Supervisor back until then.
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(contract.LabelerHealthPort)}},
			PeriodSeconds:    1,
			FailureThreshold: 60,
		},
		Resources: corev1.ResourceRequirements{
			// habring-labeler measures about 11 MiB resident, following or holding the
			// leader Lease (README "Performance").
			Requests: corev1.ResourceList{corev1.ResourceCPU: labelerCPU, corev1.ResourceMemory: labelerMemory},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: labelerMemoryLimit},
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
		// that can label pods. The labeler's in-cluster config reads it from this path.
		VolumeMounts: []corev1.VolumeMount{{Name: contract.LabelerTokenVolume, MountPath: contract.ServiceAccountDir, ReadOnly: true}},
	}
	if sc.gatewayAuth != (SecretRef{}) {
		c.Env = append(c.Env, secretEnv(contract.GatewayAuthEnv, &sc.gatewayAuth))
	}
	if sc.peerMode == contract.PeerModeWatchFile {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: contract.PeersVolume, MountPath: contract.PeersDir})
	}
	if sc.native {
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	}
	// Clipped: it is shared, and an append to a pod's copy must not write into it.
	c.Args, c.Env, c.VolumeMounts = slices.Clip(c.Args), slices.Clip(c.Env), slices.Clip(c.VolumeMounts)
	return c
}

// peersVolume holds the peer watch file, shared by the labeler and the Supervisor.
func peersVolume() corev1.Volume {
	return corev1.Volume{Name: contract.PeersVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
		Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(peersSizeLimit)}}}
}

// labelerTokenVolume is the same projection the ServiceAccount admission plugin gives
// every container (kube-api-access-*), made for the labeler alone: a bound, expiring token,
// the cluster CA and the namespace.
func labelerTokenVolume() corev1.Volume {
	return corev1.Volume{Name: contract.LabelerTokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
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

// The volumes Mutate appends: one value each, shared by every pod's copy, pointer fields
// included, which is how sharedJSON knows them.
var (
	tokenVolume = labelerTokenVolume()
	peersVol    = peersVolume()
	volumesJSON = sync.OnceValue(func() [2][]byte {
		var out [2][]byte
		for i, v := range []*corev1.Volume{&tokenVolume, &peersVol} {
			if j, err := json.Marshal(v); err == nil {
				out[i] = j
			}
		}
		return out
	})
)

// sharedJSON is the JSON of v when it is one of the volumes Mutate appends, else nil.
func sharedJSON(v *corev1.Volume) []byte {
	switch {
	case v.Projected != nil && v.Projected == tokenVolume.Projected:
		return volumesJSON()[0]
	case v.EmptyDir != nil && v.EmptyDir == peersVol.EmptyDir:
		return volumesJSON()[1]
	}
	return nil
}
