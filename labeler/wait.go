package labeler

import (
	"context"
	"math/rand/v2"
	"time"

	"k8s.io/utils/clock"
)

// jitter is d plus up to factor times d, at random (apimachinery's wait.Jitter): labelers
// started together spread out.
func jitter(d time.Duration, factor float64) time.Duration {
	return d + time.Duration(rand.Float64()*factor*float64(d)) //nolint:gosec // spreading timers, not a secret
}

// sleep waits d on clk, or less when ctx ends first; it reports whether ctx is still alive.
func sleep(ctx context.Context, clk clock.Clock, d time.Duration) bool {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}
