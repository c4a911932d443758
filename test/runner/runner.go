// Package runner plays the kubelet of one node of the local control plane: it runs the
// containers of every pod bound to that node as processes on this machine, each pod in a
// network namespace of its own with its pod IP on a bridge the caller made (test/podnet).
//
// It is test equipment: what a kubelet does that habring's rings depend on (args and env as
// admitted, volumes, a pod's own loopback, stable names, native sidecar order, probes,
// restartPolicy, graceful deletion) and nothing more. README.md lists what it leaves out.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"

	"github.com/habring/habring/test/podnet"
)

const (
	// NodeName is the node the runner registers and runs the pods of.
	NodeName = "habring-runner"
	// TaintKey keeps pods off the runner's node unless their namespace opted in
	// (NamespaceAnnotations): the rest of the suite stays on kwok's fake node.
	TaintKey = "habring.test/runner"
	// ClusterDomain is the suffix of the stable names the runner resolves.
	ClusterDomain = "cluster.local"
)

// NamespaceAnnotations are the annotations that send every pod of a namespace to the
// runner's node (the API server's PodNodeSelector and PodTolerationRestriction admission
// plugins read them). Set them before the namespace's first pod is created.
func NamespaceAnnotations() map[string]string {
	return map[string]string{
		"scheduler.alpha.kubernetes.io/node-selector":      "kubernetes.io/hostname=" + NodeName,
		"scheduler.alpha.kubernetes.io/defaultTolerations": `[{"key":"` + TaintKey + `","operator":"Exists","effect":"NoSchedule"}]`,
	}
}

// Image is what the runner runs for a container image: host binaries stand in for the
// image's file system.
type Image struct {
	// Entrypoint and Cmd are the image's ENTRYPOINT and CMD, with the command as a path on
	// this machine. A container's command replaces Entrypoint, its args replace Cmd.
	Entrypoint, Cmd []string
	// Env is the image's ENV ("NAME=value").
	Env []string
	// Files are the image's executables a container's command may name, by their path in
	// the image ("/habring-labeler"), each a path on this machine.
	Files map[string]string
	// FreshDirs name environment variables set to a new empty directory each time the
	// container starts: where the program keeps what lives in a container's own file
	// system (lost when the container restarts, unlike an emptyDir).
	FreshDirs []string
}

// Options configure a Runner.
type Options struct {
	// Config reaches the API server (an admin's: the runner writes pod and node status).
	Config *rest.Config
	// Bridge is the pod network. Its gateway must be one of the API server certificate's
	// addresses: pods reach the API server there, through the runner's proxy.
	Bridge *podnet.Bridge
	// Dir holds pod volumes, container scratch directories and logs/<ns>_<pod>_<container>.log.
	Dir string
	// Images says what runs for an image reference (Repository strips its tag or digest).
	// A container whose image it does not know does not start: it waits with reason
	// ErrImagePull and a message naming the image.
	Images func(ref string) (Image, bool)
	// Log receives the runner's own events (default: discarded).
	Log *slog.Logger
	// RestartBackoff is the first delay before a container restarts; it doubles up to
	// MaxRestartBackoff (defaults 1s and 10s; a kubelet's are 10s and 5m).
	RestartBackoff, MaxRestartBackoff time.Duration
}

// Runner is a running node.
type Runner struct {
	opts    Options
	client  kubernetes.Interface
	log     *slog.Logger
	bridge  *podnet.Bridge
	api     *Proxy // the API server, at the bridge's gateway
	cancel  context.CancelFunc
	done    chan struct{}
	factory informers.SharedInformerFactory

	mu       sync.Mutex
	pods     map[types.UID]*pod
	ips      map[netip.Addr]bool
	lastIP   netip.Addr            // the address allocate gave last
	names    map[string]netip.Addr // stable names of headless Services' ready endpoints
	mkdirs   []string              // mount points made on the host, to remove on Close
	proxies  []*Proxy
	closed   bool
	stopping sync.WaitGroup
}

// Start registers the node, starts the API server proxy and runs pods until Close.
func Start(ctx context.Context, o Options) (*Runner, error) {
	if o.Config == nil || o.Bridge == nil || o.Dir == "" || o.Images == nil {
		return nil, errors.New("runner: Options.Config, Bridge, Dir and Images are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.RestartBackoff <= 0 {
		o.RestartBackoff = time.Second
	}
	if o.MaxRestartBackoff < o.RestartBackoff {
		o.MaxRestartBackoff = max(10*time.Second, o.RestartBackoff)
	}
	for _, d := range []string{"pods", "logs"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	client, err := kubernetes.NewForConfig(o.Config)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(o.Config.Host)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("runner: API server address %q: want https://host:port", o.Config.Host)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &Runner{opts: o, client: client, log: o.Log, bridge: o.Bridge, cancel: cancel, done: make(chan struct{}),
		pods: map[types.UID]*pod{}, ips: map[netip.Addr]bool{}, names: map[string]netip.Addr{}}
	if r.api, err = r.Expose(u.Host); err != nil {
		cancel()
		return nil, fmt.Errorf("runner: expose the API server to pods: %w", err)
	}
	if err := r.registerNode(ctx); err != nil {
		r.closeProxies()
		cancel()
		return nil, err
	}
	r.factory = informers.NewSharedInformerFactoryWithOptions(client, 0)
	podInformer := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.FieldSelector = "spec.nodeName=" + NodeName
	})).Core().V1().Pods().Informer()
	_, _ = podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.observe(obj) },
		UpdateFunc: func(_, obj any) { r.observe(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				r.gone(p.UID)
			}
		},
	})
	sliceInformer := r.factory.Discovery().V1().EndpointSlices().Informer()
	resolve := func() { r.resolveNames(sliceInformer.GetStore()) }
	_, _ = sliceInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { resolve() },
		UpdateFunc: func(_, _ any) { resolve() },
		DeleteFunc: func(any) { resolve() },
	})
	go podInformer.Run(runCtx.Done())
	r.factory.Start(runCtx.Done())
	go r.heartbeat(runCtx)
	go func() {
		<-runCtx.Done()
		close(r.done)
	}()
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.HasSynced, sliceInformer.HasSynced) {
		r.Close()
		return nil, fmt.Errorf("runner: caches did not sync: %w", context.Cause(ctx))
	}
	r.log.Info("node ready", "node", NodeName, "podCIDR", o.Bridge.Prefix, "apiserver", r.api.Addr)
	return r, nil
}

// APIServer is where pods reach the API server (KUBERNETES_SERVICE_HOST and _PORT).
func (r *Runner) APIServer() netip.AddrPort { return r.api.Addr }

// PodNetwork is the pods' network and its gateway, the node: where clients on this
// machine, the probes and the API server reach pods from.
func (r *Runner) PodNetwork() (netip.Prefix, netip.Addr) { return r.bridge.Prefix, r.bridge.Gateway }

// Close stops every pod's containers (SIGTERM, SIGKILL after at most 5 s), removes their
// namespaces, mount points and the proxies, and stops the node's heartbeat. The pods'
// objects are left as they are: the node is gone, not the workloads.
func (r *Runner) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	pods := slices.Collect(maps.Values(r.pods))
	r.mu.Unlock()
	for _, p := range pods {
		p.shutdown(5 * time.Second)
	}
	r.stopping.Wait()
	r.cancel()
	r.factory.Shutdown()
	r.closeProxies()
	r.mu.Lock()
	dirs := r.mkdirs
	r.mkdirs = nil
	r.mu.Unlock()
	slices.Reverse(dirs) // deepest first
	for _, d := range dirs {
		_ = os.Remove(d) // only if empty: the host's files are never touched
	}
}

func (r *Runner) closeProxies() {
	r.mu.Lock()
	ps := r.proxies
	r.proxies = nil
	r.mu.Unlock()
	for _, p := range ps {
		p.Close()
	}
}

// observe hands a pod bound to the node to its runner, starting one for a new pod.
func (r *Runner) observe(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if run, ok := r.pods[p.UID]; ok {
		run.update(p)
		return
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return
	}
	run := newPod(r, p)
	r.pods[p.UID] = run
	r.stopping.Add(1)
	go func() {
		defer r.stopping.Done()
		run.run()
		r.mu.Lock()
		delete(r.pods, p.UID)
		r.mu.Unlock()
	}()
}

// gone is a pod object removed from the API (deleted with no grace, or by the runner).
func (r *Runner) gone(uid types.UID) {
	r.mu.Lock()
	run := r.pods[uid]
	r.mu.Unlock()
	if run != nil {
		run.removed()
	}
}

// Kill sends SIGKILL to a running container, as a crash would: its restartPolicy decides
// what happens next. It fails when the container is not running.
func (r *Runner) Kill(namespace, podName, container string) error {
	p, err := r.find(namespace, podName)
	if err != nil {
		return err
	}
	return p.kill(container)
}

// Network is the network namespace of a running pod, for tests that look from inside.
func (r *Runner) Network(namespace, podName string) (*podnet.Pod, error) {
	p, err := r.find(namespace, podName)
	if err != nil {
		return nil, err
	}
	if n := p.network(); n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("pod %s/%s has no network yet", namespace, podName)
}

func (r *Runner) find(namespace, name string) (*pod, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pods {
		if p.namespace == namespace && p.name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("runner: pod %s/%s is not running on node %s", namespace, name, NodeName)
}

// allocate gives a pod an address of the bridge's network: the first free one after the
// last given, wrapping around, as the host-local IPAM plugin does. Giving the lowest free
// one instead hands a deleted pod's address to the next pod at once, while Supervisors of
// other rings still gossip to it: the new pod's ring would merge with theirs (seen in the
// e2e suite, where rings of parallel tests share the node).
func (r *Runner) allocate() (netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	first := r.bridge.Gateway.Next()
	usable := func(a netip.Addr) bool { // in the network, not the broadcast address
		return r.bridge.Prefix.Contains(a) && a.Next().IsValid() && r.bridge.Prefix.Contains(a.Next())
	}
	start := first
	if r.lastIP.IsValid() && usable(r.lastIP.Next()) {
		start = r.lastIP.Next()
	}
	for a := start; ; {
		if !r.ips[a] {
			r.ips[a], r.lastIP = true, a
			return a, nil
		}
		if a = a.Next(); !usable(a) {
			a = first
		}
		if a == start {
			break
		}
	}
	return netip.Addr{}, fmt.Errorf("runner: no free address left in %s", r.bridge.Prefix)
}

func (r *Runner) release(a netip.Addr) {
	r.mu.Lock()
	delete(r.ips, a)
	r.mu.Unlock()
}

// mountPoint makes dir on the host if it is missing (empty; only ever mounted over inside
// a container's mount namespace) and remembers what it made for Close.
func (r *Runner) mountPoint(dir string) error {
	var missing []string
	for d := filepath.Clean(dir); d != "/"; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	slices.Reverse(missing)
	r.mu.Lock()
	r.mkdirs = append(r.mkdirs, missing...)
	r.mu.Unlock()
	return nil
}

// Repository is an image reference without its tag or digest: "habitat/redis" for
// "habitat/redis:latest", "localhost:5000/habring" for "localhost:5000/habring:v1@sha256:...".
func Repository(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		ref = ref[:i]
	}
	return ref
}

// resolveNames keeps the stable names a cluster DNS would serve: <hostname>.<service>.
// <namespace>.svc for every ready endpoint with a hostname of a headless Service, and
// rewrites every pod's hosts file with them.
func (r *Runner) resolveNames(store cache.Store) {
	names := map[string]netip.Addr{}
	for _, obj := range store.List() {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok || s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		if _, headless := s.Labels[corev1.IsHeadlessService]; !headless {
			continue
		}
		svc := s.Labels[discoveryv1.LabelServiceName]
		for _, e := range s.Endpoints {
			if e.Hostname == nil || len(e.Addresses) == 0 || (e.Conditions.Ready != nil && !*e.Conditions.Ready) {
				continue
			}
			a, err := netip.ParseAddr(e.Addresses[0])
			if err != nil {
				continue
			}
			names[fmt.Sprintf("%s.%s.%s.svc.%s", *e.Hostname, svc, s.Namespace, ClusterDomain)] = a
		}
	}
	r.mu.Lock()
	r.names = names
	pods := slices.Collect(maps.Values(r.pods))
	r.mu.Unlock()
	for _, p := range pods {
		p.writeHosts()
	}
}

// stableNames is a copy of the names resolveNames keeps.
func (r *Runner) stableNames() map[string]netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.names == nil {
		return map[string]netip.Addr{}
	}
	return maps.Clone(r.names)
}

// registerNode creates (or takes over) the node object: schedulable for pods that tolerate
// its taint, Ready, with the bridge as its pod CIDR.
func (r *Runner) registerNode(ctx context.Context) error {
	nodes := r.client.CoreV1().Nodes()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: NodeName, Labels: map[string]string{
			"kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux", "type": "habring-runner"},
			Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"}},
		Spec: corev1.NodeSpec{PodCIDR: r.bridge.Prefix.String(), PodCIDRs: []string{r.bridge.Prefix.String()},
			Taints: []corev1.Taint{{Key: TaintKey, Value: "true", Effect: corev1.TaintEffectNoSchedule}}},
	}
	if err := nodes.Delete(ctx, NodeName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("runner: remove the node a previous runner left: %w", err)
	}
	if _, err := nodes.Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("runner: register node %s: %w", NodeName, err)
	}
	// The node lifecycle controller writes a new node at once (its not-ready taint): read
	// it again until the status update lands.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := nodes.Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status = r.nodeStatus()
		_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("runner: node %s status: %w", NodeName, err)
	}
	return nil
}

func (r *Runner) nodeStatus() corev1.NodeStatus {
	now := metav1.Now()
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("16"),
		corev1.ResourceMemory: resource.MustParse("64Gi"),
		corev1.ResourcePods:   resource.MustParse("200"),
	}
	return corev1.NodeStatus{
		Capacity: res, Allocatable: res,
		Phase: corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "RunnerReady",
			Message: "habring's test runner runs this node's pods as processes", LastHeartbeatTime: now, LastTransitionTime: now}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: r.bridge.Gateway.String()},
			{Type: corev1.NodeHostName, Address: NodeName}},
		NodeInfo: corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64", KubeletVersion: "habring-runner"},
	}
}

// heartbeat keeps the node Ready: the node lifecycle controller taints a node whose status
// is older than its grace period (50 s) and evicts its pods.
func (r *Runner) heartbeat(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := r.client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err == nil {
			status := r.nodeStatus()
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					status.Conditions[0].LastTransitionTime = c.LastTransitionTime
				}
			}
			n.Status = status
			_, err = r.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			r.log.Warn("node heartbeat failed", "err", err)
		}
	}
}

// Expose makes a TCP address of this machine's loopback (the API server, a webhook)
// reachable from pods at the bridge's gateway, and returns where.
func (r *Runner) Expose(hostAddr string) (*Proxy, error) {
	p, err := NewProxy(net.JoinHostPort(r.bridge.Gateway.String(), "0"), hostAddr)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.proxies = append(r.proxies, p)
	r.mu.Unlock()
	return p, nil
}

// Logs is what a container of a pod running here wrote, every start of it (each begins
// with a "--- runner: start" line).
func (r *Runner) Logs(namespace, podName, container string) ([]byte, error) {
	return os.ReadFile(filepath.Join(r.opts.Dir, "logs", namespace+"_"+podName+"_"+container+".log"))
}
