package labeler

import (
	"math/rand/v2"
	"time"
)

// jitter is d plus up to factor times d, at random: labelers started together spread out.
func jitter(d time.Duration, factor float64) time.Duration {
	return d + time.Duration(rand.Float64()*factor*float64(d)) //nolint:gosec // spreading timers, not a secret
}

// backoff is an exponential back-off: each step is the last times factor, jittered, up to cap.
type backoff struct {
	next, cap      time.Duration
	factor, jitter float64
}

// Step is the next wait.
func (b *backoff) Step() time.Duration {
	d := jitter(b.next, b.jitter)
	b.next = min(time.Duration(float64(b.next)*b.factor), b.cap)
	return min(d, b.cap)
}
