package render

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/habring/habring/internal/patch"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml (read the diff first)")

// TestGolden renders every testdata/*.yaml; the golden file holds the pods, then any
// error after a "# error:" line. examples-ring.yaml must stay a copy of examples/ring.yaml.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	require.NoError(t, err)
	var n int
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden.yaml") {
			if _, err := os.Stat(strings.TrimSuffix(in, ".golden.yaml") + ".yaml"); err != nil {
				t.Errorf("golden file %s has no input", in)
			}
			continue
		}
		n++
		t.Run(strings.TrimSuffix(filepath.Base(in), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(in)
			require.NoError(t, err)
			var out bytes.Buffer
			objs, skipped, err := Parse(data, "default")
			if err == nil {
				for _, s := range skipped {
					out.WriteString("# skipped: " + s + "\n")
				}
				pods, rerr := Render(t.Context(), objs, objs, patch.Options{LabelerImage: DefaultImage, NativeSidecar: true})
				require.NoError(t, YAML(&out, pods))
				err = rerr
			}
			if err != nil {
				out.WriteString("# error: " + strings.ReplaceAll(err.Error(), "\n", "\n# error: ") + "\n")
			}
			golden := strings.TrimSuffix(in, ".yaml") + ".golden.yaml"
			if *update {
				require.NoError(t, os.WriteFile(golden, out.Bytes(), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test ./render -update and read the result")
			require.Equal(t, string(want), out.String())
		})
	}
	require.NotZero(t, n)
	example, err := os.ReadFile("../../examples/ring.yaml")
	require.NoError(t, err)
	copied, err := os.ReadFile("testdata/examples-ring.yaml")
	require.NoError(t, err)
	require.Equal(t, string(example), string(copied), "cp examples/ring.yaml internal/render/testdata/examples-ring.yaml")
}
