package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// prepareVolumes makes every volume of the pod under its directory, once per pod: an
// emptyDir outlives container restarts, and files of Secrets, ConfigMaps, the downward API
// and service account tokens are written as a kubelet would (tokens are not rotated: a
// test outlives none of them).
func (p *pod) prepareVolumes(ctx context.Context, pod *corev1.Pod) (map[string]string, error) {
	dirs := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(p.dir, "volumes", v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		files := map[string]string{}
		var err error
		switch {
		case v.EmptyDir != nil:
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if err = p.projection(ctx, pod, src, files); err != nil {
					break
				}
			}
		case v.Secret != nil:
			var data map[string]string
			if data, err = p.secretData(ctx, pod.Namespace, v.Secret.SecretName, v.Secret.Optional); err == nil {
				err = pick(data, v.Secret.Items, files)
			}
		case v.ConfigMap != nil:
			var data map[string]string
			if data, err = p.configMapData(ctx, pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Optional); err == nil {
				err = pick(data, v.ConfigMap.Items, files)
			}
		case v.DownwardAPI != nil:
			err = downward(pod, v.DownwardAPI.Items, files)
		default:
			err = fmt.Errorf("the runner makes emptyDir, projected, secret, configMap and downwardAPI volumes only")
		}
		if err != nil {
			return nil, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		for name, data := range files {
			f := filepath.Join(dir, filepath.Clean("/"+name))
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
				return nil, err
			}
		}
		dirs[v.Name] = dir
	}
	return dirs, nil
}

func (p *pod) projection(ctx context.Context, pod *corev1.Pod, src corev1.VolumeProjection, files map[string]string) error {
	switch {
	case src.ServiceAccountToken != nil:
		t := src.ServiceAccountToken
		req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To(ptr.Deref(t.ExpirationSeconds, 3600)),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		}}
		if t.Audience != "" {
			req.Spec.Audiences = []string{t.Audience}
		}
		sa := pod.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		tok, err := p.r.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("token for service account %q: %w", sa, err)
		}
		files[t.Path] = tok.Status.Token
	case src.ConfigMap != nil:
		data, err := p.configMapData(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Optional)
		if err != nil {
			return err
		}
		return pick(data, src.ConfigMap.Items, files)
	case src.Secret != nil:
		data, err := p.secretData(ctx, pod.Namespace, src.Secret.Name, src.Secret.Optional)
		if err != nil {
			return err
		}
		return pick(data, src.Secret.Items, files)
	case src.DownwardAPI != nil:
		return downward(pod, src.DownwardAPI.Items, files)
	default:
		return fmt.Errorf("projected source: the runner makes serviceAccountToken, configMap, secret and downwardAPI only")
	}
	return nil
}

// pick copies the listed keys (all of them without a list) to their paths.
func pick(data map[string]string, items []corev1.KeyToPath, files map[string]string) error {
	if len(items) == 0 {
		for k, v := range data {
			files[k] = v
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("no key %q", it.Key)
		}
		files[it.Path] = v
	}
	return nil
}

func downward(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, files map[string]string) error {
	for _, it := range items {
		if it.FieldRef == nil {
			return fmt.Errorf("downward API %q: the runner resolves fieldRef only", it.Path)
		}
		v, err := fieldValue(pod, it.FieldRef.FieldPath)
		if err != nil {
			return err
		}
		files[it.Path] = v
	}
	return nil
}

// mounts lists a container's bind mounts, source on the host to its mount path.
func (p *pod) mounts(c *corev1.Container, volumes map[string]string) ([]mount, error) {
	out := make([]mount, 0, len(c.VolumeMounts))
	for _, m := range c.VolumeMounts {
		src, ok := volumes[m.Name]
		if !ok {
			return nil, fmt.Errorf("volume mount %q: no such volume", m.Name)
		}
		if m.SubPath != "" {
			src = filepath.Join(src, filepath.Clean("/"+m.SubPath))
			if err := os.MkdirAll(src, 0o755); err != nil {
				return nil, err
			}
		}
		if !filepath.IsAbs(m.MountPath) || strings.Contains(m.MountPath, "..") {
			return nil, fmt.Errorf("volume mount %q: mount path %q is not absolute", m.Name, m.MountPath)
		}
		if err := p.r.mountPoint(m.MountPath); err != nil {
			return nil, err
		}
		out = append(out, mount{src: src, dst: m.MountPath, readOnly: m.ReadOnly})
	}
	return out, nil
}

type mount struct {
	src, dst string
	readOnly bool
}
