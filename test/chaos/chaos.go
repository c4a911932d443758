// Package chaos breaks running rings on purpose, side by side: the same disruptions against
// habring in args mode, habring in watch-file mode, and the seed's bootstrap StatefulSet
// (pod N `--peer`s pods 0..N-1 by stable name, pod 0 none, no webhook in the path). After
// each it measures what a ring's operator cares about: how many rings the members' views
// make, how many pods are the leader, how long until one ring with one leader, and how many
// dead members still count in the quorum.
//
// The pods really run (test/runner): Supervisors are the double (test/supervisor), labelers
// the real habring-labeler. `make chaos` runs every scenario (cmd/chaos); the e2e suite runs
// one.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/test/harness"
	"github.com/habring/habring/test/runner"
	"github.com/habring/habring/test/supervisor"
)

// Env is where the rings run: a control plane with habring's webhook installed and a
// runner whose node runs the pods.
type Env struct {
	Client   kubernetes.Interface
	Config   *rest.Config
	Runner   *runner.Runner
	Progress io.Writer
	// Settle is how long a ring gets to become one ring with one leader after a disruption
	// (default 90 s).
	Settle time.Duration
}

// Setup is one way of running a ring.
type Setup struct {
	Name     string
	Habring  bool   // the webhook injects peers; the labeler labels the leader
	PeerMode string // habring's habitat.sh/peer-mode
}

// Setups are both habring modes and the baseline.
var Setups = []Setup{
	{Name: "habring args", Habring: true, PeerMode: contract.PeerModeArgs},
	{Name: "habring watch-file", Habring: true, PeerMode: contract.PeerModeWatchFile},
	{Name: "bootstrap StatefulSet", Habring: false},
}

// Scenario is one disruption of a formed ring.
type Scenario struct {
	Name string
	// DeploymentFirst builds the ring with its Deployment created before its StatefulSet;
	// Disrupt then creates the StatefulSet.
	DeploymentFirst bool
	Disrupt         func(ctx context.Context, r *Ring) error
}

// Scenarios are DESIGN.md's "Chaos, side by side".
var Scenarios = []Scenario{
	{Name: "scale 3→7→3", Disrupt: func(ctx context.Context, r *Ring) error {
		if err := r.scale(ctx, 7); err != nil {
			return err
		}
		return r.scale(ctx, 3)
	}},
	{Name: "rolling update of the Deployment", Disrupt: func(ctx context.Context, r *Ring) error { return r.rollDeployment(ctx) }},
	{Name: "leader pod deleted", Disrupt: func(ctx context.Context, r *Ring) error {
		leader, err := r.leaderPod(ctx)
		if err != nil {
			return err
		}
		return r.deletePods(ctx, leader)
	}},
	{Name: "pod 0 deleted", Disrupt: func(ctx context.Context, r *Ring) error { return r.deletePods(ctx, "redis-0") }},
	{Name: "pods 0 and 1 deleted together", Disrupt: func(ctx context.Context, r *Ring) error {
		return r.deletePods(ctx, "redis-0", "redis-1")
	}},
	{Name: "pod 0's Supervisor killed, restarted in place", Disrupt: func(_ context.Context, r *Ring) error {
		return r.env.Runner.Kill(r.Namespace, "redis-0", "redis")
	}},
	{Name: "every ring pod deleted at once", Disrupt: func(ctx context.Context, r *Ring) error {
		return r.env.Client.CoreV1().Pods(r.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: "app in (redis,web)"})
	}},
	{Name: "Deployment created before its StatefulSet", DeploymentFirst: true, Disrupt: func(ctx context.Context, r *Ring) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second): // the Deployment's pods wait (habring) or crash-loop (baseline)
		}
		return r.create(ctx, r.statefulSet())
	}},
}

// Result is one scenario against one setup.
type Result struct {
	Scenario, Setup string
	Habring         bool
	// Final is the state when the ring settled, or when Settle ran out.
	Final State
	// Settled is the time from the disruption's end until one ring with one leader held
	// (for 2 s); zero when it never did.
	Settled time.Duration
	// Err is a failure to set up or disrupt (not a ring that did not heal).
	Err error
}

// OK reports whether the ring ended as one ring with one leader.
func (r Result) OK() bool { return r.Err == nil && r.Final.OK() }

// Run runs every scenario against every setup: the setups side by side, the scenarios one
// after another, each on a fresh ring in a namespace of its own.
func Run(ctx context.Context, env Env, scenarios []Scenario, setups []Setup) []Result {
	if env.Settle == 0 {
		env.Settle = 90 * time.Second
	}
	var results []Result
	for i, sc := range scenarios {
		out := make([]Result, len(setups))
		var wg sync.WaitGroup
		for j, st := range setups {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out[j] = runOne(ctx, env, fmt.Sprintf("chaos-%d-%d", i, j), sc, st)
			}()
		}
		wg.Wait()
		for _, r := range out {
			fmt.Fprintf(env.Progress, "chaos: %-48s %-22s %s\n", r.Scenario, r.Setup, r.Summary())
		}
		results = append(results, out...)
	}
	return results
}

// Summary is a result in a few words.
func (r Result) Summary() string {
	if r.Err != nil {
		return "error: " + r.Err.Error()
	}
	settled := "never (" + r.Final.String() + ")"
	if r.Settled > 0 {
		settled = fmt.Sprintf("%.1fs", r.Settled.Seconds())
	}
	return fmt.Sprintf("rings %d, leaders %d, one ring+leader after %s, dead in quorum %d", r.Final.Rings, r.Final.Leaders, settled, r.Final.Confirmed)
}

func runOne(ctx context.Context, env Env, ns string, sc Scenario, st Setup) Result {
	res := Result{Scenario: sc.Name, Setup: st.Name, Habring: st.Habring}
	r := &Ring{env: env, Namespace: ns, Setup: st, stsReplicas: 3, webReplicas: 2}
	defer r.cleanup()
	if err := r.setUp(ctx, !sc.DeploymentFirst); err != nil {
		res.Err = fmt.Errorf("set up: %w", err)
		return res
	}
	if !sc.DeploymentFirst {
		if _, err := r.waitOK(ctx, 3*time.Minute); err != nil {
			res.Err = fmt.Errorf("the ring never formed before the disruption: %w", err)
			return res
		}
	}
	if err := sc.Disrupt(ctx, r); err != nil {
		res.Err = fmt.Errorf("disrupt: %w", err)
		return res
	}
	start := time.Now()
	settledAt, err := r.waitOK(ctx, env.Settle)
	if err == nil {
		res.Settled = max(settledAt.Sub(start), time.Millisecond)
	}
	res.Final = r.State(ctx)
	return res
}

// Ring is one ring under test: a StatefulSet redis (3 replicas, leader topology) behind a
// headless Service, and a Deployment web (2 replicas) in the same ring.
type Ring struct {
	env                      Env
	Namespace                string
	Setup                    Setup
	stsReplicas, webReplicas int32
	mu                       sync.Mutex
}

func (r *Ring) setUp(ctx context.Context, statefulSetFirst bool) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: r.Namespace, Annotations: runner.NamespaceAnnotations()}}
	if r.Setup.Habring {
		ns.Labels = map[string]string{contract.LabelInject: contract.InjectEnabled}
	}
	if _, err := r.env.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() error {
		_, err := r.env.Client.CoreV1().ServiceAccounts(r.Namespace).Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("service account default: %w", err)
	}
	if r.Setup.Habring {
		// The labelers' permissions, as a user installs them (examples/).
		if err := harness.ApplyFile(ctx, r.env.Config, "examples/labeler-rolebinding.yaml", r.Namespace); err != nil {
			return err
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "redis", Namespace: r.Namespace},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "redis"},
			Ports: []corev1.ServicePort{{Name: "gossip", Port: 9638}}}}
	if r.Setup.Habring {
		svc.Labels = map[string]string{contract.LabelRing: "main"}
	}
	objs := []any{svc, r.statefulSet(), r.deployment()}
	if !statefulSetFirst {
		objs = []any{svc, r.deployment()}
	}
	for _, o := range objs {
		if err := r.create(ctx, o); err != nil {
			return err
		}
	}
	return nil
}

func (r *Ring) create(ctx context.Context, obj any) error {
	var err error
	switch o := obj.(type) {
	case *corev1.Service:
		_, err = r.env.Client.CoreV1().Services(r.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *appsv1.StatefulSet:
		_, err = r.env.Client.AppsV1().StatefulSets(r.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *appsv1.Deployment:
		_, err = r.env.Client.AppsV1().Deployments(r.Namespace).Create(ctx, o, metav1.CreateOptions{})
	default:
		err = fmt.Errorf("cannot create %T", obj)
	}
	return err
}

func (r *Ring) cleanup() {
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
exec hab sup run core/redis --topology=leader --listen-gossip=0.0.0.0:9638 --sys-ip-address="$POD_IP" "$@"`

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func supervisorContainer(name string) corev1.Container {
	return corev1.Container{Name: name, Image: "habitat/" + name + ":chaos",
		Ports: []corev1.ContainerPort{{Name: "gossip", ContainerPort: 9638}, {Name: "http", ContainerPort: 9631}},
		ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
			TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(9638)}}}}
}

func (r *Ring) statefulSet() *appsv1.StatefulSet {
	c := supervisorContainer("redis")
	pod := corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](10)}
	var ann map[string]string
	if r.Setup.Habring {
		ann = map[string]string{contract.AnnotationRing: "main", contract.AnnotationTopology: "leader", contract.AnnotationPeerMode: r.Setup.PeerMode}
		pod.ServiceAccountName = "habitat"
	} else {
		c.Command = []string{"sh", "-c", seedScript}
		c.Env = []corev1.EnvVar{fieldEnv("NAMESPACE", "metadata.namespace"), fieldEnv("POD_IP", "status.podIP")}
	}
	pod.Containers = []corev1.Container{c}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "redis", Namespace: r.Namespace, Annotations: ann},
		Spec: appsv1.StatefulSetSpec{ServiceName: "redis", Replicas: ptr.To(r.stsReplicas), PodManagementPolicy: appsv1.OrderedReadyPodManagement,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "redis"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "redis"}}, Spec: pod}},
	}
}

func (r *Ring) deployment() *appsv1.Deployment {
	c := supervisorContainer("web")
	pod := corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](10)}
	var ann map[string]string
	if r.Setup.Habring {
		ann = map[string]string{contract.AnnotationRing: "main", contract.AnnotationPeerMode: r.Setup.PeerMode}
		pod.ServiceAccountName = "habitat" // a labeler fills the peer file in watch-file mode
	} else {
		// The seed's advice for everything else: peer with the bootstrap StatefulSet's names.
		c.Args = []string{"run", "core/web", "--listen-gossip=0.0.0.0:9638", "--sys-ip-address=$(POD_IP)"}
		for i := range 3 {
			c.Args = append(c.Args, fmt.Sprintf("--peer=redis-%d.redis.%s.svc.cluster.local", i, r.Namespace))
		}
		c.Env = []corev1.EnvVar{fieldEnv("POD_IP", "status.podIP")}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: r.Namespace, Annotations: ann},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(r.webReplicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: withContainers(pod, c)}},
	}
}

func withContainers(p corev1.PodSpec, cs ...corev1.Container) corev1.PodSpec {
	p.Containers = cs
	return p
}

// scale sets the StatefulSet's replicas and waits until that many of its pods are ready
// and no others remain.
func (r *Ring) scale(ctx context.Context, n int32) error {
	sts, err := r.env.Client.AppsV1().StatefulSets(r.Namespace).Get(ctx, "redis", metav1.GetOptions{})
	if err != nil {
		return err
	}
	sts.Spec.Replicas = ptr.To(n)
	if _, err := r.env.Client.AppsV1().StatefulSets(r.Namespace).Update(ctx, sts, metav1.UpdateOptions{}); err != nil {
		return err
	}
	r.mu.Lock()
	r.stsReplicas = n
	r.mu.Unlock()
	return waitFor(ctx, 3*time.Minute, func() error {
		pods, err := r.pods(ctx, "app=redis")
		if err != nil {
			return err
		}
		ready := 0
		for _, p := range pods {
			if harness.PodReady(&p) {
				ready++
			}
		}
		if len(pods) != int(n) || ready != int(n) {
			return fmt.Errorf("scale to %d: %d pods, %d ready", n, len(pods), ready)
		}
		return nil
	})
}

// rollDeployment changes the Deployment's template and waits for the rollout to finish.
func (r *Ring) rollDeployment(ctx context.Context) error {
	d, err := r.env.Client.AppsV1().Deployments(r.Namespace).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if d.Spec.Template.Annotations == nil {
		d.Spec.Template.Annotations = map[string]string{}
	}
	d.Spec.Template.Annotations["chaos.habring.test/restartedAt"] = time.Now().Format(time.RFC3339Nano)
	if _, err := r.env.Client.AppsV1().Deployments(r.Namespace).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		return err
	}
	return waitFor(ctx, 3*time.Minute, func() error { return harness.DeploymentRolledOut(ctx, r.env.Client, r.Namespace, "web") })
}

func (r *Ring) deletePods(ctx context.Context, names ...string) error {
	for _, n := range names {
		if err := r.env.Client.CoreV1().Pods(r.Namespace).Delete(ctx, n, metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// leaderPod is the pod the setup calls leader: the labelled one for habring, the one whose
// Supervisor claims the leadership for the baseline.
func (r *Ring) leaderPod(ctx context.Context) (string, error) {
	pods, err := r.pods(ctx, "app=redis")
	if err != nil {
		return "", err
	}
	for _, p := range pods {
		if r.Setup.Habring && p.Labels[contract.LabelRole] == contract.RoleLeader {
			return p.Name, nil
		}
		if !r.Setup.Habring && claimsLeader(ctx, p.Status.PodIP) {
			return p.Name, nil
		}
	}
	return "", errors.New("no leader to delete")
}

func (r *Ring) pods(ctx context.Context, selector string) ([]corev1.Pod, error) {
	list, err := r.env.Client.CoreV1().Pods(r.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// claimsLeader: the Supervisor at ip has finished an election for redis.default that it won.
func claimsLeader(ctx context.Context, ip string) bool {
	c, err := harness.Gateway[supervisor.Census](ctx, ip, "/census")
	if err != nil {
		return false
	}
	g, ok := c.CensusGroups["redis.default"]
	return ok && g.ElectionStatus == supervisor.ElectionFinished && g.LeaderID != nil && *g.LeaderID == c.LocalMemberID
}

// State is a ring as its members see it.
type State struct {
	Pods, Want int // pods running with an address; pods the workloads want
	Rings      int // connected components of the members' alive views (a silent pod is one)
	Agree      bool
	Leaders    int // habring: pods labelled leader; baseline: Supervisors claiming it
	Claims     int // Supervisors claiming the leadership of redis.default
	Confirmed  int // dead members that have not departed, in the view holding most
}

// OK reports one ring, seen alike by every member, with one leader, and every pod there.
func (s State) OK() bool { return s.Pods == s.Want && s.Rings == 1 && s.Agree && s.Leaders == 1 }

func (s State) String() string {
	return fmt.Sprintf("%d/%d pods, %d ring(s), views agree %t, %d leader(s), %d claiming, %d dead in quorum",
		s.Pods, s.Want, s.Rings, s.Agree, s.Leaders, s.Claims, s.Confirmed)
}

// State measures the ring now.
func (r *Ring) State(ctx context.Context) State {
	r.mu.Lock()
	want := int(r.stsReplicas + r.webReplicas)
	r.mu.Unlock()
	s := State{Want: want}
	pods, err := r.pods(ctx, "app in (redis,web)")
	if err != nil {
		return s
	}
	var ips []string
	for _, p := range pods {
		if p.Status.PodIP != "" {
			ips = append(ips, p.Status.PodIP)
		}
	}
	s.Pods = len(ips)
	parent := map[string]string{}
	var find func(string) string
	find = func(a string) string {
		if parent[a] == "" || parent[a] == a {
			parent[a] = a
			return a
		}
		parent[a] = find(parent[a])
		return parent[a]
	}
	views := map[string]string{}
	for _, ip := range ips {
		find(ip)
		b, err := harness.Gateway[supervisor.Butterfly](ctx, ip, "/butterfly")
		if err != nil {
			views[ip] = "unreachable"
			continue
		}
		var alive []string
		confirmed := 0
		for id, m := range b.Member.Members {
			switch b.Member.Health[id] {
			case "Alive":
				alive = append(alive, m.Address)
				if slices.Contains(ips, m.Address) {
					parent[find(m.Address)] = find(ip)
				}
			case "Confirmed":
				confirmed++
			}
		}
		slices.Sort(alive)
		views[ip] = strings.Join(alive, ",")
		s.Confirmed = max(s.Confirmed, confirmed)
	}
	roots := map[string]bool{}
	for _, ip := range ips {
		roots[find(ip)] = true
	}
	s.Rings = len(roots)
	sortedIPs := slices.Sorted(slices.Values(ips))
	s.Agree = true
	for _, v := range views {
		s.Agree = s.Agree && v == strings.Join(sortedIPs, ",")
	}
	for _, p := range pods {
		if p.Labels["app"] != "redis" || p.Status.PodIP == "" {
			continue
		}
		if claimsLeader(ctx, p.Status.PodIP) {
			s.Claims++
		}
		if r.Setup.Habring && p.Labels[contract.LabelRole] == contract.RoleLeader {
			s.Leaders++
		}
	}
	if !r.Setup.Habring {
		s.Leaders = s.Claims
	}
	return s
}

// waitOK waits until the ring is OK for 2 s running, and returns when that began.
func (r *Ring) waitOK(ctx context.Context, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	var since time.Time
	var last State
	for time.Now().Before(deadline) {
		last = r.State(ctx)
		switch {
		case !last.OK():
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) >= 2*time.Second:
			return since, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return time.Time{}, fmt.Errorf("not one ring with one leader after %s: %s", timeout, last)
}

// waitFor polls f every 250 ms until it succeeds; past timeout it returns f's last error.
func waitFor(ctx context.Context, timeout time.Duration, f func() error) error {
	return harness.Until(ctx, 250*time.Millisecond, timeout, f)
}

// Tally counts the scenarios that ended in one ring with one leader in both habring modes
// (a) and with the bootstrap StatefulSet (b).
func Tally(results []Result) (a, b int) {
	byScenario := map[string][]Result{}
	var order []string
	for _, r := range results {
		if _, ok := byScenario[r.Scenario]; !ok {
			order = append(order, r.Scenario)
		}
		byScenario[r.Scenario] = append(byScenario[r.Scenario], r)
	}
	for _, sc := range order {
		habring, habringRuns := true, 0
		for _, r := range byScenario[sc] {
			if r.Habring {
				habringRuns++
				habring = habring && r.OK()
			} else if r.OK() {
				b++
			}
		}
		if habring && habringRuns > 0 {
			a++
		}
	}
	return a, b
}

// Named returns the scenario with this name.
func Named(name string) (Scenario, bool) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}
