package supervisor

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// freePort is a TCP port nothing listens on just now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// resp is a raw client connection: established once, never redialled, as a client's
// connection through a Service stays on the pod it first reached.
type resp struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialRESP(t *testing.T, port int, password string) *resp {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	c := &resp{conn: conn, r: bufio.NewReader(conn)}
	reply, err := c.do("AUTH", password)
	require.NoError(t, err)
	require.Equal(t, "+OK", reply)
	return c
}

// do sends a command and returns the first line of the reply.
func (c *resp) do(args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	_ = c.conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	return strings.TrimSpace(line), err
}

// The example plan's guard (hooks/run): a master with fewer good replicas than
// min-replicas-to-write (1 in default.toml) refuses writes, and its established client
// connections are closed so they dial redis-master again; with a replica, they stay.
func TestExamplePlanDisconnectsClientsOfAMasterWithoutReplicas(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed: run `make redis-server` (Debian's redis-server package)")
	}
	t.Parallel()
	port, replicaPort := freePort(t), freePort(t)
	v := testService(t, "../../examples/redis", fmt.Sprintf("port = %d\nbind = \"127.0.0.1\"\nrequirepass = \"pw\"\nmasterauth = \"pw\"\n", port))
	v.tick(v.renderContext(Options{Service: "redis", Group: "default"}, self("a"), group(ElectionFinished, "a")), "leader", ElectionFinished)
	var c *resp
	require.Eventually(t, func() bool {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			_ = conn.Close()
		}
		return err == nil
	}, 10*time.Second, 50*time.Millisecond, "redis-server never listened")
	c = dialRESP(t, port, "pw")
	reply, err := c.do("SET", "k", "v")
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(reply, "-NOREPLICAS"), "a master without replicas took a write: %s", reply)
	require.Eventually(t, func() bool { _, err := c.do("PING"); return err != nil }, 5*time.Second, 100*time.Millisecond,
		"the client of a master without replicas was never disconnected")

	replica := exec.Command("redis-server", "--port", fmt.Sprint(replicaPort), "--bind", "127.0.0.1", "--save", "",
		"--replicaof", "127.0.0.1", fmt.Sprint(port), "--masterauth", "pw", "--requirepass", "pw", "--dir", t.TempDir())
	require.NoError(t, replica.Start())
	t.Cleanup(func() { _ = replica.Process.Kill(); _ = replica.Wait() })
	require.Eventually(t, func() bool {
		c = dialRESP(t, port, "pw")
		reply, err := c.do("SET", "k", "v")
		return err == nil && reply == "+OK"
	}, 15*time.Second, 200*time.Millisecond, "the master never took a write with its replica")
	time.Sleep(3 * time.Second) // three rounds of the guard
	reply, err = c.do("PING")
	require.NoError(t, err, "a client of a master with its replica was disconnected")
	assert.Equal(t, "+PONG", reply)

	require.NoError(t, replica.Process.Kill())
	require.Eventually(t, func() bool { _, err := c.do("PING"); return err != nil }, 15*time.Second, 100*time.Millisecond,
		"the client was never disconnected once the replica was gone")
}

// redis-server is the run hook's own process (exec'd, the guard its child): the process
// the Supervisor starts with the parent-death signal, so a SIGKILLed Supervisor takes its
// Redis along, as a container's SIGKILL takes all of its processes. (Behind a shell, an
// orphaned redis-server kept serving as master after its Supervisor was killed.)
func TestExamplePlanRunsRedisAsTheHooksProcess(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed: run `make redis-server` (Debian's redis-server package)")
	}
	t.Parallel()
	port := freePort(t)
	v := testService(t, "../../examples/redis", fmt.Sprintf("port = %d\nbind = \"127.0.0.1\"\nrequirepass = \"pw\"\n", port))
	v.tick(v.renderContext(Options{Service: "redis", Group: "default"}, self("a"), group(ElectionFinished, "a")), "leader", ElectionFinished)
	require.Eventually(t, func() bool {
		pid := v.Status().Process.PID
		if pid == nil {
			return false
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", *pid))
		return err == nil && strings.TrimSpace(string(b)) == "redis-server"
	}, 10*time.Second, 50*time.Millisecond, "the run hook's process never became redis-server")
}
