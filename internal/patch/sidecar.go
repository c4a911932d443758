package patch

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
)

// labelerContainer is the labeler sidecar's container as every pod of opts gets it.
// What differs by ring (labelerArgs, the gateway credential, the peer file's mount) the
// mutation adds to it with operations of its own.
func labelerContainer(opts Options) corev1.Container {
	c := corev1.Container{
		Name:    contract.LabelerContainerName,
		Image:   opts.LabelerImage,
		Command: []string{contract.LabelerCommand},
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
			// habring-labeler on client-go measures 26-27 MiB resident in a ring pod, 5.8-6.0
			// MiB of it its own (anonymous) and the rest the binary's pages, which every
			// labeler of a node shares and the first one's cgroup is charged for: the
			// request covers its own, the limit the first one's whole
			// (docs/performance.md).
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
	if opts.NativeSidecar {
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	}
	return c
}

// labelerArgs are the labeler's args in a pod of s.
func labelerArgs(s Spec, opts Options) []string {
	args := []string{"--ring=" + s.Ring}
	if s.PeerMode == contract.PeerModeWatchFile {
		args = append(args, "--peer-watch-file="+contract.PeerWatchFile, "--max-peers="+strconv.Itoa(opts.MaxPeers))
	}
	return args
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
