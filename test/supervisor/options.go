package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Default ports and paths of the real Supervisor (`hab sup run --help`).
const (
	DefaultGossipPort   = 9638
	DefaultHTTPListen   = "0.0.0.0:9631"
	DefaultGossipListen = "0.0.0.0:9638"
	DefaultSupRoot      = "/hab/sup/default"
	// DefaultDepartureTimeout is butterfly's DEPARTURE_TIMEOUT_DEFAULT_MS (259_200_000 ms):
	// a Confirmed member turns Departed after 72 hours.
	DefaultDepartureTimeout = 72 * time.Hour
)

// Environment the double reads. The first four are the real Supervisor's; the HABRING_DOUBLE_
// ones are the double's own, for tests (documented in README.md).
const (
	EnvRingKey          = "HAB_RING_KEY"
	EnvGatewayAuthToken = "HAB_SUP_GATEWAY_AUTH_TOKEN"
	EnvListenGossip     = "HAB_LISTEN_GOSSIP"
	EnvListenHTTP       = "HAB_LISTEN_HTTP"
	EnvSupRoot          = "HABRING_DOUBLE_SUP_ROOT"          // where MEMBER_ID is kept (default /hab/sup/default)
	EnvDepartureTimeout = "HABRING_DOUBLE_DEPARTURE_TIMEOUT" // a Go duration (default 72h)
	EnvHostname         = "HABRING_DOUBLE_HOSTNAME"          // sys.hostname in the census (default os.Hostname)
	EnvPlan             = "HABRING_DOUBLE_PLAN"              // the plan directory of the service to run (default: none runs)
	EnvSvcRoot          = "HABRING_DOUBLE_SVC_ROOT"          // where the service's directories are made (default /hab/svc)
	EnvUserRoot         = "HABRING_DOUBLE_USER_ROOT"         // where <service>/config/user.toml is read (default /hab/user)
	EnvTimers           = "HABRING_DOUBLE_TIMERS"            // "habitat" (default: butterfly's) or "fast" (unit tests only)
)

// Default service paths of the real Supervisor (components/core/src/fs.rs).
const (
	DefaultSvcRoot  = "/hab/svc"
	DefaultUserRoot = "/hab/user"
)

// Options are what `hab sup run` was told, after names were resolved.
type Options struct {
	// Package is the leading `run <origin>/<name>` (or `start`); Service is its name.
	Package, Service string
	Group            string // --group (default "default")
	Topology         string // --topology: "standalone" (default) or "leader"
	Binds            []string
	// Peers are the --peer addresses, resolved once at start to IPv4 host:port.
	Peers         []string
	PeerWatchFile string
	Permanent     bool
	ListenGossip  netip.AddrPort
	ListenHTTP    string
	SysIP         netip.Addr // --sys-ip-address: what the member advertises
	RingKey       string     // HAB_RING_KEY content
	GatewayToken  string

	SupRoot          string
	DepartureTimeout time.Duration
	Hostname         string

	// PlanDir is the service's plan (HABRING_DOUBLE_PLAN); empty: the double runs no
	// service, as a Supervisor whose package has no run hook would run nothing.
	PlanDir, SvcRoot, UserRoot string
	// UserEnv is the service's config from the environment (HAB_<SERVICE>, TOML).
	UserEnv string
	// HealthCheckInterval is --health-check-interval (seconds; default 30).
	HealthCheckInterval time.Duration
	// FastTimers swaps butterfly's failure detection (3.1 s probes, 9.3 s suspicion) for
	// memberlist's sub-second one: for unit tests of the double alone.
	FastTimers bool
}

// ServiceGroup is "<service>.<group>", the census key.
func (o Options) ServiceGroup() string { return o.Service + "." + o.Group }

// ErrUsage marks arguments the real Supervisor would refuse.
var ErrUsage = errors.New("usage")

// Resolver looks up a peer name (net.DefaultResolver outside tests).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Parse reads `hab sup run` arguments (after the program name) and the environment, as the
// webhook injects them: a leading `run <pkg>` or `start <pkg>` is optional (images from
// `hab pkg export container` take flags alone), flags are `--flag=value` or `--flag value`.
// Peer names are resolved here, once, to their first IPv4 address: a name that does not
// resolve fails the start, as the real Supervisor's argument parsing does.
func Parse(ctx context.Context, args []string, env func(string) string, r Resolver) (Options, error) {
	o := Options{Group: "default", Topology: "standalone", ListenHTTP: DefaultHTTPListen, SupRoot: DefaultSupRoot,
		DepartureTimeout: DefaultDepartureTimeout, SvcRoot: DefaultSvcRoot, UserRoot: DefaultUserRoot,
		HealthCheckInterval: DefaultHealthCheckInterval}
	if len(args) > 0 && (args[0] == "run" || args[0] == "start") {
		if len(args) < 2 || strings.HasPrefix(args[1], "-") {
			return o, fmt.Errorf("%w: %s needs a package, e.g. %s core/redis", ErrUsage, args[0], args[0])
		}
		o.Package, args = args[1], args[2:]
	}
	gossip := env(EnvListenGossip)
	if gossip == "" {
		gossip = DefaultGossipListen
	}
	if v := env(EnvListenHTTP); v != "" {
		o.ListenHTTP = v
	}
	var sysIP string
	var peers []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return o, fmt.Errorf("%w: unexpected argument %q", ErrUsage, a)
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		takeValue := func() (string, error) {
			if hasValue {
				return value, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("%w: --%s needs a value", ErrUsage, name)
			}
			i++
			return args[i], nil
		}
		var err error
		switch name {
		case "permanent-peer", "I":
			o.Permanent = true
		case "peer":
			var v string
			if v, err = takeValue(); err == nil {
				peers = append(peers, v)
			}
		case "peer-watch-file":
			o.PeerWatchFile, err = takeValue()
		case "listen-gossip":
			gossip, err = takeValue()
		case "listen-http":
			o.ListenHTTP, err = takeValue()
		case "sys-ip-address":
			sysIP, err = takeValue()
		case "topology":
			o.Topology, err = takeValue()
		case "group":
			o.Group, err = takeValue()
		case "bind":
			var v string
			if v, err = takeValue(); err == nil {
				o.Binds = append(o.Binds, v)
			}
		case "health-check-interval":
			var v string
			if v, err = takeValue(); err == nil {
				n, perr := strconv.Atoi(v)
				if perr != nil || n < 1 {
					return o, fmt.Errorf("%w: --health-check-interval %q: want whole seconds", ErrUsage, v)
				}
				o.HealthCheckInterval = time.Duration(n) * time.Second
			}
		case "ring", "ring-key", "strategy", "channel", "update-condition", "listen-ctl", "org":
			_, err = takeValue() // accepted, not modelled
		default:
			return o, fmt.Errorf("%w: unknown flag --%s", ErrUsage, name)
		}
		if err != nil {
			return o, err
		}
	}
	if o.Package == "" {
		return o, fmt.Errorf("%w: no package to run; give `run <origin>/<name>` first", ErrUsage)
	}
	_, o.Service, _ = strings.Cut(o.Package, "/")
	o.Service, _, _ = strings.Cut(o.Service, "/")
	if o.Service == "" {
		return o, fmt.Errorf("%w: package %q: want <origin>/<name>", ErrUsage, o.Package)
	}
	if o.Topology != "standalone" && o.Topology != "leader" {
		return o, fmt.Errorf("%w: --topology %q: want standalone or leader", ErrUsage, o.Topology)
	}
	if len(peers) > 0 && o.PeerWatchFile != "" {
		return o, fmt.Errorf("%w: --peer and --peer-watch-file cannot be used together", ErrUsage)
	}
	var err error
	if o.ListenGossip, err = netip.ParseAddrPort(gossip); err != nil {
		return o, fmt.Errorf("%w: --listen-gossip %q: want IP:PORT", ErrUsage, gossip)
	}
	if sysIP != "" {
		if o.SysIP, err = netip.ParseAddr(sysIP); err != nil || !o.SysIP.Is4() {
			return o, fmt.Errorf("%w: --sys-ip-address %q: want an IPv4 address", ErrUsage, sysIP)
		}
	}
	for _, p := range peers {
		addr, err := ResolvePeer(ctx, p, r)
		if err != nil {
			return o, err
		}
		o.Peers = append(o.Peers, addr)
	}
	o.RingKey, o.GatewayToken = env(EnvRingKey), env(EnvGatewayAuthToken)
	if v := env(EnvSupRoot); v != "" {
		o.SupRoot = v
	}
	if o.DepartureTimeout, err = durationEnv(env, EnvDepartureTimeout, o.DepartureTimeout); err != nil {
		return o, err
	}
	o.Hostname = env(EnvHostname)
	o.PlanDir, o.UserEnv = env(EnvPlan), env(EnvName(o.Service))
	if v := env(EnvSvcRoot); v != "" {
		o.SvcRoot = v
	}
	if v := env(EnvUserRoot); v != "" {
		o.UserRoot = v
	}
	switch v := env(EnvTimers); v {
	case "", "habitat":
	case "fast":
		o.FastTimers = true
	default:
		return o, fmt.Errorf("%w: %s=%q: want habitat or fast", ErrUsage, EnvTimers, v)
	}
	return o, nil
}

func durationEnv(env func(string) string, key string, def time.Duration) (time.Duration, error) {
	v := env(key)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: %s=%q: want a positive duration", ErrUsage, key, v)
	}
	return d, nil
}

// ErrUnresolvable is why a start fails on a --peer name that does not resolve.
var ErrUnresolvable = errors.New("peer name does not resolve")

// ResolvePeer turns HOST[:PORT] into IPv4:PORT (port default 9638), resolving a name once to
// its first IPv4 address.
func ResolvePeer(ctx context.Context, peer string, r Resolver) (string, error) {
	host, port := peer, strconv.Itoa(DefaultGossipPort)
	if h, p, err := net.SplitHostPort(peer); err == nil {
		host, port = h, p
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%w: --peer %q: bad port", ErrUsage, peer)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if !ip.Is4() {
			return "", fmt.Errorf("%w: --peer %q: want IPv4", ErrUsage, peer)
		}
		return net.JoinHostPort(ip.String(), port), nil
	}
	ips, err := r.LookupNetIP(ctx, "ip4", host)
	if err == nil && len(ips) == 0 {
		err = errors.New("no IPv4 address")
	}
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrUnresolvable, host, err)
	}
	return net.JoinHostPort(ips[0].Unmap().String(), port), nil
}
