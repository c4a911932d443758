package patch_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	jsonpatch5 "github.com/evanphx/json-patch/v5"
	"github.com/go-openapi/jsonpointer"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/habring/habring/internal/patch"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the current output (read the diff first)")

// goldenCase is one testdata/<name>.yaml: a Pod as its controller would create it, the
// workloads of its namespace and the ring's EndpointSlices. A first line
// "# options: max-peers=2 native-sidecar=false" changes the webhook's options.
type goldenCase struct {
	pod    *corev1.Pod
	rawPod []byte // the Pod document as JSON, with any field the Go types do not know
	objs   patch.Objects
	opts   patch.Options
}

// outcome is what a golden file holds: exactly one field is set.
type outcome struct {
	Skipped string          `json:"skipped,omitempty"`
	Denied  string          `json:"denied,omitempty"`
	Patch   json.RawMessage `json:"patch,omitempty"`
}

func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, inputs)
	goldens, err := filepath.Glob("testdata/*.golden.json")
	require.NoError(t, err)
	for _, g := range goldens {
		if _, err := os.Stat(strings.TrimSuffix(g, ".golden.json") + ".yaml"); err != nil {
			t.Errorf("golden file %s has no input %s: delete it or restore the input", g, strings.TrimSuffix(g, ".golden.json")+".yaml")
		}
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := loadCase(t, in)
			before := c.pod.DeepCopy()
			got, res := admit(t, c, c.pod)
			require.Equal(t, before, c.pod, "admission changed the pod it was given")
			goldenPath := strings.TrimSuffix(in, ".yaml") + ".golden.json"
			b, err := json.MarshalIndent(got, "", "  ")
			require.NoError(t, err)
			b = append(b, '\n')
			if *update {
				require.NoError(t, os.WriteFile(goldenPath, b, 0o644))
			}
			want, err := os.ReadFile(goldenPath)
			require.NoError(t, err, "no golden file; run go test ./patch -run TestGolden -update and read what it wrote")
			require.Equal(t, string(want), string(b), "output differs from %s", goldenPath)
			if res == nil {
				return
			}

			// The patch, applied to the pod exactly as the API server sent it, gives the
			// mutated pod, and keeps what the Go types do not know.
			p := res.Patch
			// What the webhook sends is json.Marshal of Mutate's operations, byte for byte.
			w := workloadOf(t, c, c.pod)
			spec, err := patch.ParseSpec(w.Annotations, c.pod)
			require.NoError(t, err)
			marshalled, err := json.Marshal(patch.NewInjector(c.opts).Mutate(c.pod, spec, res.Plan))
			require.NoError(t, err)
			require.Equal(t, string(marshalled), string(p))
			decoded, err := jsonpatch5.DecodePatch(p)
			require.NoError(t, err)
			patched, err := decoded.Apply(c.rawPod)
			require.NoError(t, err, "patch does not apply to the raw input")
			var after corev1.Pod
			require.NoError(t, json.Unmarshal(patched, &after))
			// Applied to the pod as these types see it (as render shows it), the same.
			typed, err := patch.Apply(c.pod, p)
			require.NoError(t, err)
			require.Equal(t, typed, &after)
			requireSameUnknownFields(t, c.rawPod, patched)

			// Reinvocation: the webhook leaves an injected pod alone...
			again, res2 := admit(t, c, &after)
			require.Equal(t, outcome{Skipped: patch.SkipAlreadyInjected}, again)
			require.Nil(t, res2)
			// ...and even without the marker, the mutation adds nothing twice: only the
			// note of what the user had set (now everything) would change.
			spec, err = patch.ParseSpec(workloadOf(t, c, &after).Annotations, &after)
			require.NoError(t, err)
			for _, op := range patch.NewInjector(c.opts).Mutate(&after, spec, res.Plan) {
				require.Equal(t, "/metadata/annotations/habitat.sh~1peers-reason", op.Path, "second mutation changed %s", op.Path)
			}
		})
	}
}

// admit runs the Injector of the case's options on pod with the case's files as the cluster.
func admit(t *testing.T, c *goldenCase, pod *corev1.Pod) (outcome, *patch.Result) {
	t.Helper()
	d, err := patch.NewInjector(c.opts).Admit(context.Background(), pod, c.pod.Namespace, &c.objs)
	switch {
	case err != nil:
		return outcome{Denied: err.Error()}, nil
	case d.Skip != "":
		return outcome{Skipped: d.Skip}, nil
	}
	var ops []patch.Operation
	require.NoError(t, json.Unmarshal(d.Result.Patch, &ops))
	require.NotEmpty(t, ops, "an injection with an empty patch")
	return outcome{Patch: d.Result.Patch}, d.Result
}

func workloadOf(t *testing.T, c *goldenCase, pod *corev1.Pod) patch.Workload {
	t.Helper()
	o, ok := patch.OwnerOf(pod)
	require.True(t, ok)
	w, err := c.objs.Workload(context.Background(), c.pod.Namespace, o, pod)
	require.NoError(t, err)
	return w
}

func loadCase(t *testing.T, path string) *goldenCase {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	c := &goldenCase{opts: patch.Options{LabelerImage: "ghcr.io/habring/habring:test", NativeSidecar: true}}
	if first, _, _ := strings.Cut(string(data), "\n"); strings.HasPrefix(first, "# options:") {
		for _, kv := range strings.Fields(strings.TrimPrefix(first, "# options:")) {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "max-peers":
				c.opts.MaxPeers, err = strconv.Atoi(v)
				require.NoError(t, err)
			case "native-sidecar":
				c.opts.NativeSidecar = v == "true"
			case "cluster-domain":
				c.opts.ClusterDomain = v
			default:
				t.Fatalf("%s: unknown option %q", path, k)
			}
		}
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		require.NoError(t, err, "%s: a document is not a Kubernetes object", path)
		switch o := obj.(type) {
		case *corev1.Pod:
			require.Nil(t, c.pod, "%s: more than one Pod", path)
			c.pod = o
			c.rawPod, err = yaml.YAMLToJSON(doc)
			require.NoError(t, err)
		case *appsv1.StatefulSet:
			c.objs.StatefulSets = append(c.objs.StatefulSets, o)
		case *appsv1.Deployment:
			c.objs.Deployments = append(c.objs.Deployments, o)
		case *discoveryv1.EndpointSlice:
			c.objs.EndpointSlices = append(c.objs.EndpointSlices, o)
		default:
			t.Fatalf("%s: unexpected %T", path, obj)
		}
	}
	require.NotNil(t, c.pod, "%s: no Pod", path)
	return c
}

// requireSameUnknownFields checks that every field of the raw input that corev1.Pod does
// not know (a newer API server's) is still there, unchanged, after the patch.
func requireSameUnknownFields(t *testing.T, before, after []byte) {
	t.Helper()
	var raw, known, patched any
	require.NoError(t, json.Unmarshal(before, &raw))
	var typed corev1.Pod
	require.NoError(t, json.Unmarshal(before, &typed))
	k, err := json.Marshal(&typed)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(k, &known))
	require.NoError(t, json.Unmarshal(after, &patched))
	unknown := map[string]any{}
	unknownFields(raw, known, "", unknown)
	for path, v := range unknown {
		ptr, err := jsonpatch5.DecodePatch([]byte(`[{"op":"test","path":` + strconv.Quote(path) + `,"value":` + mustJSON(t, v) + `}]`))
		require.NoError(t, err)
		_, err = ptr.Apply(after)
		require.NoError(t, err, "unknown field %s was changed or lost by the patch", path)
	}
}

func unknownFields(raw, known any, path string, out map[string]any) {
	switch r := raw.(type) {
	case map[string]any:
		k, _ := known.(map[string]any)
		for key, v := range r {
			p := path + "/" + jsonpointer.Escape(key)
			if kv, ok := k[key]; ok {
				unknownFields(v, kv, p, out)
			} else if !isEmpty(v) { // an explicit {} or [] the types omit is not unknown
				out[p] = v
			}
		}
	case []any:
		k, _ := known.([]any)
		for i, v := range r {
			if i < len(k) {
				unknownFields(v, k[i], path+"/"+strconv.Itoa(i), out)
			}
		}
	}
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}
