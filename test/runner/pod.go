package runner

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/test/podnet"
)

// pod runs one pod: its network, volumes and containers, from the moment it is bound to the
// node until its deletion ends (or the runner closes).
type pod struct {
	r               *Runner
	uid             types.UID
	namespace, name string
	dir             string

	mu         sync.Mutex
	latest     *corev1.Pod
	net        *podnet.Pod
	ip         netip.Addr
	containers []*container // init containers in order, then the main ones
	initDone   bool
	failure    string // why the pod cannot run (reported in its status)
	gatesOK    bool   // every readiness gate's condition was True in the last object seen
	startTime  metav1.Time

	stop      chan struct{} // closed when the pod must stop
	stopOnce  sync.Once
	grace     time.Duration
	keep      bool // the runner is closing: leave the pod object alone
	statusDue chan struct{}
}

func newPod(r *Runner, p *corev1.Pod) *pod {
	return &pod{r: r, uid: p.UID, namespace: p.Namespace, name: p.Name, latest: p.DeepCopy(),
		dir:  filepath.Join(r.opts.Dir, "pods", p.Namespace+"_"+p.Name+"_"+string(p.UID)),
		stop: make(chan struct{}), statusDue: make(chan struct{}, 1), startTime: metav1.Now()}
}

// update takes a newer version of the pod object; a deletion timestamp starts termination.
func (p *pod) update(obj *corev1.Pod) {
	gates := true
	for _, g := range obj.Spec.ReadinessGates {
		gates = gates && conditionTrue(obj.Status.Conditions, g.ConditionType)
	}
	p.mu.Lock()
	p.latest = obj.DeepCopy()
	changed := gates != p.gatesOK
	p.gatesOK = gates
	p.mu.Unlock()
	if changed && len(obj.Spec.ReadinessGates) > 0 {
		p.markStatus() // a readiness gate's condition moved: Ready follows, as a kubelet's does
	}
	if obj.DeletionTimestamp != nil {
		grace := 30 * time.Second
		if obj.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*obj.DeletionGracePeriodSeconds) * time.Second
		}
		p.requestStop(grace, false)
	}
}

// removed: the object is gone (deleted with no grace); the containers stop at once.
func (p *pod) removed() { p.requestStop(2*time.Second, true) }

// shutdown: the runner is closing.
func (p *pod) shutdown(maxGrace time.Duration) {
	p.mu.Lock()
	grace := 30 * time.Second
	if s := p.latest.Spec.TerminationGracePeriodSeconds; s != nil {
		grace = time.Duration(*s) * time.Second
	}
	p.mu.Unlock()
	p.requestStop(min(grace, maxGrace), true)
}

func (p *pod) requestStop(grace time.Duration, keep bool) {
	p.stopOnce.Do(func() {
		p.mu.Lock()
		p.grace, p.keep = grace, keep
		p.mu.Unlock()
		close(p.stop)
	})
}

func (p *pod) object() *corev1.Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	o := p.latest.DeepCopy()
	if p.ip.IsValid() { // the downward API's status.podIP is known before the status says so
		o.Status.PodIP, o.Status.PodIPs = p.ip.String(), []corev1.PodIP{{IP: p.ip.String()}}
		o.Status.HostIP = p.r.bridge.Gateway.String()
	}
	return o
}

func (p *pod) network() *podnet.Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.net
}

func (p *pod) stopped() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// run is the pod's whole life on the node.
func (p *pod) run() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	statusDone := make(chan struct{})
	go func() {
		defer close(statusDone)
		p.statusLoop(ctx)
	}()
	log := p.r.log.With("pod", p.namespace+"/"+p.name)
	if p.object().DeletionTimestamp == nil {
		if err := p.setup(ctx); err != nil {
			log.Warn("pod cannot start", "err", err)
			p.setFailure(err.Error())
		} else {
			log.Info("pod started", "ip", p.ip)
			p.startContainers(ctx)
		}
		<-p.stop
	}
	p.terminate()
	p.mu.Lock()
	keep := p.keep
	p.mu.Unlock()
	if !keep {
		p.markStatus()
		cancel() // the last status write is not needed once the object goes
		<-statusDone
		err := p.r.client.CoreV1().Pods(p.namespace).Delete(context.Background(), p.name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &p.uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			log.Warn("could not remove the pod object", "err", err)
		}
	}
	cancel()
	<-statusDone
	p.teardown()
	log.Info("pod stopped")
}

// setup makes the pod's network namespace, hosts file and volumes.
func (p *pod) setup(ctx context.Context) error {
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return err
	}
	ip, err := p.r.allocate()
	if err != nil {
		return err
	}
	n, err := p.r.bridge.AddPod(ctx, ip, nil)
	if err != nil {
		p.r.release(ip)
		return err
	}
	p.mu.Lock()
	p.net, p.ip = n, ip
	p.mu.Unlock()
	p.writeHosts()
	p.markStatus()
	volumes, err := p.prepareVolumes(ctx, p.object())
	if err != nil {
		return err
	}
	obj := p.object()
	p.mu.Lock()
	for _, c := range obj.Spec.InitContainers {
		kind := initContainer
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			kind = sidecarContainer
		}
		p.containers = append(p.containers, newContainer(p, c, kind, volumes))
	}
	for _, c := range obj.Spec.Containers {
		p.containers = append(p.containers, newContainer(p, c, mainContainer, volumes))
	}
	p.mu.Unlock()
	return nil
}

// startContainers runs init containers in order (a sidecar's startup probe passes before
// the next one starts), then every main container.
func (p *pod) startContainers(ctx context.Context) {
	for _, c := range p.containers {
		if c.kind == mainContainer {
			continue
		}
		go c.supervise(ctx)
		var wait <-chan struct{} = c.done // a regular init container runs to its end
		if c.kind == sidecarContainer {
			wait = c.startedCh
		}
		select {
		case <-wait:
		case <-p.stop:
			return
		}
		if c.kind == initContainer && !c.succeeded() {
			p.setFailure(fmt.Sprintf("init container %s failed and restartPolicy is Never", c.spec.Name))
			return
		}
	}
	p.mu.Lock()
	p.initDone = true
	p.mu.Unlock()
	p.markStatus()
	for _, c := range p.containers {
		if c.kind == mainContainer {
			go c.supervise(ctx)
		}
	}
}

// terminate stops the containers as a kubelet does on deletion: SIGTERM to the main
// containers, then to the sidecars in reverse order once those ended, SIGKILL to whatever
// still runs when the grace period is over.
func (p *pod) terminate() {
	p.mu.Lock()
	deadline := time.Now().Add(p.grace)
	cs := p.containers
	p.mu.Unlock()
	var mains, sidecars []*container
	for _, c := range cs {
		if c.kind == sidecarContainer {
			sidecars = append([]*container{c}, sidecars...)
		} else {
			mains = append(mains, c)
		}
	}
	stopAll := func(group []*container) {
		var wg sync.WaitGroup
		for _, c := range group {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.terminate(deadline)
			}()
		}
		wg.Wait()
	}
	stopAll(mains)
	for _, c := range sidecars {
		c.terminate(deadline)
	}
}

func (p *pod) teardown() {
	p.mu.Lock()
	n, ip := p.net, p.ip
	p.net = nil
	p.mu.Unlock()
	if n != nil {
		if err := p.r.bridge.RemovePod(context.Background(), n); err != nil {
			p.r.log.Warn("remove pod network", "pod", p.namespace+"/"+p.name, "err", err)
		}
		p.r.release(ip)
	}
	_ = os.RemoveAll(p.dir)
}

func (p *pod) kill(name string) error {
	p.mu.Lock()
	cs := p.containers
	p.mu.Unlock()
	for _, c := range cs {
		if c.spec.Name == name {
			return c.kill()
		}
	}
	return fmt.Errorf("runner: pod %s/%s has no container %q", p.namespace, p.name, name)
}

func (p *pod) setFailure(msg string) {
	p.mu.Lock()
	p.failure = msg
	p.mu.Unlock()
	p.markStatus()
}

// writeHosts gives the pod the hosts file a kubelet and cluster DNS would: its own name
// (and stable name under a subdomain) and every ready stable name of headless Services.
func (p *pod) writeHosts() {
	n := p.network()
	if n == nil {
		return
	}
	obj := p.object()
	names := p.r.stableNames()
	host := podHostname(obj)
	names[host] = p.ip
	if obj.Spec.Subdomain != "" {
		names[fmt.Sprintf("%s.%s.%s.svc.%s", host, obj.Spec.Subdomain, obj.Namespace, ClusterDomain)] = p.ip
	}
	if err := n.SetHosts(names); err != nil {
		p.r.log.Warn("write hosts file", "pod", p.namespace+"/"+p.name, "err", err)
	}
}

// markStatus asks for a status write; writes coalesce.
func (p *pod) markStatus() {
	select {
	case p.statusDue <- struct{}{}:
	default:
	}
}

func (p *pod) statusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.statusDue:
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := p.r.client.CoreV1().Pods(p.namespace).Get(ctx, p.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if cur.UID != p.uid {
				return apierrors.NewNotFound(corev1.Resource("pods"), p.name)
			}
			p.fillStatus(&cur.Status, cur.Spec.ReadinessGates)
			_, err = p.r.client.CoreV1().Pods(p.namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) {
			p.r.log.Warn("pod status", "pod", p.namespace+"/"+p.name, "err", err)
			p.markStatus()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// fillStatus writes what a kubelet owns of a pod's status, keeping conditions it does not
// own (PodScheduled, readiness gates).
func (p *pod) fillStatus(s *corev1.PodStatus, gates []corev1.PodReadinessGate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ip.IsValid() {
		s.PodIP, s.PodIPs = p.ip.String(), []corev1.PodIP{{IP: p.ip.String()}}
		s.HostIP, s.HostIPs = p.r.bridge.Gateway.String(), []corev1.HostIP{{IP: p.r.bridge.Gateway.String()}}
	}
	if s.StartTime == nil {
		s.StartTime = ptr.To(p.startTime)
	}
	s.InitContainerStatuses, s.ContainerStatuses = nil, nil
	ready, mainsStarted, mainsDone, mainsOK := true, true, true, true
	for _, c := range p.containers {
		cs := c.status()
		if c.kind == mainContainer {
			s.ContainerStatuses = append(s.ContainerStatuses, cs)
			mainsStarted = mainsStarted && (cs.State.Running != nil || cs.State.Terminated != nil || cs.RestartCount > 0)
			mainsDone = mainsDone && cs.State.Terminated != nil
			mainsOK = mainsOK && cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0
		} else {
			s.InitContainerStatuses = append(s.InitContainerStatuses, cs)
		}
		if c.kind != initContainer {
			ready = ready && cs.Ready
		}
	}
	hasMains := len(s.ContainerStatuses) > 0
	switch {
	case p.failure != "":
		s.Phase, s.Reason, s.Message = corev1.PodFailed, "RunnerFailed", p.failure
		ready = false
	case p.initDone && hasMains && mainsDone && p.latest.Spec.RestartPolicy != corev1.RestartPolicyAlways:
		s.Phase = corev1.PodFailed
		if mainsOK {
			s.Phase = corev1.PodSucceeded
		}
	case p.initDone && hasMains && mainsStarted:
		s.Phase = corev1.PodRunning
	default:
		s.Phase = corev1.PodPending
	}
	if p.failure == "" && s.Phase == corev1.PodFailed {
		s.Reason, s.Message = "", ""
	}
	ready = ready && p.initDone && hasMains
	containersReady := ready
	for _, g := range gates {
		ready = ready && conditionTrue(s.Conditions, g.ConditionType)
	}
	setCondition(s, corev1.PodReadyToStartContainers, p.net != nil)
	setCondition(s, corev1.PodInitialized, p.initDone)
	setCondition(s, corev1.ContainersReady, containersReady)
	setCondition(s, corev1.PodReady, ready)
}

func conditionTrue(cs []corev1.PodCondition, t corev1.PodConditionType) bool {
	for _, c := range cs {
		if c.Type == t {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func setCondition(s *corev1.PodStatus, t corev1.PodConditionType, ok bool) {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	for i := range s.Conditions {
		if s.Conditions[i].Type == t {
			if s.Conditions[i].Status != status {
				s.Conditions[i].Status, s.Conditions[i].LastTransitionTime = status, metav1.Now()
			}
			return
		}
	}
	s.Conditions = append(s.Conditions, corev1.PodCondition{Type: t, Status: status, LastTransitionTime: metav1.Now()})
}

var errNotRunning = errors.New("not running")
