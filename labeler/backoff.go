package labeler

import (
	"math/rand/v2"
	"time"
)

// jitter is d plus up to factor times d, at random (apimachinery's wait.Jitter): labelers
// started together spread out.
func jitter(d time.Duration, factor float64) time.Duration {
	return d + time.Duration(rand.Float64()*factor*float64(d)) //nolint:gosec // spreading timers, not a secret
}
