package connlimit

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// serve runs an http.Server on loopback behind a Listener of max connections; the handler
// blocks until release is closed when the path is /block.
func serve(t *testing.T, max int, release chan struct{}) (*Listener, string) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := New(raw, max)
	srv := &http.Server{ReadHeaderTimeout: time.Minute, ConnState: l.ConnState, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l, raw.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedByServer reports whether the server closed c: a read ends in EOF or a reset
// rather than the read deadline.
func closedByServer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	timedOut := errors.As(err, &ne) && ne.Timeout()
	return err != nil && !timedOut
}

func get(c net.Conn, path string) (string, error) {
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.Status + " " + string(b), err
}

func waitOpen(t *testing.T, l *Listener, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return l.Stats().Open == n }, 5*time.Second, time.Millisecond, "open: %+v", l.Stats())
}

func TestShedsTheOldestUnusedConnection(t *testing.T) {
	t.Parallel()
	l, addr := serve(t, 2, nil)
	first := dial(t, addr)
	waitOpen(t, l, 1)
	second := dial(t, addr)
	waitOpen(t, l, 2)
	third := dial(t, addr)
	require.True(t, closedByServer(first), "the oldest idle connection was kept")
	got, err := get(third, "/")
	require.NoError(t, err)
	require.Equal(t, "200 OK ok", got)
	got, err = get(second, "/")
	require.NoError(t, err, "a younger idle connection was shed")
	require.Equal(t, "200 OK ok", got)
	require.Equal(t, Stats{Open: 2, Max: 2, Shed: 1}, l.Stats())
}

func TestNeverUsedIsShedBeforeKeepAliveIdle(t *testing.T) {
	t.Parallel()
	l, addr := serve(t, 2, nil)
	used := dial(t, addr)
	_, err := get(used, "/") // now idle between keep-alive requests: older, but kept
	require.NoError(t, err)
	fresh := dial(t, addr)
	waitOpen(t, l, 2)
	_ = dial(t, addr)
	require.True(t, closedByServer(fresh), "the oldest waiting connection is the one that never sent a request")
	got, err := get(used, "/")
	require.NoError(t, err)
	require.Equal(t, "200 OK ok", got)
}

func TestRequestsInFlightAreNeverCut(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	l, addr := serve(t, 2, release)
	results := make(chan string, 2)
	for range 2 {
		c := dial(t, addr)
		go func() {
			got, err := get(c, "/block")
			if err != nil {
				got = err.Error()
			}
			results <- got
		}()
	}
	require.Eventually(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.conns) == 2 && l.fresh.Len()+l.idle.Len() == 0
	}, 5*time.Second, time.Millisecond)
	late := dial(t, addr)
	require.True(t, closedByServer(late), "a connection beyond the cap was held while every slot served a request")
	close(release)
	require.Equal(t, "200 OK ok", <-results)
	require.Equal(t, "200 OK ok", <-results)
	require.Equal(t, int64(1), l.Stats().Rejected)
	require.Zero(t, l.Stats().Shed)
}
