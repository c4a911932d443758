//go:build race

package webhook

// raceEnabled: the race detector multiplies every goroutine's memory, so memory bounds are
// only asserted without it.
const raceEnabled = true
