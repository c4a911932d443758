package labeler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/habring/habring/patch"
)

// Config is everything `habring labeler` is told, validated once by Validate.
type Config struct {
	// Gateway is the Supervisor's HTTP gateway (default http://127.0.0.1:9631).
	Gateway string
	// GatewayToken is HAB_SUP_GATEWAY_AUTH_TOKEN (from the environment, never a flag).
	GatewayToken string
	// Interval between census reads (default 5s), jittered by up to 20%.
	Interval time.Duration
	// StaleAfter is how long the last label is kept while the gateway fails (default 30s);
	// after that the label becomes "none", so a dead leader never stays "leader".
	StaleAfter time.Duration
	// ServiceGroup is the census group to publish (e.g. redis.default); empty means the
	// one group the local member belongs to.
	ServiceGroup string
	// PodName and Namespace identify the labeler's own pod (downward API).
	PodName, Namespace string
	// Ring is the ring name, for watch-file mode.
	Ring string
	// PeerWatchFile, when set, is kept filled with the ring's live members.
	PeerWatchFile string
	// MaxPeers caps the watch file (default 5).
	MaxPeers int
	// HealthListen serves /healthz, /readyz and /metrics (default :9646).
	HealthListen string
	// Kubeconfig is a kubeconfig path; empty means the in-cluster config.
	Kubeconfig string
}

// Defaults returns a Config with every documented default set.
func Defaults() Config {
	return Config{
		Gateway:      fmt.Sprintf("http://127.0.0.1:%d", patch.GatewayPort),
		Interval:     5 * time.Second,
		StaleAfter:   30 * time.Second,
		MaxPeers:     patch.DefaultMaxPeers,
		HealthListen: fmt.Sprintf(":%d", patch.LabelerHealthPort),
	}
}

// Validate reports every problem at once, each naming the flag to change.
func (c Config) Validate() error {
	var errs []error
	if !strings.HasPrefix(c.Gateway, "http://") && !strings.HasPrefix(c.Gateway, "https://") {
		errs = append(errs, fmt.Errorf("--gateway %q: want an http:// URL", c.Gateway))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("--interval %s: want more than 0", c.Interval))
	}
	if c.StaleAfter < c.Interval {
		errs = append(errs, fmt.Errorf("--stale-after %s: want at least --interval (%s)", c.StaleAfter, c.Interval))
	}
	if c.PodName == "" || c.Namespace == "" {
		errs = append(errs, errors.New("--pod-name and --namespace are required (the webhook sets HABRING_POD_NAME and HABRING_POD_NAMESPACE from the downward API)"))
	}
	if c.PeerWatchFile != "" && c.Ring == "" {
		errs = append(errs, errors.New("--peer-watch-file needs --ring"))
	}
	if c.MaxPeers < 1 {
		errs = append(errs, fmt.Errorf("--max-peers %d: want at least 1", c.MaxPeers))
	}
	if _, _, err := net.SplitHostPort(c.HealthListen); err != nil {
		errs = append(errs, fmt.Errorf("--health-listen %q: want host:port", c.HealthListen))
	}
	return errors.Join(errs...)
}

// Run builds the client and labels until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	// With no kubeconfig, clientcmd uses the in-cluster config: the labeler's own projected
	// token, which the webhook mounts into this container alone.
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes config: %w (outside a pod, pass --kubeconfig)", err)
	}
	rc.UserAgent = "habring-labeler"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	log = log.With("pod", cfg.PodName, "namespace", cfg.Namespace)
	log.Info("labeling", "gateway", cfg.Gateway, "group", cfg.ServiceGroup, "peerWatchFile", cfg.PeerWatchFile)
	return New(cfg, client, log).Run(ctx)
}

// Labeler keeps one pod's role label true.
type Labeler struct {
	cfg     Config
	client  kubernetes.Interface
	gateway *Gateway
	log     *slog.Logger
	metrics *metrics

	censusOK   atomic.Bool // last census read succeeded (/healthz)
	peersReady atomic.Bool // the watch file was written at least once (/readyz)
}

type metrics struct {
	registry    *prometheus.Registry
	writes      *prometheus.CounterVec
	censusFails prometheus.Counter
	role        *prometheus.GaugeVec
}

// New builds a Labeler; Run starts it.
func New(cfg Config, client kubernetes.Interface, log *slog.Logger) *Labeler {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "habring_labeler_label_writes_total", Help: "Writes of this pod's habitat.sh/role label, by new value.",
		}, []string{"role"}),
		censusFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "habring_labeler_census_failures_total", Help: "Failed /census reads.",
		}),
		role: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "habring_labeler_role", Help: "1 for the role this pod's label holds.",
		}, []string{"role"}),
	}
	m.registry.MustRegister(m.writes, m.censusFails, m.role)
	return &Labeler{
		cfg: cfg, client: client, log: log, metrics: m,
		gateway: &Gateway{URL: cfg.Gateway, Token: cfg.GatewayToken, Client: &http.Client{Timeout: 2 * time.Second}},
	}
}

// Run labels until ctx ends; it returns nil on a clean stop.
func (l *Labeler) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", l.cfg.HealthListen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (change --health-listen)", l.cfg.HealthListen, err)
	}
	srv := &http.Server{Handler: l.Handler(), ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	if l.cfg.PeerWatchFile == "" {
		l.peersReady.Store(true)
	} else {
		wg.Go(func() { l.keepPeerFile(ctx) })
	}
	l.keepRole(ctx)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	wg.Wait()
	l.log.Info("stopped")
	return nil
}

// Handler serves /healthz (200 while the last census read succeeded), /readyz (200 once
// the peer file was written, or at once without one) and /metrics.
func (l *Labeler) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !l.censusOK.Load() {
			http.Error(w, "last census read failed", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !l.peersReady.Load() {
			http.Error(w, "peer watch file not written yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(l.metrics.registry, promhttp.HandlerOpts{}))
	return mux
}

// keepRole is the census loop: read, decide, write the label when it changes.
func (l *Labeler) keepRole(ctx context.Context) {
	current := l.currentLabel(ctx) // "" when unknown: the first decision is written
	lastOK := time.Now()           // a Supervisor that never answers is stale after StaleAfter too
	var lastErr string
	backoff := l.backoff()
	for {
		role, group, err := l.read(ctx)
		want := role
		if err != nil {
			l.censusOK.Store(false)
			l.metrics.censusFails.Inc()
			if err.Error() != lastErr {
				l.log.Warn("census read failed; keeping the last label until --stale-after", "err", err, "staleAfter", l.cfg.StaleAfter)
				lastErr = err.Error()
			}
			want = current
			if time.Since(lastOK) >= l.cfg.StaleAfter {
				want = patch.RoleNone
			}
		} else {
			if lastErr != "" {
				l.log.Info("census read recovered", "group", group)
				lastErr = ""
			}
			l.censusOK.Store(true)
			lastOK = time.Now()
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
			if untilStale := time.Until(lastOK.Add(l.cfg.StaleAfter)); current != patch.RoleNone && untilStale > 0 && untilStale < next {
				next = untilStale
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
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
	l.metrics.writes.WithLabelValues(role).Inc()
	for _, r := range []string{patch.RoleLeader, patch.RoleFollower, patch.RoleNone} {
		v := 0.0
		if r == role {
			v = 1
		}
		l.metrics.role.WithLabelValues(r).Set(v)
	}
	return nil
}

// keepPeerFile watches the ring's EndpointSlices in this namespace and rewrites the peer
// watch file whenever the live members change. The Supervisor reads the file only while
// it knows no other member, so this is what heals a member restarted alone.
func (l *Labeler) keepPeerFile(ctx context.Context) {
	f := informers.NewSharedInformerFactoryWithOptions(l.client, 0, informers.WithNamespace(l.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = patch.LabelRing + "=" + l.cfg.Ring }))
	inf := f.Discovery().V1().EndpointSlices().Informer()
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke}); err != nil {
		l.log.Error("watch endpointslices", "err", err)
		return
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return
	}
	var last string
	write := func() {
		var slices []*discoveryv1.EndpointSlice
		for _, o := range inf.GetStore().List() {
			// The list/watch is already filtered by the API server; checking again costs
			// nothing and keeps another ring's members out whatever serves the watch.
			if s := o.(*discoveryv1.EndpointSlice); s.Labels[patch.LabelRing] == l.cfg.Ring {
				slices = append(slices, s)
			}
		}
		content := PeerFile(l.cfg.PodName, slices, l.cfg.MaxPeers)
		if content == last && l.peersReady.Load() {
			return
		}
		if err := writeAtomic(l.cfg.PeerWatchFile, []byte(content)); err != nil {
			l.log.Error("write peer watch file", "path", l.cfg.PeerWatchFile, "err", err)
			return
		}
		last = content
		l.peersReady.Store(true)
		l.log.Info("peer watch file written", "path", l.cfg.PeerWatchFile, "peers", strings.Count(content, "\n"))
	}
	write()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			write()
		}
	}
}

// PeerFile is the watch file's content: one live member IP a line (the pod itself
// excluded, unready addresses ignored), at most maxPeers, in patch.LiveMembers order.
func PeerFile(podName string, slices []*discoveryv1.EndpointSlice, maxPeers int) string {
	members := patch.LiveMembers(podName, patch.Ring{Members: patch.Members(slices)})
	var b strings.Builder
	for i, m := range members {
		if i == maxPeers {
			break
		}
		b.WriteString(m.IP)
		b.WriteByte('\n')
	}
	return b.String()
}

// writeAtomic replaces path in one rename, so the Supervisor never reads half a file.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // a no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
