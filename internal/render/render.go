package render

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/patch"
)

// ErrNoWorkloads means the input held no StatefulSet or Deployment.
var ErrNoWorkloads = errors.New("no StatefulSet or Deployment in the input")

// templateHash stands in for the pod-template-hash a Deployment's ReplicaSet would carry.
const templateHash = "render"

// Parse reads multi-document YAML or JSON. Workloads and EndpointSlices (to preview a
// live ring offline) are kept; other kinds are returned by name in skipped, so a whole
// application manifest can be passed as it is.
func Parse(data []byte, defaultNamespace string) (objs *patch.Objects, skipped []string, err error) {
	objs = &patch.Objects{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 || isComment(doc) {
			continue
		}
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("document %d is not a Kubernetes object render knows: %w", i, err)
		}
		m, ok := obj.(metav1.Object)
		if ok && m.GetNamespace() == "" {
			m.SetNamespace(defaultNamespace)
		}
		switch o := obj.(type) {
		case *appsv1.StatefulSet:
			objs.StatefulSets = append(objs.StatefulSets, o)
		case *appsv1.Deployment:
			objs.Deployments = append(objs.Deployments, o)
		case *discoveryv1.EndpointSlice:
			objs.EndpointSlices = append(objs.EndpointSlices, o)
		default:
			name := ""
			if ok {
				name = "/" + m.GetName()
			}
			skipped = append(skipped, gvk.Kind+name)
		}
	}
	if len(objs.StatefulSets)+len(objs.Deployments) == 0 {
		return nil, skipped, ErrNoWorkloads
	}
	return objs, skipped, nil
}

func isComment(doc []byte) bool {
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			return false
		}
	}
	return true
}

// Render returns the admitted pods of every workload in objs: one per ordinal of a
// StatefulSet, one representative pod of a Deployment. ring answers the ring questions:
// objs itself offline (no live member unless the input lists EndpointSlices), or the live
// cluster. Every workload is rendered; the errors of those that fail come back joined.
func Render(ctx context.Context, objs *patch.Objects, ring patch.Source, opts patch.Options) ([]*corev1.Pod, error) {
	src := source{Objects: objs, ring: ring}
	inj := patch.NewInjector(opts)
	var pods []*corev1.Pod
	var errs []error
	admit := func(kind, name string, pod *corev1.Pod) {
		d, err := inj.Admit(ctx, pod, pod.Namespace, src)
		var admitted *corev1.Pod
		var applyErr error
		if err == nil && d.Result != nil {
			admitted, applyErr = patch.Apply(pod, d.Result.Patch)
		}
		switch {
		case applyErr != nil:
			errs = append(errs, fmt.Errorf("%s %s/%s: pod %s: habring's own patch does not apply, a bug to report: %w", kind, pod.Namespace, name, podName(pod), applyErr))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %s/%s: pod %s would be denied: %w", kind, pod.Namespace, name, podName(pod), err))
		case d.Skip == patch.SkipNoRing:
			errs = append(errs, fmt.Errorf("%s %s/%s has no %s annotation (on the workload or its pod template); habring leaves its pods alone", kind, pod.Namespace, name, contract.AnnotationRing))
		case d.Skip != "":
			errs = append(errs, fmt.Errorf("%s %s/%s: pod %s would be left alone: %s", kind, pod.Namespace, name, podName(pod), d.Skip))
		default:
			pods = append(pods, admitted)
		}
	}
	for _, s := range objs.StatefulSets {
		replicas := int32(1)
		if s.Spec.Replicas != nil {
			replicas = *s.Spec.Replicas
		}
		for i := range replicas {
			admit(patch.KindStatefulSet, s.Name, StatefulSetPod(s, int(i)))
		}
	}
	for _, d := range objs.Deployments {
		admit(patch.KindDeployment, d.Name, DeploymentPod(d))
	}
	return pods, errors.Join(errs...)
}

// source takes workloads from the input and the ring from wherever it was asked to.
type source struct {
	*patch.Objects
	ring patch.Source
}

func (s source) Ring(ctx context.Context, ns, ring string) (contract.Ring, error) {
	return s.ring.Ring(ctx, ns, ring)
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "*"
}

// StatefulSetPod is the pod the StatefulSet controller creates for ordinal i.
func StatefulSetPod(s *appsv1.StatefulSet, i int) *corev1.Pod {
	name := s.Name + "-" + strconv.Itoa(i)
	pod := podFromTemplate(&s.Spec.Template, s.Namespace, metav1.OwnerReference{
		APIVersion: "apps/v1", Kind: "StatefulSet", Name: s.Name, UID: s.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)})
	pod.Name = name
	pod.Labels["statefulset.kubernetes.io/pod-name"] = name
	pod.Labels["apps.kubernetes.io/pod-index"] = strconv.Itoa(i)
	pod.Spec.Hostname = name
	pod.Spec.Subdomain = s.Spec.ServiceName
	return pod
}

// DeploymentPod is a pod as the Deployment's current ReplicaSet creates it.
func DeploymentPod(d *appsv1.Deployment) *corev1.Pod {
	rs := d.Name + "-" + templateHash
	pod := podFromTemplate(&d.Spec.Template, d.Namespace, metav1.OwnerReference{
		APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)})
	pod.GenerateName = rs + "-"
	pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = templateHash
	return pod
}

func podFromTemplate(t *corev1.PodTemplateSpec, ns string, owner metav1.OwnerReference) *corev1.Pod {
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: *t.ObjectMeta.DeepCopy(),
		Spec:       *t.Spec.DeepCopy(),
	}
	pod.Namespace = ns
	pod.OwnerReferences = []metav1.OwnerReference{owner}
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	return pod
}

// YAML writes pods as a multi-document YAML stream.
func YAML(w io.Writer, pods []*corev1.Pod) error {
	for i, p := range pods {
		b, err := yaml.Marshal(p)
		if err != nil {
			return fmt.Errorf("encode pod %s: %w", podName(p), err)
		}
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}
