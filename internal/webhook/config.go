package webhook

import (
	"errors"
	"fmt"
	"net"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/patch"
)

// SidecarAuto (--sidecar-mode=auto, the default) picks patch.SidecarNative when the API
// server is 1.29 or newer and patch.SidecarContainer otherwise.
const SidecarAuto = "auto"

// Config is everything `habring webhook` is told, validated once by Validate.
type Config struct {
	// Listen is the HTTPS address (default ":8443").
	Listen string
	// TLSCertFile and TLSKeyFile hold the serving key pair, reloaded when they change.
	TLSCertFile, TLSKeyFile string
	// Kubeconfig is a kubeconfig path; empty means the in-cluster config.
	Kubeconfig string
	// LabelerImage is the sidecar's image (required: habring's own image).
	LabelerImage string
	// MaxPeers caps each pod's peer list (default 5).
	MaxPeers int
	// ClusterDomain forms StatefulSet pods' stable names (default "cluster.local").
	ClusterDomain string
	// SidecarMode is SidecarAuto (default), patch.SidecarNative or patch.SidecarContainer.
	SidecarMode string
	// RequestTimeout bounds one admission's work (default 5s); keep it below the webhook
	// configuration's timeoutSeconds (deploy/ sets 10s) so habring answers first.
	RequestTimeout time.Duration
	// ShutdownDelay is how long /readyz fails before the server stops accepting, so
	// endpoints drop this replica before its listener closes (default 5s).
	ShutdownDelay time.Duration
	// ShutdownTimeout bounds the wait for in-flight requests (default 20s).
	ShutdownTimeout time.Duration
	// MaxConnections caps the open connections (default 1000); at the cap, connections
	// that are not serving a request are closed first (package connlimit).
	MaxConnections int
	// EnableHTTP2 offers HTTP/2 (default false; see NewServer for why).
	EnableHTTP2 bool
}

// Defaults returns a Config with every documented default set.
func Defaults() Config {
	return Config{
		Listen:          ":8443",
		MaxPeers:        contract.DefaultMaxPeers,
		ClusterDomain:   patch.DefaultClusterDomain,
		SidecarMode:     SidecarAuto,
		RequestTimeout:  5 * time.Second,
		ShutdownDelay:   5 * time.Second,
		ShutdownTimeout: 20 * time.Second,
		MaxConnections:  1000,
	}
}

// Validate reports every problem at once, each naming the flag to change.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: want host:port, e.g. :8443", c.Listen))
	}
	if c.TLSCertFile == "" || c.TLSKeyFile == "" {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required (cert-manager's Secret mount: tls.crt, tls.key)"))
	}
	if c.LabelerImage == "" {
		errs = append(errs, errors.New("--labeler-image is required (the habring image the sidecar runs)"))
	}
	if c.MaxPeers < 1 || c.MaxPeers > 64 {
		errs = append(errs, fmt.Errorf("--max-peers %d: want 1 to 64", c.MaxPeers))
	}
	if msgs := validation.IsDNS1123Subdomain(c.ClusterDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--cluster-domain %q: %s", c.ClusterDomain, msgs[0]))
	}
	switch c.SidecarMode {
	case SidecarAuto, patch.SidecarNative, patch.SidecarContainer:
	default:
		errs = append(errs, fmt.Errorf("--sidecar-mode %q: want auto, native or container", c.SidecarMode))
	}
	if c.RequestTimeout <= 0 || c.RequestTimeout > 30*time.Second {
		// 30s is the API server's upper bound for a webhook's timeoutSeconds.
		errs = append(errs, fmt.Errorf("--request-timeout %s: want more than 0 and at most 30s", c.RequestTimeout))
	}
	if c.MaxConnections < 1 {
		errs = append(errs, fmt.Errorf("--max-connections %d: want at least 1", c.MaxConnections))
	}
	if c.ShutdownDelay < 0 || c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("--shutdown-delay must be >= 0 and --shutdown-timeout > 0"))
	}
	return errors.Join(errs...)
}
