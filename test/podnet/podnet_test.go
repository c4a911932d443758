package podnet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// bridge makes a pod network on a random private /24 for one test.
func bridge(t *testing.T) *Bridge {
	t.Helper()
	if err := Supported(); err != nil {
		t.Skip(err)
	}
	// What an earlier run killed before its cleanup left behind goes first.
	removed, err := Sweep(t.Context())
	require.NoError(t, err)
	if len(removed) > 0 {
		t.Logf("swept what dead runs left: %v", removed)
	}
	p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + rand.IntN(50)), byte(rand.IntN(250)), 0}), 24)
	b, err := NewBridge(t.Context(), p)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close(context.WithoutCancel(t.Context()))) })
	return b
}

func addr(b *Bridge, i int) netip.Addr {
	a := b.Prefix.Addr().As4()
	a[3] = byte(i)
	return netip.AddrFrom4(a)
}

// buildDouble compiles the Supervisor double for the pods to run.
func buildDouble(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hab-sup-double")
	out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "../supervisor/cmd/hab-sup-double").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

type census struct {
	LocalMemberID string `json:"local_member_id"`
	Groups        map[string]struct {
		ElectionStatus string  `json:"election_status"`
		LeaderID       *string `json:"leader_id"`
		Population     map[string]struct {
			Alive bool `json:"alive"`
		} `json:"population"`
	} `json:"census_groups"`
}

// censusOn reads /census over a connection made on the calling goroutine, so that inside
// Pod.Do the socket is created in the pod's namespace (http.Client dials on goroutines of
// its own, on threads outside it).
func censusOn(addr string) (census, error) {
	var c census
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return c, err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/census", nil)
	if err != nil {
		return c, err
	}
	if err := req.Write(conn); err != nil {
		return c, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return c, err
	}
	defer func() { _ = resp.Body.Close() }()
	return c, json.NewDecoder(resp.Body).Decode(&c)
}

func getCensus(url string) (census, error) {
	var c census
	client := &http.Client{Timeout: time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return c, err
	}
	defer func() { _ = resp.Body.Close() }()
	return c, json.NewDecoder(resp.Body).Decode(&c)
}

// Three pods, each a network namespace on the test's bridge, run the Supervisor double as
// the webhook would start it: pod 0 alone, pod 1 with pod 0's stable name (resolved from
// its own /etc/hosts), pod 2 with pod 0's IP. They form one ring, reachable at their pod
// IPs from the host, and 127.0.0.1 inside a pod is that pod's own gateway.
func TestPodsRunARing(t *testing.T) {
	b := bridge(t)
	bin := buildDouble(t)
	name0 := "redis-0.redis.shop.svc.cluster.local"
	hosts := map[string]netip.Addr{name0: addr(b, 10)}
	var pods []*Pod
	for i := range 3 {
		p, err := b.AddPod(t.Context(), addr(b, 10+i), hosts)
		require.NoError(t, err)
		pods = append(pods, p)
		args := []string{"run", "core/redis", "--topology=leader", "--permanent-peer", "--sys-ip-address=" + p.IP.String()}
		switch i {
		case 1:
			args = append(args, "--peer="+name0)
		case 2:
			args = append(args, "--peer="+addr(b, 10).String())
		}
		cmd := p.Command(t.Context(), bin, args...)
		cmd.Env = append(os.Environ(), "HABRING_DOUBLE_SUP_ROOT="+t.TempDir(), "HABRING_DOUBLE_ELECTION_SETTLE=300ms", fmt.Sprintf("HABRING_DOUBLE_HOSTNAME=redis-%d", i))
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	}
	var leader string
	for _, p := range pods {
		require.Eventually(t, func() bool {
			c, err := getCensus("http://" + p.IP.String() + ":9631/census")
			if err != nil {
				return false
			}
			g := c.Groups["redis.default"]
			alive := 0
			for _, m := range g.Population {
				if m.Alive {
					alive++
				}
			}
			if alive != 3 || g.ElectionStatus != "ElectionFinished" || g.LeaderID == nil {
				return false
			}
			if leader == "" {
				leader = *g.LeaderID
			}
			return *g.LeaderID == leader
		}, 30*time.Second, 100*time.Millisecond, "pod %s never saw one ring of three with one leader", p.Name)
	}

	// Inside pod 1, 127.0.0.1 is pod 1.
	fromHost, err := getCensus("http://" + pods[1].IP.String() + ":9631/census")
	require.NoError(t, err)
	var inside census
	require.NoError(t, pods[1].Do(func() error {
		var err error
		inside, err = censusOn("127.0.0.1:9631")
		return err
	}))
	require.Equal(t, fromHost.LocalMemberID, inside.LocalMemberID)
	require.NoError(t, pods[0].Do(func() error {
		c, err := censusOn("127.0.0.1:9631")
		if err == nil && c.LocalMemberID == inside.LocalMemberID {
			return errors.New("pod 0's loopback reached pod 1")
		}
		return err
	}))

	// A stable name the pod's hosts do not list fails the start, as the real Supervisor's.
	lone, err := b.AddPod(t.Context(), addr(b, 20), hosts)
	require.NoError(t, err)
	cmd := lone.Command(t.Context(), bin, "run", "core/redis", "--peer=redis-9.redis.shop.svc.cluster.local")
	cmd.Env = append(os.Environ(), "HABRING_DOUBLE_SUP_ROOT="+t.TempDir())
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%s", out)
	require.Equal(t, 1, exit.ExitCode())
	require.Contains(t, string(out), "peer name does not resolve")
	require.NoError(t, b.RemovePod(t.Context(), lone))
	_, err = os.Stat(filepath.Join("/var/run/netns", lone.Name))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// What a killed test binary left behind is removed by the next run's Sweep.
func TestSweepRemovesWhatDeadProcessesLeft(t *testing.T) {
	if err := Supported(); err != nil {
		t.Skip(err)
	}
	// A pid that no process has: the largest the kernel hands out, plus one.
	dead := 4194304 + 1 + rand.IntN(1000)
	ns := fmt.Sprintf("%s%d-1", prefix, dead)
	br := fmt.Sprintf("%sb%d", prefix, dead)
	require.NoError(t, ip(t.Context(), "netns", "add", ns))
	require.NoError(t, ip(t.Context(), "link", "add", br, "type", "bridge"))
	t.Cleanup(func() {
		_ = ip(context.WithoutCancel(t.Context()), "netns", "del", ns)
		_ = ip(context.WithoutCancel(t.Context()), "link", "del", br)
	})
	removed, err := Sweep(t.Context())
	require.NoError(t, err)
	require.Contains(t, removed, ns)
	require.Contains(t, removed, br)
	_, err = os.Stat(filepath.Join("/var/run/netns", ns))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestBridgeRefusesANetworkThatExists(t *testing.T) {
	if err := Supported(); err != nil {
		t.Skip(err)
	}
	for _, p := range []string{"127.0.0.0/24", "127.1.2.0/24"} { // lo's local route is 127.0.0.0/8
		b, err := NewBridge(t.Context(), netip.MustParsePrefix(p))
		if err == nil {
			_ = b.Close(t.Context())
		}
		require.ErrorContains(t, err, "overlaps this machine's route", p)
	}
}
