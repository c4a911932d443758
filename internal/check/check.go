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
	// Wait asks a retried check (see --list) again, every two seconds, until it passes or
	// Wait is over; 0 asks once.
	Wait time.Duration
	// Output is text or json.
	Output string
	// List prints the checks instead of running them.
	List bool
}

// Defaults returns the flags' defaults.
func Defaults() Config {
	return Config{MinCertValidity: 7 * 24 * time.Hour, Timeout: 5 * time.Second, Output: "text"}
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
	if c.Wait < 0 {
		errs = append(errs, fmt.Errorf("--wait %s: want 0 or more", c.Wait))
	}
	if c.Output != "text" && c.Output != "json" {
		errs = append(errs, fmt.Errorf("-o %q: want text or json", c.Output))
	}
	return errors.Join(errs...)
}

// ErrChecksFailed is returned by Run when the report has a failed check; the report says which.
var ErrChecksFailed = errors.New("checks failed")

// Run checks the cluster in cfg.Kubeconfig (or explains cfg.Pod) and writes the report to
// out, --wait's progress to progress. It returns ErrChecksFailed when a check failed, another
// error when it could not start (no kubeconfig).
func Run(ctx context.Context, cfg Config, out, progress io.Writer, _ *slog.Logger) error {
	if cfg.List {
		return WriteList(out)
	}
	clients, err := ring.ConnectAsKubectl(cfg.Kubeconfig, cfg.Context, "habring-check")
	if err != nil {
		return err
	}
	c := &Checker{Clients: clients, Config: cfg, Now: time.Now, Progress: progress}
	r := c.Check(ctx)
	if cfg.Output == "json" {
		err = r.WriteJSON(out)
	} else {
		err = r.Write(out)
	}
	if err != nil {
		return err
	}
	if r.Interrupted {
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
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
	// Progress is where --wait says what it waits for (nil: nowhere).
	Progress io.Writer
	// deadline ends --wait's retries; zero asks once. retryEvery is the pause between two
	// tries (zero: the constant; tests shorten it).
	deadline   time.Time
	retryEvery time.Duration
	// memo holds this try's reads (see cached).
	memo map[string]memo
	// found is the installation the run checks, once found (see installation).
	found *install
	// live answers patch.Injector.Admit's questions as the webhook's caches do; made on first use.
	live    patch.Source
	liveErr error // why live could not be made: asked once a run
	// inj decides as the webhook would, with its options (injOrigin says where they came
	// from); made on first use.
	inj       *patch.Injector
	injOrigin string
}

func (c *Checker) progress() io.Writer {
	if c.Progress == nil {
		return io.Discard
	}
	return c.Progress
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
	if c.live == nil && c.liveErr == nil {
		cache, err := c.Clients.Live(ctx, 30*time.Second)
		if err != nil {
			c.liveErr = fmt.Errorf("the webhook's view of the cluster (informer caches): %w", err)
			return nil, c.liveErr
		}
		c.live = cache
	}
	return c.live, c.liveErr
}

// Check runs the checks (or, with Config.Pod, explains the pod) and reports what they found.
func (c *Checker) Check(ctx context.Context) *Report {
	c.forget()
	if c.Config.Wait > 0 {
		c.deadline = time.Now().Add(c.Config.Wait)
	}
	if c.Config.Pod != "" {
		return c.runChecks(ctx, podChecks)
	}
	return c.runChecks(ctx, catalogue)
}
