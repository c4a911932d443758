package labeler

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/habring/habring/contract"
)

// joinedGate keeps the pod condition habitat.sh/ring-joined, when the pod has that
// readiness gate (habitat.sh/readiness-gate: ring-joined): True once the Supervisor knows
// another alive member, or the pod bootstraps the ring (pod 0 of an empty ring, admitted
// with no peers); False, with a reason, while it knows none. A rolling update then waits
// for each new pod to join, and EndpointSlices list only members of the ring.
type joinedGate struct {
	l         *Labeler
	enabled   bool
	bootstrap bool
	written   string // "True/Reason" last written; "" before the first write
}

func newJoinedGate(l *Labeler, own *corev1.Pod) *joinedGate {
	return &joinedGate{l: l,
		enabled: slices.ContainsFunc(own.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool {
			return g.ConditionType == contract.ConditionRingJoined
		}),
		bootstrap: contract.Bootstraps(own.Annotations),
	}
}

// observe sets the condition from a census.
func (j *joinedGate) observe(ctx context.Context, c *Census) {
	if !j.enabled {
		return
	}
	others := 0
	for _, g := range c.Groups {
		for id, m := range g.Population {
			if id != c.LocalMemberID && m.Alive {
				others++
			}
		}
	}
	switch {
	case others > 0:
		j.set(ctx, true, "Joined", fmt.Sprintf("the Supervisor knows %d other alive member(s)", others))
	case j.bootstrap:
		j.set(ctx, true, "Bootstrapping", "the pod starts the ring: it was admitted with no peer")
	default:
		j.set(ctx, false, "Alone", "the Supervisor knows no other alive member of the ring")
	}
}

// set writes the condition when it changes: a strategic merge patch of the pod's status
// (conditions merge by type), nothing else.
func (j *joinedGate) set(ctx context.Context, ok bool, reason, message string) {
	if !j.enabled {
		return
	}
	status := "False"
	if ok {
		status = "True"
	}
	key := status + "/" + reason
	if key == j.written {
		return
	}
	type podCondition struct {
		Type               string `json:"type"`
		Status             string `json:"status"`
		LastTransitionTime string `json:"lastTransitionTime"`
		Reason             string `json:"reason"`
		Message            string `json:"message"`
	}
	body, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []podCondition{{
		Type: contract.ConditionRingJoined, Status: status, Reason: reason, Message: message,
		LastTransitionTime: j.l.clock.Now().UTC().Format(time.RFC3339), // metav1.Time: seconds, UTC
	}}}})
	if err != nil {
		return
	}
	err = j.l.patchPod(ctx, j.l.cfg.PodName, types.StrategicMergePatchType, body, "status")
	j.l.statusFails.observe(err, rbacHint(j.l.cfg.Namespace))
	if err != nil {
		return
	}
	j.l.log.Info("ring-joined condition", "status", status, "reason", reason, "message", message)
	j.written = key
}
