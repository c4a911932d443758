package runner

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// expand replaces $(NAME) in s with NAME's value when lookup knows it, as a kubelet does
// for command, args and env values: $$ is a literal $, and a reference to an unknown name
// or an unterminated one is left as written.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// env is an ordered environment: later values replace earlier ones in place.
type env struct {
	names  []string
	values map[string]string
}

func (e *env) set(name, value string) {
	if e.values == nil {
		e.values = map[string]string{}
	}
	if _, ok := e.values[name]; !ok {
		e.names = append(e.names, name)
	}
	e.values[name] = value
}

func (e *env) lookup(name string) (string, bool) {
	v, ok := e.values[name]
	return v, ok
}

func (e *env) list() []string {
	out := make([]string, 0, len(e.names))
	for _, n := range e.names {
		out = append(out, n+"="+e.values[n])
	}
	return out
}

// containerEnv is the environment a kubelet gives a container: the image's, the API
// server's service variables, HOSTNAME, then envFrom and env in order, each env value
// expanded against what came before it.
func (p *pod) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container, img Image) (*env, error) {
	var e env
	e.set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	for _, kv := range img.Env {
		k, v, _ := strings.Cut(kv, "=")
		e.set(k, v)
	}
	e.set("HOSTNAME", podHostname(pod))
	api := p.r.APIServer()
	host, port := api.Addr().String(), strconv.Itoa(int(api.Port()))
	e.set("KUBERNETES_SERVICE_HOST", host)
	e.set("KUBERNETES_SERVICE_PORT", port)
	e.set("KUBERNETES_SERVICE_PORT_HTTPS", port)
	e.set("KUBERNETES_PORT", "tcp://"+api.String())
	e.set("KUBERNETES_PORT_443_TCP", "tcp://"+api.String())
	for _, from := range c.EnvFrom {
		data, err := p.sourceData(ctx, pod.Namespace, from.ConfigMapRef, from.SecretRef)
		if err != nil {
			return nil, err
		}
		for _, k := range slices.Sorted(maps.Keys(data)) {
			e.set(from.Prefix+k, data[k])
		}
	}
	for _, v := range c.Env {
		if v.ValueFrom == nil {
			e.set(v.Name, expand(v.Value, e.lookup))
			continue
		}
		value, ok, err := p.valueFrom(ctx, pod, v.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", v.Name, err)
		}
		if ok {
			e.set(v.Name, value)
		}
	}
	return &e, nil
}

// sourceData reads the ConfigMap or Secret of an envFrom; an optional one that is missing
// is empty.
func (p *pod) sourceData(ctx context.Context, ns string, cm *corev1.ConfigMapEnvSource, s *corev1.SecretEnvSource) (map[string]string, error) {
	switch {
	case cm != nil:
		return p.configMapData(ctx, ns, cm.Name, cm.Optional)
	case s != nil:
		return p.secretData(ctx, ns, s.Name, s.Optional)
	}
	return nil, nil
}

func (p *pod) configMapData(ctx context.Context, ns, name string, optional *bool) (map[string]string, error) {
	cm, err := p.r.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("configmap %q: %w", name, err)
	}
	out := maps.Clone(cm.Data)
	if out == nil {
		out = map[string]string{}
	}
	for k, v := range cm.BinaryData {
		out[k] = string(v)
	}
	return out, nil
}

func (p *pod) secretData(ctx context.Context, ns, name string, optional *bool) (map[string]string, error) {
	s, err := p.r.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	out := make(map[string]string, len(s.Data))
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out, nil
}

// valueFrom resolves an env source; ok is false for a missing optional key.
func (p *pod) valueFrom(ctx context.Context, pod *corev1.Pod, from *corev1.EnvVarSource) (string, bool, error) {
	switch {
	case from.FieldRef != nil:
		v, err := fieldValue(pod, from.FieldRef.FieldPath)
		return v, err == nil, err
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		data, err := p.secretData(ctx, pod.Namespace, ref.Name, ref.Optional)
		return keyOf(data, err, ref.Key, ref.Optional, "secret "+ref.Name)
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		data, err := p.configMapData(ctx, pod.Namespace, ref.Name, ref.Optional)
		return keyOf(data, err, ref.Key, ref.Optional, "configmap "+ref.Name)
	}
	return "", false, fmt.Errorf("the runner resolves fieldRef, secretKeyRef and configMapKeyRef only")
}

func keyOf(data map[string]string, err error, key string, optional *bool, what string) (string, bool, error) {
	if err != nil {
		return "", false, err
	}
	v, ok := data[key]
	if !ok && (optional == nil || !*optional) {
		return "", false, fmt.Errorf("%s has no key %q", what, key)
	}
	return v, ok, nil
}

// fieldValue is the downward API: the fields a kubelet resolves for env and volumes.
func fieldValue(pod *corev1.Pod, field string) (string, error) {
	if k, ok := strings.CutPrefix(field, "metadata.labels['"); ok {
		return pod.Labels[strings.TrimSuffix(k, "']")], nil
	}
	if k, ok := strings.CutPrefix(field, "metadata.annotations['"); ok {
		return pod.Annotations[strings.TrimSuffix(k, "']")], nil
	}
	switch field {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.podIPs":
		ips := make([]string, 0, len(pod.Status.PodIPs))
		for _, ip := range pod.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	}
	return "", fmt.Errorf("field %q: the runner does not resolve it", field)
}

// podHostname is the pod's hostname: spec.hostname, else its name.
func podHostname(pod *corev1.Pod) string {
	if pod.Spec.Hostname != "" {
		return pod.Spec.Hostname
	}
	return pod.Name
}
