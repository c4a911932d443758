package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// SplitYAML returns the non-empty documents of a multi-document YAML stream.
func SplitYAML(data []byte) [][]byte {
	var out [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			return append(out, data) // let the decoder report it
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			out = append(out, doc)
		}
	}
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) == 0 || t[0] == '#' {
			continue
		}
		b.Write(line)
	}
	return b.Bytes()
}

var (
	mapperOnce sync.Once
	mapper     *restmapper.DeferredDiscoveryRESTMapper
)

// warnings collects the API server's warning headers, to fail on any.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	w.msgs = append(w.msgs, msg)
	w.mu.Unlock()
}

// Apply applies obj (in namespace ns when it names none and is namespaced) as
// kubectl apply --server-side would, and fails on any warning. dryRun sends it with
// dryRun=All.
func Apply(ctx context.Context, cfg *rest.Config, obj runtime.Object, ns string, dryRun bool) error {
	mapperOnce.Do(func() {
		dc := discovery.NewDiscoveryClientForConfigOrDie(cfg)
		mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	})
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: m}
	gvk := obj.GetObjectKind().GroupVersionKind()
	if gvk.Empty() {
		return fmt.Errorf("%T has no apiVersion/kind", obj)
	}
	mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		mapper.Reset()
		if mapping, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return fmt.Errorf("%s: %w", gvk, err)
		}
	}
	w := &warnings{}
	c := rest.CopyConfig(cfg)
	c.WarningHandler = w
	dyn, err := dynamic.NewForConfig(c)
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == "namespace" {
		if u.GetNamespace() == "" {
			u.SetNamespace(ns)
		}
		ri = dyn.Resource(mapping.Resource).Namespace(u.GetNamespace())
	}
	opts := metav1.ApplyOptions{FieldManager: "habring-e2e", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := ri.Apply(ctx, u.GetName(), u, opts); err != nil {
		return fmt.Errorf("apply %s %s: %w", gvk.Kind, u.GetName(), err)
	}
	if len(w.msgs) > 0 {
		return fmt.Errorf("apply %s %s: warnings: %v", gvk.Kind, u.GetName(), w.msgs)
	}
	return nil
}

// ApplyFile applies every document of a manifest in the repository; a non-empty ns moves
// the examples' namespace "shop" (objects and RoleBinding subjects) to ns, as kustomize's
// namespace transformer would.
func ApplyFile(ctx context.Context, cfg *rest.Config, path, ns string) error {
	data, err := os.ReadFile(filepath.Join(RepoRoot(), path))
	if err != nil {
		return err
	}
	if ns != "" {
		data = bytes.ReplaceAll(data, []byte("namespace: shop\n"), []byte("namespace: "+ns+"\n"))
	}
	for _, doc := range SplitYAML(data) {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := Apply(ctx, cfg, obj, ns, false); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}
