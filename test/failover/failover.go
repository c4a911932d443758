// Package failover measures what a failover of the example HA Redis loses, the way Jepsen
// measures databases: writers add unique integers to a set through redis-master, every
// write is counted acknowledged, failed or indeterminate, the ring is disrupted, and once
// it converged the set is read from every node: an acknowledged write that is not there
// was lost. It also watches every node's ROLE (two masters at once?), what redis-master
// points at, and which writes a master acknowledged after redis-master had left it.
//
// The same disruptions run against habring (examples/ring.yaml) and the seed's bootstrap
// StatefulSet running the same plan, its labels set the naive way (a census poll and a
// label update, no fence). The pods really run (test/runner); there is no kube-proxy, so
// the writers' client dials what redis-master's EndpointSlice lists when it dials, and
// keeps an established connection after the endpoint changed, as kube-proxy's rules do
// (kubernetes #100698). `make failover` runs it (cmd/failover).
package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/test/harness"
	"github.com/habring/habring/test/runner"
)

// Env is where the rings run: a control plane with habring's webhook installed and a
// runner whose node runs the pods.
type Env struct {
	Client   kubernetes.Interface
	Config   *rest.Config
	Runner   *runner.Runner
	Progress io.Writer
	// Converge bounds how long a ring gets after a disruption (or its heal) to have one
	// master behind redis-master again and take writes (default 2 min).
	Converge time.Duration
}

// Setup is one way of running the HA Redis.
type Setup struct {
	Name    string
	Habring bool
}

// Setups are habring and the baseline.
var Setups = []Setup{{Name: "habring", Habring: true}, {Name: "bootstrap StatefulSet"}}

// Scenario is one disruption of a ring whose Redis replicates.
type Scenario struct {
	Name string
	// Partition marks the scenarios where a WAIT-1 write may be lost by the bar's rules.
	Partition bool
	// HabringOnly scenarios have nothing to break in the baseline; BaselineOnly ones
	// nothing in habring.
	HabringOnly, BaselineOnly bool
	// Disrupt breaks the ring around its leader; heal, when not nil, undoes it and must be
	// called whatever happens next. A disruption that is a change (a rollout, a scale)
	// returns once the change is complete.
	Disrupt func(ctx context.Context, r *Ring, leader corev1.Pod) (heal func(context.Context) error, err error)
}

// hold is how long a partition lasts before it heals.
const hold = 60 * time.Second

// Scenarios are the disruptions of issue "Failover measured like Jepsen".
var Scenarios = []Scenario{
	{Name: "leader pod deleted", Disrupt: func(ctx context.Context, r *Ring, leader corev1.Pod) (func(context.Context) error, error) {
		return nil, r.env.Client.CoreV1().Pods(r.Namespace).Delete(ctx, leader.Name, metav1.DeleteOptions{})
	}},
	{Name: "leader SIGKILLed (Supervisor and Redis)", Disrupt: func(_ context.Context, r *Ring, leader corev1.Pod) (func(context.Context) error, error) {
		return nil, r.env.Runner.Kill(r.Namespace, leader.Name, "redis")
	}},
	{Name: "leader's labeler killed", HabringOnly: true, Disrupt: func(_ context.Context, r *Ring, leader corev1.Pod) (func(context.Context) error, error) {
		return nil, r.env.Runner.Kill(r.Namespace, leader.Name, contract.LabelerContainerName)
	}},
	{Name: "leader cut off from the members for 60 s", Partition: true, Disrupt: func(ctx context.Context, r *Ring, leader corev1.Pod) (func(context.Context) error, error) {
		return r.cutOffFromMembers(ctx, leader)
	}},
	{Name: "leader cut off from everything for 60 s", Partition: true, Disrupt: func(ctx context.Context, r *Ring, leader corev1.Pod) (func(context.Context) error, error) {
		// Only its own addresses answer (the local table comes first): members, clients,
		// the node's probes and the API server are all cut.
		return r.block(ctx, []corev1.Pod{leader}, true, "everything", []string{"blackhole"})
	}},
	{Name: "API server unreachable from the ring for 60 s", Disrupt: func(ctx context.Context, r *Ring, _ corev1.Pod) (func(context.Context) error, error) {
		pods, err := r.redisPods(ctx)
		if err != nil {
			return nil, err
		}
		api := r.env.Runner.APIServer()
		return r.block(ctx, pods, false, "the API server at "+api.String(),
			[]string{"to", api.Addr().String() + "/32", "ipproto", "tcp", "dport", fmt.Sprint(api.Port()), "blackhole"})
	}},
	{Name: "rolling update", Disrupt: func(ctx context.Context, r *Ring, _ corev1.Pod) (func(context.Context) error, error) {
		return nil, r.rollout(ctx)
	}},
	{Name: "scale 3 to 5 to 3", Disrupt: func(ctx context.Context, r *Ring, _ corev1.Pod) (func(context.Context) error, error) {
		return nil, r.scaleUpAndDown(ctx, 5)
	}},
	{Name: "pod 0 deleted", BaselineOnly: true, Disrupt: func(ctx context.Context, r *Ring, _ corev1.Pod) (func(context.Context) error, error) {
		// Whatever its role: the seed's pod 0 peers with nobody when it comes back.
		return nil, r.env.Client.CoreV1().Pods(r.Namespace).Delete(ctx, "redis-0", metav1.DeleteOptions{})
	}},
}

// Named is the scenario called name.
func Named(name string) (Scenario, bool) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// Result is one trial of one scenario against one setup.
type Result struct {
	Scenario, Setup string
	Partition       bool
	Trial           int
	Plain, Wait1    Counts
	// Unavailable is the longest time without an acknowledged plain write from the
	// disruption on; Switch the time until redis-master listed another pod than the old
	// leader (zero: never switched).
	Unavailable, Switch time.Duration
	// Masters is the most nodes answering ROLE master at once; MastersReachable the most of
	// those redis-master listed at once.
	Masters, MastersReachable int
	// Deposed counts writes acknowledged by a node redis-master no longer listed.
	Deposed int
	// Unconverged says why the ring never again had one master with its replicas behind
	// redis-master (the baseline's split brain); the trial is measured all the same.
	Unconverged string
	Err         error
}

// Counts are one writer mode's outcomes.
type Counts struct {
	Acked, Failed, Indeterminate, Lost int
}

func (c Counts) String() string {
	return fmt.Sprintf("%d acknowledged, %d failed, %d indeterminate, %d lost", c.Acked, c.Failed, c.Indeterminate, c.Lost)
}

// Summary is a result in a line.
func (r Result) Summary() string {
	if r.Err != nil {
		return "error: " + r.Err.Error()
	}
	sw := "never"
	if r.Switch > 0 {
		sw = fmt.Sprintf("%.1fs", r.Switch.Seconds())
	}
	s := fmt.Sprintf("plain: %s; WAIT 1: %s; unavailable %.1fs, redis-master switched after %s, masters at once %d (%d through redis-master), deposed master acknowledged %d",
		r.Plain, r.Wait1, r.Unavailable.Seconds(), sw, r.Masters, r.MastersReachable, r.Deposed)
	if r.Unconverged != "" {
		s += "; NEVER CONVERGED: " + r.Unconverged
	}
	return s
}

// Run runs trials of every scenario against every setup: the setups side by side, each
// trial on fresh rings in namespaces of their own.
func Run(ctx context.Context, env Env, scenarios []Scenario, setups []Setup, trials int) []Result {
	if env.Converge == 0 {
		env.Converge = 2 * time.Minute
	}
	var results []Result
	for i, sc := range scenarios {
		for trial := range trials {
			out := make([]Result, len(setups))
			var wg sync.WaitGroup
			for j, st := range setups {
				if (sc.HabringOnly && !st.Habring) || (sc.BaselineOnly && st.Habring) {
					continue
				}
				wg.Go(func() {
					out[j] = runOne(ctx, env, fmt.Sprintf("failover-%d-%d-%d", i, trial, j), sc, st, trial)
				})
			}
			wg.Wait()
			for _, r := range out {
				if r.Setup != "" {
					fmt.Fprintf(env.Progress, "failover: %-42s %-22s trial %d: %s\n", r.Scenario, r.Setup, r.Trial+1, r.Summary())
					results = append(results, r)
				}
			}
			if ctx.Err() != nil {
				return results
			}
		}
	}
	return results
}

func runOne(ctx context.Context, env Env, ns string, sc Scenario, st Setup, trial int) (res Result) {
	res = Result{Scenario: sc.Name, Setup: st.Name, Partition: sc.Partition, Trial: trial}
	r := &Ring{env: env, Namespace: ns, Setup: st, size: 3}
	defer r.cleanup()
	if err := r.setUp(ctx); err != nil {
		res.Err = fmt.Errorf("set up: %w", err)
		return res
	}
	leader, err := r.waitReplicating(ctx, 4*time.Minute)
	if err != nil {
		res.Err = fmt.Errorf("the Redis never replicated before the disruption: %w", err)
		return res
	}
	w := r.startWorkload(ctx)
	defer w.stop()
	time.Sleep(5 * time.Second) // writes acknowledged before the disruption
	w.disrupted(leader.Status.PodIP)
	heal, err := sc.Disrupt(ctx, r, leader)
	if heal != nil {
		defer func() {
			if heal == nil {
				return // healed already
			}
			// Undone whatever happens, also when the checker is interrupted.
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 90*time.Second)
			defer cancel()
			if err := heal(hctx); err != nil && res.Err == nil {
				res.Err = fmt.Errorf("heal: %w", err)
			}
		}()
	}
	if err != nil {
		res.Err = fmt.Errorf("disrupt: %w", err)
		return res
	}
	if _, err := r.waitReplicating(ctx, env.Converge); err != nil {
		res.Unconverged = "after the disruption: " + err.Error()
	}
	if heal != nil {
		if err := heal(ctx); err != nil {
			res.Err = fmt.Errorf("heal: %w", err)
			return res
		}
		heal = nil
		if _, err := r.waitReplicating(ctx, env.Converge); err != nil {
			res.Unconverged = "after the heal: " + err.Error()
		}
	}
	time.Sleep(5 * time.Second) // writes acknowledged after the failover
	w.stop()
	time.Sleep(2 * time.Second) // the last writes replicated
	return w.result(ctx, res)
}

// workload is the writers and observers of one trial.
type workload struct {
	r      *Ring
	cancel context.CancelFunc
	wg     sync.WaitGroup
	next   atomic.Int64

	mu         sync.Mutex
	endpoints  []string             // redis-master's ready addresses, as last seen
	acked      map[string][]int64   // mode -> acknowledged values
	counts     map[string]*Counts   // mode -> outcomes
	lastAck    time.Time            // of a plain write
	disruptAt  time.Time            // zero before the disruption
	oldLeader  string               // its IP
	gap        time.Duration        // longest time without a plain ack since the disruption
	switchedAt time.Time            // redis-master listed someone else than the old leader
	masters    int                  // most ROLE masters at once
	reachable  int                  // most of those in redis-master at once
	deposed    int                  // acks by a node redis-master no longer listed
	seenMaster map[string]time.Time // when a node was last seen master
	stopped    bool
	stoppedAt  time.Time
}

const (
	modePlain = "plain"
	modeWait1 = "WAIT 1"
)

// quiet drops go-redis's own log lines (a dial that failed): every outcome is counted.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func init() { redis.SetLogger(quiet{}) }

func (r *Ring) startWorkload(ctx context.Context) *workload {
	ctx, cancel := context.WithCancel(ctx)
	w := &workload{r: r, cancel: cancel, acked: map[string][]int64{}, counts: map[string]*Counts{modePlain: {}, modeWait1: {}},
		seenMaster: map[string]time.Time{}}
	w.wg.Go(func() { w.watchEndpoints(ctx) })
	w.wg.Go(func() { w.watchRoles(ctx) })
	for _, mode := range []string{modePlain, modePlain, modeWait1, modeWait1} {
		w.wg.Go(func() { w.write(ctx, mode) })
	}
	return w
}

func (w *workload) stop() {
	w.mu.Lock()
	stopped := w.stopped
	if !stopped {
		w.stopped, w.stoppedAt = true, time.Now()
	}
	w.mu.Unlock()
	if !stopped {
		w.cancel()
		w.wg.Wait()
	}
}

func (w *workload) disrupted(leaderIP string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.disruptAt, w.oldLeader, w.lastAck = time.Now(), leaderIP, time.Now()
}

// watchEndpoints follows redis-master's EndpointSlice every 100 ms, as kube-proxy follows
// it to program a Service's rules.
func (w *workload) watchEndpoints(ctx context.Context) {
	for ctx.Err() == nil {
		eps, err := w.r.serviceAddresses(ctx, "redis-master")
		if err == nil {
			w.mu.Lock()
			w.endpoints = eps
			if !w.disruptAt.IsZero() && w.switchedAt.IsZero() && len(eps) > 0 && !slices.Contains(eps, w.oldLeader) {
				w.switchedAt = time.Now()
			}
			w.mu.Unlock()
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

// watchRoles asks every redis pod for ROLE every 100 ms.
func (w *workload) watchRoles(ctx context.Context) {
	for ctx.Err() == nil {
		pods, err := w.r.redisPods(ctx)
		if err == nil {
			var masters []string
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, p := range pods {
				wg.Go(func() {
					cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
					defer cancel()
					if role, err := harness.Role(cctx, p.Status.PodIP, w.r.password); err == nil && role.Role == "master" {
						mu.Lock()
						masters = append(masters, p.Status.PodIP)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			w.mu.Lock()
			reachable := 0
			for _, m := range masters {
				w.seenMaster[m] = time.Now()
				if slices.Contains(w.endpoints, m) {
					reachable++
				}
			}
			w.masters, w.reachable = max(w.masters, len(masters)), max(w.reachable, reachable)
			w.mu.Unlock()
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

// write adds unique integers to the mode's set through redis-master, one at a time, on one
// connection at a time (go-redis with retries off: a retried write would be counted once
// and written twice). In WAIT 1 mode a write counts as acknowledged only once WAIT says a
// replica has it.
func (w *workload) write(ctx context.Context, mode string) {
	var dialed atomic.Value // the IP the connection went to
	c := redis.NewClient(&redis.Options{Password: w.r.password, MaxRetries: -1, PoolSize: 1, MinIdleConns: 0,
		DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second,
		Dialer: func(ctx context.Context, network, _ string) (net.Conn, error) {
			w.mu.Lock()
			eps := slices.Clone(w.endpoints)
			w.mu.Unlock()
			if len(eps) == 0 {
				return nil, errors.New("redis-master has no ready endpoint")
			}
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, net.JoinHostPort(eps[0], "6379"))
			if err == nil {
				dialed.Store(eps[0])
			}
			return conn, err
		}})
	defer func() { _ = c.Close() }()
	key := "habring:failover:" + strings.ReplaceAll(mode, " ", "")
	next := time.Now()
	for ctx.Err() == nil {
		if next = next.Add(writePace); time.Until(next) > 0 {
			sleep(ctx, time.Until(next))
		} else {
			next = time.Now() // behind (a slow write): no burst to catch up
		}
		v := w.next.Add(1)
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.SAdd(wctx, key, v).Err()
		if err == nil && mode == modeWait1 {
			var n int64
			if n, err = c.Wait(wctx, 1, 500*time.Millisecond).Result(); err == nil && n < 1 {
				err = errUnconfirmed
			}
		}
		cancel()
		ip, _ := dialed.Load().(string)
		w.record(mode, v, ip, err)
		if err != nil {
			sleep(ctx, 50*time.Millisecond)
		}
	}
}

// writePace spaces one writer's writes: 4 writers take at most 2,000 writes a second, as
// Jepsen's clients are throttled too. Unthrottled, they took both cores of the machine
// from the Supervisors and labelers whose reaction is being measured, and filled sets of
// millions that took minutes to read back.
const writePace = 2 * time.Millisecond

// errUnconfirmed is a WAIT-1 write no replica acknowledged in time: it may or may not
// survive, so it counts as indeterminate.
var errUnconfirmed = errors.New("no replica acknowledged the write")

func (w *workload) record(mode string, v int64, ip string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped && err != nil {
		return // cancelled by the end of the trial
	}
	c := w.counts[mode]
	var rerr redis.Error
	switch {
	case err == nil:
		c.Acked++
		w.acked[mode] = append(w.acked[mode], v)
		if !w.disruptAt.IsZero() && ip != "" && !slices.Contains(w.endpoints, ip) {
			w.deposed++
		}
		if mode == modePlain {
			now := time.Now()
			if !w.disruptAt.IsZero() {
				w.gap = max(w.gap, now.Sub(w.lastAck))
			}
			w.lastAck = now
		}
	case errors.As(err, &rerr) && !errors.Is(err, errUnconfirmed):
		c.Failed++ // the server said no: READONLY, NOREPLICAS, LOADING, ...
	case isDialError(err):
		c.Failed++ // never sent
	default:
		c.Indeterminate++ // timeout, EOF, reset, unconfirmed: it may have been written
	}
}

func isDialError(err error) bool {
	var op *net.OpError
	return (errors.As(err, &op) && op.Op == "dial") || strings.Contains(err.Error(), "no ready endpoint")
}

// result reads each mode's set from every redis pod and counts what is missing.
func (w *workload) result(ctx context.Context, res Result) Result {
	pods, err := w.r.redisPods(ctx)
	if err != nil {
		res.Err = err
		return res
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, mode := range []string{modePlain, modeWait1} {
		key := "habring:failover:" + strings.ReplaceAll(mode, " ", "")
		lost := 0
		for _, p := range pods {
			// A large set takes a while to send: not harness.Redis's 2 s. A read is retried
			// (SMEMBERS changes nothing): the example's guard disconnects the clients of a
			// master without replicas once a second, as the baseline's split leaves one.
			c := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(p.Status.PodIP, "6379"), Password: w.r.password,
				MaxRetries: 10, DialTimeout: 2 * time.Second, ReadTimeout: time.Minute})
			members, err := c.SMembers(ctx, key).Result()
			_ = c.Close()
			if err != nil {
				res.Err = fmt.Errorf("read the set from %s: %w", p.Name, err)
				return res
			}
			present := map[string]bool{}
			for _, m := range members {
				present[m] = true
			}
			missing := 0
			for _, v := range w.acked[mode] {
				if !present[fmt.Sprint(v)] {
					missing++
				}
			}
			lost = max(lost, missing) // the worst node: every node should hold every write
		}
		c := *w.counts[mode]
		c.Lost = lost
		if mode == modePlain {
			res.Plain = c
		} else {
			res.Wait1 = c
		}
	}
	res.Unavailable = max(w.gap, w.stoppedAt.Sub(w.lastAck)) // writes that never resumed count to the end
	if !w.switchedAt.IsZero() {
		res.Switch = w.switchedAt.Sub(w.disruptAt)
	}
	res.Masters, res.MastersReachable, res.Deposed = w.masters, w.reachable, w.deposed
	return res
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Totals are the figures of the summary line.
type Totals struct {
	Scenarios, Trials                     int
	Wait1Lost, Wait1LostOutsidePartitions int
	AckedLost, MostReachable              int
}

// Total adds up the results of one setup.
func Total(results []Result, habring bool) Totals {
	var t Totals
	names := map[string]bool{}
	for _, r := range results {
		if (r.Setup == Setups[0].Name) != habring {
			continue
		}
		names[r.Scenario] = true
		t.Trials++
		t.Wait1Lost += r.Wait1.Lost
		if !r.Partition {
			t.Wait1LostOutsidePartitions += r.Wait1.Lost
		}
		t.AckedLost += r.Plain.Lost
		t.MostReachable = max(t.MostReachable, r.MastersReachable)
	}
	t.Scenarios = len(names)
	return t
}

// MedianWorst is the median and the worst (largest) of a figure over trials.
func MedianWorst(vals []float64) (median, worst float64) {
	if len(vals) == 0 {
		return 0, 0
	}
	s := slices.Clone(vals)
	sort.Float64s(s)
	return s[len(s)/2], s[len(s)-1]
}
