package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/habring/habring/test/chaos"
)

// testWriter sends chaos's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// One scenario of make chaos, side by side: pod 0 of a running ring deleted. The seed's
// bootstrap StatefulSet splits (the re-created pod 0 has no --peer and elects itself: two
// rings, two leaders), which shows the double is not kinder than the real Supervisor;
// habring's re-created pod 0 peers with the live members and the ring stays one, with one
// leader.
func TestChaosPodZeroDeleted(t *testing.T) {
	e := requireEnv(t)
	if e.runner == nil {
		t.Skipf("pods cannot run here: %v", e.noRunner)
	}
	t.Parallel()
	applyFile(t, e, "deploy/labeler-rbac.yaml", "")
	applyFile(t, e, "deploy/labeler-policy.yaml", "")
	sc, ok := chaos.Named("pod 0 deleted")
	require.True(t, ok)
	results := chaos.Run(t.Context(), chaos.Env{Client: e.client, Config: e.cluster.Config, Runner: e.runner,
		Progress: testWriter{t}, Settle: 45 * time.Second}, []chaos.Scenario{sc}, []chaos.Setup{chaos.Setups[0], chaos.Setups[2]})
	require.Len(t, results, 2)
	habring, seed := results[0], results[1]
	require.NoError(t, habring.Err)
	require.True(t, habring.OK(), "habring args: %s", habring.Summary())
	require.NoError(t, seed.Err)
	require.False(t, seed.OK(), "the bootstrap StatefulSet healed: the double is kinder than the real Supervisor (%s)", seed.Summary())
	require.GreaterOrEqual(t, seed.Final.Rings, 2, "bootstrap StatefulSet: %s", seed.Summary())
	require.Equal(t, 2, seed.Final.Leaders, "bootstrap StatefulSet: %s", seed.Summary())
}
