package podnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrUnsupported means this machine cannot make pod networks: not root, or no iproute2.
var ErrUnsupported = errors.New("pod networks need root and iproute2 (ip)")

// Supported reports whether pod networks can be made here, and why not.
func Supported() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root", ErrUnsupported)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: %w (apt-get install iproute2)", ErrUnsupported, err)
	}
	return nil
}

// Names carry this prefix and the creating process's id: hrb<pid> (bridge), hr<pid>-<n>
// (namespace), hrv<pid>x<n> (the host end of a pod's veth).
const prefix = "hr"

// Bridge is a pod network: a bridge on the host holding the gateway address.
type Bridge struct {
	Name    string
	Prefix  netip.Prefix // e.g. 10.213.7.0/24
	Gateway netip.Addr   // the first address: the host on this network

	mu   sync.Mutex
	next int
	pods map[string]*Pod
}

// NewBridge makes the bridge for prefix (a /24 of private addresses the test picked) and
// gives the host its first address.
func NewBridge(ctx context.Context, p netip.Prefix) (*Bridge, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	b := &Bridge{Name: fmt.Sprintf("%sb%d", prefix, os.Getpid()), Prefix: p.Masked(), Gateway: p.Masked().Addr().Next(), pods: map[string]*Pod{}}
	if err := free(ctx, b.Prefix); err != nil {
		return nil, err
	}
	if err := ip(ctx, "link", "add", b.Name, "type", "bridge"); err != nil {
		return nil, err
	}
	if err := ip(ctx, "addr", "add", b.cidr(b.Gateway), "dev", b.Name); err != nil {
		_ = ip(ctx, "link", "del", b.Name)
		return nil, err
	}
	if err := ip(ctx, "link", "set", b.Name, "up"); err != nil {
		_ = ip(ctx, "link", "del", b.Name)
		return nil, err
	}
	return b, nil
}

// NewRandomBridge makes a bridge on a random /24 of 10.200.0.0-10.249.255.0 that no route
// of this machine overlaps.
func NewRandomBridge(ctx context.Context) (*Bridge, error) {
	var err error
	for range 20 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + rand.IntN(50)), byte(rand.IntN(250)), 0}), 24)
		var b *Bridge
		if b, err = NewBridge(ctx, p); err == nil {
			return b, nil
		}
	}
	return nil, err
}

// free fails when a route of this machine overlaps p: the pods' traffic must stay on the
// bridge, never reach a network that exists.
func free(ctx context.Context, p netip.Prefix) error {
	out, err := exec.CommandContext(ctx, "ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return fmt.Errorf("ip route: %w", err)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0 || fields[0] == "default":
			continue
		case len(fields) > 1 && (fields[0] == "local" || fields[0] == "broadcast" || fields[0] == "unicast" || fields[0] == "multicast"):
			fields = fields[1:] // a route type, then the destination
		}
		dst, err := netip.ParsePrefix(fields[0])
		if err != nil {
			a, aerr := netip.ParseAddr(fields[0])
			if aerr != nil {
				continue
			}
			dst = netip.PrefixFrom(a, 32)
		}
		if dst.Overlaps(p) {
			return fmt.Errorf("pod network %s overlaps this machine's route %q; pick another prefix", p, line)
		}
	}
	return nil
}

func (b *Bridge) cidr(a netip.Addr) string { return a.String() + "/" + strconv.Itoa(b.Prefix.Bits()) }

// Pod is one pod's network namespace.
type Pod struct {
	Name string // the namespace, /var/run/netns/<Name>
	IP   netip.Addr
	veth string
}

// AddPod makes a namespace with ip on the bridge, loopback up, a default route via the
// gateway, and hosts (name -> address) as its /etc/hosts.
func (b *Bridge) AddPod(ctx context.Context, addr netip.Addr, hosts map[string]netip.Addr) (*Pod, error) {
	if !b.Prefix.Contains(addr) || addr == b.Gateway {
		return nil, fmt.Errorf("pod address %s: want one in %s other than the gateway %s", addr, b.Prefix, b.Gateway)
	}
	b.mu.Lock()
	b.next++
	n := b.next
	b.mu.Unlock()
	p := &Pod{Name: fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), n), IP: addr, veth: fmt.Sprintf("%sv%dx%d", prefix, os.Getpid(), n)}
	steps := [][]string{
		{"netns", "add", p.Name},
		{"link", "add", p.veth, "type", "veth", "peer", "name", "eth0", "netns", p.Name},
		{"link", "set", p.veth, "master", b.Name},
		{"link", "set", p.veth, "up"},
		{"-n", p.Name, "addr", "add", b.cidr(addr), "dev", "eth0"},
		{"-n", p.Name, "link", "set", "lo", "up"},
		{"-n", p.Name, "link", "set", "eth0", "up"},
		{"-n", p.Name, "route", "add", "default", "via", b.Gateway.String()},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			_ = p.close(ctx)
			return nil, err
		}
	}
	if err := p.SetHosts(hosts); err != nil {
		_ = p.close(ctx)
		return nil, err
	}
	b.mu.Lock()
	b.pods[p.Name] = p
	b.mu.Unlock()
	return p, nil
}

// SetHosts rewrites the pod's /etc/hosts (as seen by commands from Command) in place, so
// commands already running see the change. The pod's /etc/resolv.conf names its own
// loopback, where nothing answers: a name not in hosts fails at once, and no lookup leaves
// the pod for this machine's resolvers.
func (p *Pod) SetHosts(hosts map[string]netip.Addr) error {
	dir := filepath.Join("/etc/netns", p.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if _, err := os.Stat(resolv); err != nil {
		if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n"), 0o644); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	buf.WriteString("127.0.0.1\tlocalhost\n")
	for name, a := range hosts {
		fmt.Fprintf(&buf, "%s\t%s\n", a, name)
	}
	return os.WriteFile(filepath.Join(dir, "hosts"), buf.Bytes(), 0o644)
}

// Command runs name inside the pod: its network namespace and its /etc files
// (`ip netns exec`, which also gives the command a mount namespace of its own).
func (p *Pod) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.Name, name}, args...)...)
}

// Do runs f on a goroutine locked to an OS thread that has entered the pod's network
// namespace: a dial to 127.0.0.1 there reaches the pod's own loopback. The thread returns
// to its own namespace afterwards; if it cannot, it is left locked and Go ends it with the
// goroutine rather than reuse it. (A thread that ends sends the parent-death signal to
// every process it started: returning is the better way.)
func (p *Pod) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		elsewhere := false // the thread is in the pod's namespace and could not come back
		defer func() {
			if !elsewhere {
				runtime.UnlockOSThread()
			}
		}()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open this thread's namespace: %w", err)
			return
		}
		defer func() { _ = unix.Close(home) }()
		fd, err := unix.Open(filepath.Join("/var/run/netns", p.Name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", p.Name, err)
			return
		}
		defer func() { _ = unix.Close(fd) }()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", p.Name, err)
			return
		}
		err = f()
		elsewhere = unix.Setns(home, unix.CLONE_NEWNET) != nil
		errc <- err
	}()
	return <-errc
}

func (p *Pod) close(ctx context.Context) error {
	_ = ip(ctx, "link", "del", p.veth) // deletes the pod's end too
	err := ip(ctx, "netns", "del", p.Name)
	_ = os.RemoveAll(filepath.Join("/etc/netns", p.Name))
	return err
}

// RemovePod deletes a pod's namespace, link and hosts file.
func (b *Bridge) RemovePod(ctx context.Context, p *Pod) error {
	b.mu.Lock()
	delete(b.pods, p.Name)
	b.mu.Unlock()
	return p.close(ctx)
}

// Close removes every pod and the bridge.
func (b *Bridge) Close(ctx context.Context) error {
	b.mu.Lock()
	pods := make([]*Pod, 0, len(b.pods))
	for _, p := range b.pods {
		pods = append(pods, p)
	}
	b.pods = map[string]*Pod{}
	b.mu.Unlock()
	var errs []error
	for _, p := range pods {
		errs = append(errs, p.close(ctx))
	}
	errs = append(errs, ip(ctx, "link", "del", b.Name))
	return errors.Join(errs...)
}

// Sweep removes the bridges, namespaces and links of podnet processes that no longer run
// (a test binary killed before its cleanup), and returns what it removed.
func Sweep(ctx context.Context) ([]string, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	var removed []string
	dead := func(name, after string) bool {
		rest, ok := strings.CutPrefix(name, prefix+after)
		if !ok {
			return false
		}
		end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if end < 0 {
			end = len(rest)
		}
		pid, err := strconv.Atoi(rest[:end])
		if err != nil || pid == os.Getpid() {
			return false
		}
		return unix.Kill(pid, 0) == unix.ESRCH
	}
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if dead(e.Name(), "") {
			_ = ip(ctx, "netns", "del", e.Name())
			_ = os.RemoveAll(filepath.Join("/etc/netns", e.Name()))
			removed = append(removed, e.Name())
		}
	}
	out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output()
	if err != nil {
		return removed, fmt.Errorf("ip link show: %w", err)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(fields[1], ":"), "@")
		if dead(name, "b") || dead(name, "v") {
			_ = ip(ctx, "link", "del", name)
			removed = append(removed, name)
		}
	}
	return removed, nil
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
