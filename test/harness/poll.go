package harness

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Until calls f every interval, the first time at once, until it returns nil; past timeout
// (or when ctx ends) it returns f's last error, saying how long it waited. It is
// apimachinery's PollUntilContextTimeout keeping the reason a condition was not met, where
// that says only that the wait timed out.
func Until(ctx context.Context, interval, timeout time.Duration, f func() error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(context.Context) (bool, error) {
		last = f()
		return last == nil, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("after %s: %w", timeout, last)
	}
	return err
}
