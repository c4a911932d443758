package webhook

import (
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/habring/habring/internal/patch"
)

func TestNativeSidecars(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		mode, server string
		want         bool
		wantErr      string
	}{
		"auto, 1.37":          {mode: SidecarAuto, server: "v1.37.2", want: true},
		"auto, 1.29":          {mode: SidecarAuto, server: "v1.29.0", want: true},
		"auto, 1.28":          {mode: SidecarAuto, server: "v1.28.9", want: false},
		"auto, vendor suffix": {mode: SidecarAuto, server: "v1.30.4-eks-a1b2c3", want: true},
		"auto, unparsable":    {mode: SidecarAuto, server: "v0.0.0-master+$Format:%H$", want: false},
		"auto, garbage":       {mode: SidecarAuto, server: "latest", wantErr: `parse API server version "latest"`},
		"native forced":       {mode: patch.SidecarNative, server: "v1.20.0", want: true},
		"container forced":    {mode: patch.SidecarContainer, server: "v1.37.2", want: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := &fakediscovery.FakeDiscovery{Fake: &k8stesting.Fake{}, FakedServerVersion: &version.Info{GitVersion: tc.server}}
			got, err := nativeSidecars(tc.mode, d)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.ErrorContains(t, err, "--sidecar-mode=native|container", "the error must say what to do")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
