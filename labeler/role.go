package labeler

import (
	"context"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/habring/habring/patch"
)

// keepRole is the census loop: read, decide, write the label when it changes.
func (l *Labeler) keepRole(ctx context.Context) {
	current := l.currentLabel(ctx) // "" when unknown: the first decision is written
	lastOK := l.clock.Now()        // a Supervisor that never answers is stale after StaleAfter too
	failing := false               // in a streak of failed reads: warn once, not every read
	backoff := l.backoff()
	for {
		role, group, err := l.read(ctx)
		want := role
		if err != nil {
			l.censusOK.Store(false)
			l.metrics.censusFails.Inc()
			if !failing {
				l.log.Warn("census read failed; keeping the last label until --stale-after", "err", err, "staleAfter", l.cfg.StaleAfter)
			} else {
				l.log.Debug("census read failed again", "err", err)
			}
			failing = true
			want = current
			if l.clock.Since(lastOK) >= l.cfg.StaleAfter {
				want = patch.RoleNone
			}
		} else {
			if failing {
				l.log.Info("census read recovered", "group", group)
				failing = false
			}
			l.censusOK.Store(true)
			lastOK = l.clock.Now()
			backoff = l.backoff()
		}
		if want != "" && want != current {
			if err := l.setRole(ctx, want); err != nil {
				l.log.Error("label write failed; will retry", "role", want, "err", err)
			} else {
				l.log.Info("role label changed", "from", current, "to", want, "group", group)
				current = want
			}
		}
		next := wait.Jitter(l.cfg.Interval, 0.2)
		if err != nil {
			next = backoff.Step()
			// Never sleep past the moment a kept label turns stale.
			if untilStale := lastOK.Add(l.cfg.StaleAfter).Sub(l.clock.Now()); current != patch.RoleNone && untilStale > 0 && untilStale < next {
				next = untilStale
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-l.clock.After(next):
		}
	}
}

// backoff retries a failing gateway from Interval up to four times that, so a Supervisor
// that is restarting is not hammered, and a stale label still turns "none" in time.
func (l *Labeler) backoff() wait.Backoff {
	return wait.Backoff{Duration: l.cfg.Interval, Factor: 1.5, Jitter: 0.2, Steps: 1 << 30, Cap: min(4*l.cfg.Interval, l.cfg.StaleAfter)}
}

func (l *Labeler) read(ctx context.Context) (role, group string, err error) {
	c, err := l.gateway.Census(ctx)
	if err != nil {
		return "", "", err
	}
	return Decide(c, l.cfg.ServiceGroup)
}

func (l *Labeler) currentLabel(ctx context.Context) string {
	pod, err := l.client.CoreV1().Pods(l.cfg.Namespace).Get(ctx, l.cfg.PodName, metav1.GetOptions{})
	if err != nil {
		l.log.Warn("cannot read own pod; will write the first role unconditionally", "pod", l.cfg.PodName, "err", err)
		return ""
	}
	return pod.Labels[patch.LabelRole]
}

// setRole writes only the role label, with a JSON merge patch: no read-modify-write race
// with anything else changing the pod.
func (l *Labeler) setRole(ctx context.Context, role string) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{patch.LabelRole: role}}})
	if err != nil {
		return err
	}
	_, err = l.client.CoreV1().Pods(l.cfg.Namespace).Patch(ctx, l.cfg.PodName, types.MergePatchType, body, metav1.PatchOptions{FieldManager: "habring-labeler"})
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%w (does the pod's service account have the habring-labeler RoleBinding in %s?)", err, l.cfg.Namespace)
	}
	if err != nil {
		return err
	}
	l.metrics.wrote(role)
	return nil
}
