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
// returns the leader.
func (r *Ring) waitReplicating(ctx context.Context, timeout time.Duration) (corev1.Pod, error) {
	var leader corev1.Pod
	err := until(ctx, timeout, func() error {
		pods, err := r.redisPods(ctx)
		if err != nil {
			return err
		}
		var leaders []corev1.Pod
		ready := 0
		for _, p := range pods {
			if harness.PodReady(&p) {
				ready++
			}
			if p.Labels[contract.LabelRole] == contract.RoleLeader {
				leaders = append(leaders, p)
			}
		}
		if len(leaders) != 1 || ready != 3 {
			return fmt.Errorf("%d ready redis pods, %d labelled leader", ready, len(leaders))
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
		if role.Role != "master" || len(role.Replicas) != 2 {
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

// cutOff blackholes, in the leader's network namespace, the route to every other pod of
// the namespace (the ring's members: gossip and replication), keeping the node's bridge
// gateway: clients and the API server still reach it. The heal removes the routes once
// hold has passed since the cut.
func (r *Ring) cutOff(ctx context.Context, leader corev1.Pod, hold time.Duration) (func(context.Context) error, error) {
	n, err := r.env.Runner.Network(r.Namespace, leader.Name)
	if err != nil {
		return nil, err
	}
	list, err := r.env.Client.CoreV1().Pods(r.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var cut []string
	for _, p := range list.Items {
		if p.Name != leader.Name && p.Status.PodIP != "" {
			cut = append(cut, p.Status.PodIP)
		}
	}
	routes := func(ctx context.Context, verb string) error {
		var errs []error
		for _, ip := range cut {
			if out, err := n.Command(ctx, "ip", "route", verb, "blackhole", ip+"/32").CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("ip route %s blackhole %s: %w: %s", verb, ip, err, strings.TrimSpace(string(out))))
			}
		}
		return errors.Join(errs...)
	}
	start := time.Now()
	heal := func(ctx context.Context) error {
		sleep(ctx, hold-time.Since(start))
		return routes(context.WithoutCancel(ctx), "del")
	}
	if err := routes(ctx, "add"); err != nil {
		return heal, err
	}
	fmt.Fprintf(r.env.Progress, "failover: %s: %s cut off from %s\n", r.Namespace, leader.Name, strings.Join(cut, ", "))
	return heal, nil
}

// until retries f every 200 ms until it succeeds or timeout passes; the error is its last.
func until(ctx context.Context, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
