package labeler

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/habring/habring/contract"
)

// Config is everything habring-labeler is told, validated once by Validate.
type Config struct {
	// Gateway is the Supervisor's HTTP gateway (default http://127.0.0.1:9631).
	Gateway string
	// GatewayToken is HAB_SUP_GATEWAY_AUTH_TOKEN (from the environment, never a flag).
	GatewayToken string
	// Interval between census reads (default 1s), jittered by up to 20%. A read is a GET
	// on the pod's own loopback (no API server request), so the label can follow an
	// election within about a second; the leader's label costs no request per read.
	Interval time.Duration
	// StaleAfter is how long the last label is kept while the gateway fails (default 30s);
	// after that the label becomes "none", so a dead leader never stays "leader".
	StaleAfter time.Duration
	// LeaseDuration is how long the leader Lease of the ring's service group lasts without
	// renewal (default 20s; renewed every 2/5 of it, lost after half of it without a
	// renewal: leaseTimes): the longest the label can take to move after a leader's
	// labeler dies, and never two pods labelled leader meanwhile.
	LeaseDuration time.Duration
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
		Gateway:       fmt.Sprintf("http://127.0.0.1:%d", contract.GatewayPort),
		Interval:      time.Second,
		StaleAfter:    30 * time.Second,
		LeaseDuration: 20 * time.Second,
		MaxPeers:      contract.DefaultMaxPeers,
		HealthListen:  fmt.Sprintf(":%d", contract.LabelerHealthPort),
	}
}

// ringName is a DNS-1123 label, as the webhook admits habitat.sh/ring; the labeler puts it
// into label selectors.
var ringName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

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
	if c.LeaseDuration < time.Second || c.LeaseDuration%time.Second != 0 {
		errs = append(errs, fmt.Errorf("--lease-duration %s: want whole seconds, at least 1s (a Lease says its term in seconds)", c.LeaseDuration))
	}
	if c.PodName == "" || c.Namespace == "" {
		errs = append(errs, errors.New("--pod-name and --namespace are required (the webhook sets HABRING_POD_NAME and HABRING_POD_NAMESPACE from the downward API)"))
	}
	if c.PeerWatchFile != "" && c.Ring == "" {
		errs = append(errs, errors.New("--peer-watch-file needs --ring"))
	}
	if c.Ring != "" && !ringName.MatchString(c.Ring) {
		errs = append(errs, fmt.Errorf("--ring %q: want the ring's habitat.sh/ring, a DNS-1123 label", c.Ring))
	}
	if c.MaxPeers < 1 {
		errs = append(errs, fmt.Errorf("--max-peers %d: want at least 1", c.MaxPeers))
	}
	if _, _, err := net.SplitHostPort(c.HealthListen); err != nil {
		errs = append(errs, fmt.Errorf("--health-listen %q: want host:port", c.HealthListen))
	}
	return errors.Join(errs...)
}

// RegisterFlags binds c's fields to the labeler's flags (`habring-labeler --help`), with
// c's values as defaults. The pod's name and namespace default to HABRING_POD_NAME and
// HABRING_POD_NAMESPACE, the gateway token comes from HAB_SUP_GATEWAY_AUTH_TOKEN only.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.GatewayToken = os.Getenv("HAB_SUP_GATEWAY_AUTH_TOKEN") // a secret: environment only, never a flag
	fs.StringVar(&c.Gateway, "gateway", c.Gateway, "the Supervisor's HTTP gateway; HAB_SUP_GATEWAY_AUTH_TOKEN is sent as a Bearer token when set")
	fs.DurationVar(&c.Interval, "interval", c.Interval, "time between /census reads (jittered; backs off while the gateway fails)")
	fs.DurationVar(&c.StaleAfter, "stale-after", c.StaleAfter, "how long the last label is kept while /census fails before it becomes none")
	fs.DurationVar(&c.LeaseDuration, "lease-duration", c.LeaseDuration, "the leader Lease of the ring's service group (habring-<ring>-<group>), renewed every 2/5 of it: the label leader is only written while it is held")
	fs.StringVar(&c.ServiceGroup, "service-group", c.ServiceGroup, "census group to publish, e.g. redis.default; empty: the one group the local member is in")
	fs.StringVar(&c.PodName, "pod-name", os.Getenv("HABRING_POD_NAME"), "this pod's name (default $HABRING_POD_NAME)")
	fs.StringVar(&c.Namespace, "namespace", os.Getenv("HABRING_POD_NAMESPACE"), "this pod's namespace (default $HABRING_POD_NAMESPACE)")
	fs.StringVar(&c.Ring, "ring", c.Ring, "the ring's name (habitat.sh/ring), for --peer-watch-file")
	fs.StringVar(&c.PeerWatchFile, "peer-watch-file", c.PeerWatchFile, "keep this file filled with the ring's live member IPs (watch-file mode)")
	fs.IntVar(&c.MaxPeers, "max-peers", c.MaxPeers, "most lines in --peer-watch-file")
	fs.StringVar(&c.HealthListen, "health-listen", c.HealthListen, "address for /healthz, /readyz and /metrics")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig file; empty uses the token mounted into this container")
}
