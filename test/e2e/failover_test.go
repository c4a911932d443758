package e2e

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/habring/habring/test/failover"
	"github.com/habring/habring/test/harness"
)

// One scenario of make failover, side by side, so it cannot rot: the leader of the example
// HA Redis SIGKILLed (its Supervisor and its Redis) while writers add to a set through
// redis-master. habring must lose no write a replica confirmed (WAIT 1) and never have two
// masters behind redis-master; the baseline is measured and logged.
func TestFailoverLeaderKilled(t *testing.T) {
	e := requireEnv(t)
	if e.runner == nil {
		t.Skipf("pods cannot run here: %v", e.noRunner)
	}
	require.NoError(t, harness.RedisSupported(), "the example's pods run redis-server")
	t.Parallel()
	applyFile(t, e, "deploy/labeler-rbac.yaml", "")
	applyFile(t, e, "deploy/labeler-policy.yaml", "")
	sc, ok := failover.Named("leader SIGKILLed (Supervisor and Redis)")
	require.True(t, ok)
	results := failover.Run(t.Context(), failover.Env{Client: e.client, Config: e.cluster.Config, Runner: e.runner, Progress: testWriter{t}},
		[]failover.Scenario{sc}, failover.Setups, 1)
	require.Len(t, results, 2)
	habring, seed := results[0], results[1]
	require.NoError(t, habring.Err)
	assert.Empty(t, habring.Unconverged)
	assert.Positive(t, habring.Wait1.Acked, "writes were made")
	assert.Zero(t, habring.Wait1.Lost, "habring: %s", habring.Summary())
	assert.LessOrEqual(t, habring.MastersReachable, 1, "habring: %s", habring.Summary())
	require.NoError(t, seed.Err, "bootstrap StatefulSet: the trial itself")
	t.Logf("bootstrap StatefulSet: %s", seed.Summary())
}
