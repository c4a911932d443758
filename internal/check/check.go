package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/habring/habring/internal/patch"
	"github.com/habring/habring/internal/ring"
)

// WebhookName is the name of habring's webhook inside its MutatingWebhookConfiguration,
// whatever the configuration itself is called (kustomize: habring; Helm: the release's).
const WebhookName = "inject.habring.habitat.sh"

// Config is `habring check`'s flags.
type Config struct {
	// Kubeconfig and Context find the cluster as kubectl does (empty: $KUBECONFIG,
	// ~/.kube/config, in-cluster).
	Kubeconfig, Context string
	// Namespace limits the per-namespace and per-ring checks to one namespace.
	Namespace string
	// Pod (namespace/name) asks why one pod was or was not injected, instead of the checks.
	Pod string
	// MinCertValidity fails the certificate check when the serving certificate expires sooner.
	MinCertValidity time.Duration
	// Timeout bounds each network call: a dial of the webhook, a read of a Supervisor's census.
	Timeout time.Duration
}

// Defaults returns the flags' defaults.
func Defaults() Config {
	return Config{MinCertValidity: 7 * 24 * time.Hour, Timeout: 5 * time.Second}
}

// Validate reports every flag that is wrong.
func (c Config) Validate() error {
	var errs []error
	if c.Pod != "" {
		if ns, name, ok := strings.Cut(c.Pod, "/"); !ok || ns == "" || name == "" {
			errs = append(errs, fmt.Errorf("--pod %q: want namespace/name", c.Pod))
		}
	}
	if c.MinCertValidity < 0 {
		errs = append(errs, fmt.Errorf("--min-cert-validity %s: want 0 or more", c.MinCertValidity))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %s: want more than 0", c.Timeout))
	}
	return errors.Join(errs...)
}

// ErrChecksFailed is returned by Run when the report has a failed check; the report says which.
var ErrChecksFailed = errors.New("checks failed")

// Run checks the cluster in cfg.Kubeconfig (or explains cfg.Pod) and writes the report to
// out. It returns ErrChecksFailed when a check failed, another error when it could not check.
func Run(ctx context.Context, cfg Config, out io.Writer, _ *slog.Logger) error {
	clients, err := ring.ConnectAsKubectl(cfg.Kubeconfig, cfg.Context, "habring-check")
	if err != nil {
		return err
	}
	c := &Checker{Clients: clients, Config: cfg, Now: time.Now}
	var r *Report
	if cfg.Pod != "" {
		ns, name, _ := strings.Cut(cfg.Pod, "/")
		r, err = c.ExplainPod(ctx, ns, name)
	} else {
		r, err = c.Check(ctx)
	}
	if err != nil {
		return err
	}
	if err := r.Write(out); err != nil {
		return err
	}
	if r.Failed() > 0 {
		return ErrChecksFailed
	}
	return nil
}

// Checker runs the checks against one cluster.
type Checker struct {
	Clients *ring.Clients
	Config  Config
	Now     func() time.Time
	// live answers patch.Injector.Admit's questions as the webhook's caches do; made on first use.
	live patch.Source
	// inj decides as the webhook would, with its options (injOrigin says where they came
	// from); made on first use.
	inj       *patch.Injector
	injOrigin string
}

// injector is the Injector explanations admit with: the installed webhook's own options
// where its pod can be read, else the defaults, and a sentence saying which.
func (c *Checker) injector(ctx context.Context) (*patch.Injector, string) {
	if c.inj == nil {
		opts, origin := c.webhookOptions(ctx)
		c.inj, c.injOrigin = patch.NewInjector(opts), origin
	}
	return c.inj, c.injOrigin
}

// source is the webhook's view of the cluster: informer caches of StatefulSets,
// Deployments, EndpointSlices and ring pods, synced once.
func (c *Checker) source(ctx context.Context) (patch.Source, error) {
	if c.live == nil {
		cache, err := c.Clients.Live(ctx, 30*time.Second)
		if err != nil {
			return nil, err
		}
		c.live = cache
	}
	return c.live, nil
}

// Check runs every check: the installation, then each selected namespace and its rings.
func (c *Checker) Check(ctx context.Context) (*Report, error) {
	r := &Report{}
	inst, err := c.checkInstall(ctx, r)
	if err != nil {
		return nil, err
	}
	if inst == nil {
		return r, nil // nothing to check namespaces against
	}
	if err := c.checkNamespaces(ctx, r, inst); err != nil {
		return nil, err
	}
	return r, nil
}
