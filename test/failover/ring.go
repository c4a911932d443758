package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/test/harness"
	"github.com/habring/habring/test/runner"
	"github.com/habring/habring/test/supervisor"
)

// Ring is one HA Redis under test, in a namespace of its own.
type Ring struct {
	env       Env
	Namespace string
	Setup     Setup
	password  string
	// size is how many ready redis pods the ring has when it converged (3 but while it is
	// scaled).
	size int
	// cut names the pods a partition holds cut off until its heal: the ring converges
	// without them meanwhile.
	cut       []string
	stopLabel context.CancelFunc
	labelDone sync.WaitGroup
}

func (r *Ring) setUp(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: r.Namespace, Annotations: runner.NamespaceAnnotations()}}
	if r.Setup.Habring {
		ns.Labels = map[string]string{contract.LabelInject: contract.InjectEnabled}
	}
	if _, err := r.env.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := until(ctx, 30*time.Second, func() error {
		_, err := r.env.Client.CoreV1().ServiceAccounts(r.Namespace).Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("service account default: %w", err)
	}
	var err error
	if r.password, err = harness.ExampleSecrets(ctx, r.env.Client, r.Namespace); err != nil {
		return err
	}
	if r.Setup.Habring {
		// examples/ as a user applies it.
		for _, f := range []string{"examples/labeler-rolebinding.yaml", "examples/ring.yaml"} {
			if err := harness.ApplyFile(ctx, r.env.Config, f, r.Namespace); err != nil {
				return err
			}
		}
		return nil
	}
	for _, obj := range r.baseline() {
		if err := r.create(ctx, obj); err != nil {
			return err
		}
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.stopLabel = cancel
	r.labelDone.Go(func() { r.naiveLabels(lctx) })
	return nil
}

func (r *Ring) cleanup() {
	if r.stopLabel != nil {
		r.stopLabel()
		r.labelDone.Wait()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = r.env.Client.CoreV1().Namespaces().Delete(ctx, r.Namespace, metav1.DeleteOptions{})
}

// seedScript is the bootstrap StatefulSet's Supervisor start, as the seed's workaround
// wrote it: pod N peers with pods 0..N-1 by their stable names, pod 0 with nobody.
const seedScript = `ord=${HOSTNAME##*-}
set --
i=0
while [ "$i" -lt "$ord" ]; do
  set -- "$@" "--peer=redis-$i.redis.$NAMESPACE.svc.cluster.local"
  i=$((i+1))
done
exec hab sup run habring/redis --topology=leader --listen-gossip=0.0.0.0:9638 --sys-ip-address="$POD_IP" "$@"`

// baseline is the seed's HA Redis: a bootstrap StatefulSet of 3 running the same plan and
// password, and the same two Services; the checker labels its pods the naive way.
func (r *Ring) baseline() []any {
	env := []corev1.EnvVar{
		{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		{Name: "REDIS_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: harness.RedisAuthSecret}, Key: "password"}}},
		{Name: "HAB_REDIS", Value: "requirepass = \"$(REDIS_PASSWORD)\"\nmasterauth = \"$(REDIS_PASSWORD)\"\n"},
		{Name: "HAB_RING_KEY", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "ring-key"}, Key: "ring-key"}}},
	}
	c := corev1.Container{Name: "redis", Image: harness.RedisImageRepo + ":latest", Command: []string{"sh", "-c", seedScript}, Env: env,
		ReadinessProbe: &corev1.Probe{PeriodSeconds: 2, ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(6379)}}}}
	labels := map[string]string{"app": "redis"}
	headless := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "redis", Namespace: r.Namespace},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: labels, Ports: []corev1.ServicePort{{Name: "gossip", Port: 9638}}}}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "redis", Namespace: r.Namespace},
		Spec: appsv1.StatefulSetSpec{ServiceName: "redis", Replicas: ptr.To[int32](3), PodManagementPolicy: appsv1.OrderedReadyPodManagement,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](30), Containers: []corev1.Container{c}}}}}
	role := func(name, role string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.Namespace},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "redis", contract.LabelRole: role},
				Ports: []corev1.ServicePort{{Name: "redis", Port: 6379}}}}
	}
	return []any{headless, sts, role("redis-master", contract.RoleLeader), role("redis-slave", contract.RoleFollower)}
}

func (r *Ring) create(ctx context.Context, obj any) error {
	var err error
	switch o := obj.(type) {
	case *corev1.Service:
		_, err = r.env.Client.CoreV1().Services(r.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *appsv1.StatefulSet:
		_, err = r.env.Client.AppsV1().StatefulSets(r.Namespace).Create(ctx, o, metav1.CreateOptions{})
	default:
		err = fmt.Errorf("cannot create %T", obj)
	}
	return err
}

// naiveLabels is the seed's labeler: every 5 s, each pod's census read and its role label
// updated to what it says, with no fence: two pods both claiming are both labelled.
func (r *Ring) naiveLabels(ctx context.Context) {
	for ctx.Err() == nil {
		pods, _ := r.redisPods(ctx)
		for _, p := range pods {
			role := contract.RoleNone
			if c, err := harness.Gateway[supervisor.Census](ctx, p.Status.PodIP, "/census"); err == nil {
				if g, ok := c.CensusGroups["redis.default"]; ok && g.ElectionStatus == supervisor.ElectionFinished && g.LeaderID != nil {
					role = contract.RoleFollower
					if *g.LeaderID == c.LocalMemberID {
						role = contract.RoleLeader
					}
				}
			}
			if p.Labels[contract.LabelRole] != role {
				patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{contract.LabelRole: role}}})
				_, _ = r.env.Client.CoreV1().Pods(r.Namespace).Patch(ctx, p.Name, types.MergePatchType, patch, metav1.PatchOptions{})
			}
		}
		sleep(ctx, 5*time.Second)
	}
}

// redisPods are the running pods of the Redis (not being deleted, with an address).
func (r *Ring) redisPods(ctx context.Context) ([]corev1.Pod, error) {
	list, err := r.env.Client.CoreV1().Pods(r.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=redis"})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" && p.Status.Phase == corev1.PodRunning {
			out = append(out, p)
		}
	}
	return out, nil
}

// serviceAddresses lists the ready addresses of a Service's EndpointSlices.
func (r *Ring) serviceAddresses(ctx context.Context, svc string) ([]string, error) {
	list, err := r.env.Client.DiscoveryV1().EndpointSlices(r.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range list.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				out = append(out, ep.Addresses...)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// waitReplicating waits until exactly one pod is labelled leader, redis-master lists just
// it, its Redis is a master and every other ready redis pod a connected replica of it; it
// returns the leader. Pods cut off by a partition (r.cut) are left out until it heals.
func (r *Ring) waitReplicating(ctx context.Context, timeout time.Duration) (corev1.Pod, error) {
	var leader corev1.Pod
	err := until(ctx, timeout, func() error {
		all, err := r.redisPods(ctx)
		if err != nil {
			return err
		}
		var pods, leaders []corev1.Pod
		ready := 0
		for _, p := range all {
			if p.Labels[contract.LabelRole] == contract.RoleLeader {
				leaders = append(leaders, p)
			}
			if slices.Contains(r.cut, p.Name) {
				continue
			}
			pods = append(pods, p)
			if harness.PodReady(&p) {
				ready++
			}
		}
		want := r.size - len(r.cut)
		if len(leaders) != 1 || ready != want || slices.Contains(r.cut, leaders[0].Name) {
			return fmt.Errorf("%d ready redis pods (want %d), %d labelled leader", ready, want, len(leaders))
		}
		leader = leaders[0]
		eps, err := r.serviceAddresses(ctx, "redis-master")
		if err != nil {
			return err
		}
		if !slices.Equal(eps, []string{leader.Status.PodIP}) {
			return fmt.Errorf("redis-master lists %v, the leader is %s", eps, leader.Status.PodIP)
		}
		role, err := harness.Role(ctx, leader.Status.PodIP, r.password)
		if err != nil {
			return fmt.Errorf("the leader's Redis: %w", err)
		}
		if role.Role != "master" || len(role.Replicas) < want-1 {
			return fmt.Errorf("the leader's Redis: %v", role)
		}
		for _, p := range pods {
			if p.Name == leader.Name {
				continue
			}
			role, err := harness.Role(ctx, p.Status.PodIP, r.password)
			if err != nil {
				return fmt.Errorf("%s's Redis: %w", p.Name, err)
			}
			if role.Role != "slave" || role.Master != leader.Status.PodIP+":6379" || role.Link != "connected" {
				return fmt.Errorf("%s's Redis: %v", p.Name, role)
			}
		}
		return nil
	})
	return leader, err
}

// cutOffFromMembers cuts the leader off from every other pod (the ring's members: gossip
// and replication; also pods created meanwhile), keeping the node's gateway: clients and
// the API server still reach it. (Routes to the members' addresses, as a first version
// did, missed a pod that had no address yet when the cut was made.)
func (r *Ring) cutOffFromMembers(ctx context.Context, leader corev1.Pod) (func(context.Context) error, error) {
	prefix, gateway := r.env.Runner.PodNetwork()
	return r.block(ctx, []corev1.Pod{leader}, true, "the other pods ("+prefix.String()+" but "+gateway.String()+")",
		[]string{"to", gateway.String() + "/32", "lookup", "main"}, []string{"to", prefix.String(), "blackhole"})
}

// blockPref is the first routing rule a block adds, the next ones follow it: after the
// local table (0), so a pod's own addresses and loopback still answer, before the main
// table (32766).
const blockPref = 100

// block adds the routing rules (ip rule add pref 100+i <rule>) in each pod's network
// namespace: packets a blackhole rule matches are dropped, as by a network that lost them.
// The heal deletes the rules once hold has passed since the block; a pod gone meanwhile
// took its namespace and its rules with it. isolate says the pods are cut off from their
// members too: the ring converges without them until the heal.
func (r *Ring) block(ctx context.Context, pods []corev1.Pod, isolate bool, what string, rules ...[]string) (func(context.Context) error, error) {
	apply := func(ctx context.Context, p corev1.Pod, verb string) error {
		n, err := r.env.Runner.Network(r.Namespace, p.Name)
		if err != nil {
			if verb == "del" {
				return nil // the pod is gone
			}
			return err
		}
		var errs []error
		for i, rule := range rules {
			args := append([]string{"rule", verb, "pref", fmt.Sprint(blockPref + i)}, rule...)
			if out, err := n.Command(ctx, "ip", args...).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("%s: ip %s: %w: %s", p.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out))))
			}
		}
		return errors.Join(errs...)
	}
	var added []corev1.Pod
	start := time.Now()
	heal := func(ctx context.Context) error {
		sleep(ctx, hold-time.Since(start))
		r.cut = nil
		var errs []error
		for _, p := range added {
			errs = append(errs, apply(context.WithoutCancel(ctx), p, "del"))
		}
		return errors.Join(errs...)
	}
	var names []string
	for _, p := range pods {
		if isolate {
			r.cut = append(r.cut, p.Name)
		}
		added, names = append(added, p), append(names, p.Name)
		if err := apply(ctx, p, "add"); err != nil {
			return heal, err
		}
	}
	fmt.Fprintf(r.env.Progress, "failover: %s: %s cut off from %s\n", r.Namespace, strings.Join(names, ", "), what)
	return heal, nil
}

// rollout restarts the ring's workload as `kubectl rollout restart` does (a new template
// annotation) and waits until the rollout is complete, as `kubectl rollout status`.
func (r *Ring) rollout(ctx context.Context) error {
	patch := fmt.Appendf(nil, `{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339))
	if err := r.patchWorkload(ctx, patch); err != nil {
		return err
	}
	fmt.Fprintf(r.env.Progress, "failover: %s: rolling update started\n", r.Namespace)
	return until(ctx, rolloutTimeout, func() error { return r.rolledOut(ctx) })
}

// rolloutTimeout bounds a rollout of the ring or a scale: every pod replaced one by one.
const rolloutTimeout = 5 * time.Minute

// scaleUpAndDown scales the ring to n, waits until all n replicate the leader, then scales
// it back and waits until the pods beyond the first size are gone.
func (r *Ring) scaleUpAndDown(ctx context.Context, n int) error {
	size := r.size
	if err := r.patchWorkload(ctx, fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, n)); err != nil {
		return err
	}
	r.size = n
	if _, err := r.waitReplicating(ctx, rolloutTimeout); err != nil {
		return fmt.Errorf("scaled to %d: %w", n, err)
	}
	fmt.Fprintf(r.env.Progress, "failover: %s: %d pods replicate; scaling back to %d\n", r.Namespace, n, size)
	r.size = size
	if err := r.patchWorkload(ctx, fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, size)); err != nil {
		return err
	}
	return until(ctx, rolloutTimeout, func() error { return r.rolledOut(ctx) })
}

// patchWorkload merge-patches the ring's Deployment (habring) or StatefulSet (baseline).
func (r *Ring) patchWorkload(ctx context.Context, patch []byte) error {
	var err error
	if r.Setup.Habring {
		_, err = r.env.Client.AppsV1().Deployments(r.Namespace).Patch(ctx, "redis", types.MergePatchType, patch, metav1.PatchOptions{})
	} else {
		_, err = r.env.Client.AppsV1().StatefulSets(r.Namespace).Patch(ctx, "redis", types.MergePatchType, patch, metav1.PatchOptions{})
	}
	return err
}

// rolledOut says why the workload's rollout is not complete (kubectl rollout status's
// rules), nil once it is and no pod beyond its replicas is left.
func (r *Ring) rolledOut(ctx context.Context) error {
	rolledOut := harness.StatefulSetRolledOut
	if r.Setup.Habring {
		rolledOut = harness.DeploymentRolledOut
	}
	if err := rolledOut(ctx, r.env.Client, r.Namespace, "redis"); err != nil {
		return err
	}
	list, err := r.env.Client.CoreV1().Pods(r.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=redis"})
	if err != nil {
		return err
	}
	if len(list.Items) != r.size {
		return fmt.Errorf("%d redis pods, want %d", len(list.Items), r.size)
	}
	return nil
}

// until retries f every 200 ms until it succeeds or timeout passes; the error is its last.
func until(ctx context.Context, timeout time.Duration, f func() error) error {
	return harness.Until(ctx, 200*time.Millisecond, timeout, f)
}
