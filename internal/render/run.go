package render

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/patch"
	"github.com/habring/habring/internal/ring"
)

// Config is everything `habring render` is told, validated once by Validate.
type Config struct {
	// File holds the manifests (multi-document YAML or JSON); "-" is standard input.
	File string
	// Kubeconfig, when set, takes the ring's live members from that cluster; empty renders
	// offline, where only EndpointSlices in the input are live.
	Kubeconfig string
	// Namespace is given to manifests that name none (default "default").
	Namespace string
	// SidecarMode is patch.SidecarNative (default) or patch.SidecarContainer.
	SidecarMode string
	// Options are the webhook's: max peers, cluster domain and the labeler image shown
	// (defaults: contract.DefaultMaxPeers, patch.DefaultClusterDomain, DefaultImage).
	Options patch.Options
}

// Defaults returns a Config with every documented default set.
func Defaults() Config {
	return Config{
		Namespace:   "default",
		SidecarMode: patch.SidecarNative,
		Options:     patch.Options{MaxPeers: contract.DefaultMaxPeers, ClusterDomain: patch.DefaultClusterDomain, LabelerImage: DefaultImage},
	}
}

// Validate reports every problem at once, each naming the flag to change.
func (c Config) Validate() error {
	var errs []error
	if c.File == "" {
		errs = append(errs, errors.New("-f is required: a file of StatefulSet/Deployment manifests, or - for standard input"))
	}
	if c.SidecarMode != patch.SidecarNative && c.SidecarMode != patch.SidecarContainer {
		errs = append(errs, fmt.Errorf("--sidecar-mode %q: want native or container", c.SidecarMode))
	}
	return errors.Join(errs...)
}

// liveSyncTimeout bounds the wait for the live cluster's caches.
const liveSyncTimeout = 30 * time.Second

// Run reads the manifests (from in when cfg.File is "-"), renders them and writes the
// admitted pods to out as YAML. Pods that render are written even when others fail; the
// failures come back joined.
func Run(ctx context.Context, cfg Config, in io.Reader, out io.Writer, log *slog.Logger) error {
	var data []byte
	var err error
	if cfg.File == "-" {
		data, err = io.ReadAll(in)
	} else {
		data, err = os.ReadFile(cfg.File)
	}
	if err != nil {
		return fmt.Errorf("read manifests: %w", err)
	}
	objs, skipped, err := Parse(data, cfg.Namespace)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.File, err)
	}
	for _, s := range skipped {
		log.Info("not a workload; skipped", "object", s)
	}
	var live patch.Source = objs
	if cfg.Kubeconfig != "" {
		clients, err := ring.Connect(cfg.Kubeconfig, "habring-render")
		if err != nil {
			return err
		}
		if live, err = clients.Live(ctx, liveSyncTimeout); err != nil {
			return err
		}
	}
	opts := cfg.Options
	opts.NativeSidecar = cfg.SidecarMode == patch.SidecarNative
	pods, renderErr := Render(ctx, objs, live, opts)
	if err := YAML(out, pods); err != nil {
		return err
	}
	return renderErr
}
