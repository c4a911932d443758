package webhook

import (
	"fmt"
	"log/slog"
	"net/http"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/habring/habring/contract"
)

// LargePod is the size that made Istio's injector take seconds: 10 containers, 1,500
// env vars, 200 volumes (with mounts).
func LargePod() *corev1.Pod {
	p := stsPod("db", 2)
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate,
		FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:labels":{}}}`)}}
	p.Spec.Containers = nil
	for c := range 10 {
		ctr := corev1.Container{Name: fmt.Sprintf("c%d", c), Image: "habitat/app:1", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}}}
		for e := range 150 {
			ctr.Env = append(ctr.Env, corev1.EnvVar{Name: fmt.Sprintf("VAR_%d_%d", c, e), Value: fmt.Sprintf("value-%d", e)})
		}
		for v := range 20 {
			ctr.VolumeMounts = append(ctr.VolumeMounts, corev1.VolumeMount{Name: fmt.Sprintf("v%d", c*20+v), MountPath: fmt.Sprintf("/data/%d", v)})
		}
		p.Spec.Containers = append(p.Spec.Containers, ctr)
	}
	for v := range 200 {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: fmt.Sprintf("v%d", v),
			VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: fmt.Sprintf("cm-%d", v)}}}})
	}
	return p
}

func benchFixture(b *testing.B) *fixture {
	return newFixture(b, []runtime.Object{ringSTS("db", 3),
		readySlice("db-x", map[string]string{"db-0": "10.0.0.10", "db-1": "10.0.0.11", "db-2": "10.0.0.12"})},
		deploymentMeta("web", map[string]string{contract.AnnotationRing: "main"}))
}

// BenchmarkAdmission is the whole request path: decode, owner lookup from the cache,
// peers, mutation, JSON patch, encode.
func BenchmarkAdmission(b *testing.B) {
	f := benchFixture(b)
	f.handler.Log = slog.New(slog.DiscardHandler)
	for name, body := range BenchBodies(b) {
		b.Run(name, func(b *testing.B) {
			if w := post(b, f.router, body); w.Code != http.StatusOK {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				post(b, f.handler, body)
			}
		})
	}
}

// BenchBodies are the request bodies the admission benchmarks and the echo floor's
// (echo_test.go, an external test package) share, so the two are measured on the same
// bytes.
func BenchBodies(tb testing.TB) map[string][]byte {
	return map[string][]byte{
		"typical-statefulset-pod": reviewBody(tb, admissionv1.Create, stsPod("db", 1), nil),
		"typical-deployment-pod":  reviewBody(tb, admissionv1.Create, deploymentPod("web"), nil),
		"large-pod":               reviewBody(tb, admissionv1.Create, LargePod(), nil),
		"not-in-a-ring":           reviewBody(tb, admissionv1.Create, stsPod("plain", 0), nil),
	}
}
