package webhook

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/habring/habring/test/pki"
)

// tlsServer is the webhook's real TLS server (NewServer) over the fixture's router.
type tlsServer struct {
	addr   string
	pool   *x509.CertPool
	server *http.Server
}

func hardeningConfig() Config {
	cfg := Defaults()
	cfg.RequestTimeout = time.Second // ReadTimeout 2s, ReadHeaderTimeout 2s, WriteTimeout 3s
	return cfg
}

// serveTLS starts NewServer(cfg) on loopback with a certificate from a test CA.
func serveTLS(t testing.TB, cfg Config, h http.Handler) *tlsServer {
	t.Helper()
	ca, err := pki.NewCA("hardening-ca", time.Hour)
	require.NoError(t, err)
	crt, key, err := ca.Issue([]string{"127.0.0.1"}, time.Now().Add(-time.Minute), time.Hour)
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(crt, key)
	require.NoError(t, err)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv, ln := NewServer(cfg, raw, func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil }, h, slog.New(slog.DiscardHandler))
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &tlsServer{addr: raw.Addr().String(), pool: pool, server: srv}
}

func (s *tlsServer) dialTLS(t testing.TB, protos ...string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: s.pool, ServerName: "127.0.0.1", NextProtos: protos, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// untilClosed reads from c until the server closes it and returns how long that took
// (bounded by limit: a connection still open then fails the test).
func untilClosed(t *testing.T, c net.Conn, limit time.Duration) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	require.NoError(t, c.SetReadDeadline(start.Add(limit)))
	got, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %s", limit)
	}
	return time.Since(start), string(got)
}

func TestSlowClientsAreCutOff(t *testing.T) {
	t.Parallel()
	cfg := hardeningConfig()
	f := newFixture(t, nil)
	s := serveTLS(t, cfg, f.router)
	read := cfg.RequestTimeout + time.Second

	t.Run("slow body: closed once the whole request took longer than ReadTimeout", func(t *testing.T) {
		t.Parallel()
		c := s.dialTLS(t)
		_, err := io.WriteString(c, "POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
		require.NoError(t, err)
		start := time.Now()
		go func() { // one byte every 200 ms, as the issue's attack does every 5 s
			for range 100 {
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
		_, body := untilClosed(t, c, 4*read)
		took := time.Since(start) // since the headers went out; ReadTimeout started a moment before
		t.Logf("slow body closed after %s (ReadTimeout %s); the server said %q", took.Round(10*time.Millisecond), read, firstLine(body))
		require.Less(t, took, read+time.Second)
	})
	t.Run("slow headers: closed after ReadHeaderTimeout", func(t *testing.T) {
		t.Parallel()
		c := s.dialTLS(t)
		_, err := io.WriteString(c, "POST /mutate HTTP/1.1\r\n")
		require.NoError(t, err)
		go func() {
			for i := range 100 {
				if _, err := fmt.Fprintf(c, "X-Slow-%d: y\r\n", i); err != nil {
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
		took, _ := untilClosed(t, c, 4*read)
		t.Logf("slow headers closed after %s (ReadHeaderTimeout %s)", took.Round(10*time.Millisecond), min(5*time.Second, read))
		require.Less(t, took, min(5*time.Second, read)+time.Second)
	})
	t.Run("no TLS handshake: closed after the handshake bound", func(t *testing.T) {
		t.Parallel()
		c, err := net.Dial("tcp", s.addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		took, _ := untilClosed(t, c, 4*read)
		t.Logf("silent TCP connection closed after %s", took.Round(10*time.Millisecond))
		require.Less(t, took, min(5*time.Second, read)+time.Second)
	})
	t.Run("oversized headers: 431", func(t *testing.T) {
		t.Parallel()
		c := s.dialTLS(t)
		_, err := fmt.Fprintf(c, "POST /mutate HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", MaxHeaderBytes+8192))
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	})
	t.Run("idle keep-alive: kept well past a request, the API server's pool needs it", func(t *testing.T) {
		t.Parallel()
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.pool, MinVersion: tls.VersionTLS12}}}
		body := reviewBody(t, admissionv1.Create, stsPod("plain", 0), nil)
		for range 2 {
			resp, err := client.Post("https://"+s.addr+"/mutate", "application/json", bytes.NewReader(body))
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			time.Sleep(read + time.Second) // longer than every read/write bound, shorter than IdleTimeout
		}
	})
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

func TestHTTP2IsOffByDefault(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	off := serveTLS(t, hardeningConfig(), f.router)
	require.Equal(t, "http/1.1", off.dialTLS(t, "h2", "http/1.1").ConnectionState().NegotiatedProtocol)

	cfg := hardeningConfig()
	cfg.EnableHTTP2 = true
	on := serveTLS(t, cfg, f.router)
	require.Equal(t, "h2", on.dialTLS(t, "h2", "http/1.1").ConnectionState().NegotiatedProtocol)
	client := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: on.pool, MinVersion: tls.VersionTLS12}}}
	resp, err := client.Post("https://"+on.addr+"/mutate", "application/json", bytes.NewReader(reviewBody(t, admissionv1.Create, stsPod("plain", 0), nil)))
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, 2, resp.ProtoMajor)
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// The flood runs against a server in its own process (this test binary, re-run as
// TestHelperFloodServer), so its resident memory is the server's alone.

const helperEnv = "HABRING_FLOOD_SERVER_DIR"

func TestHelperFloodServer(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("run by TestFlood in a process of its own")
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	require.NoError(t, err)
	cfg := hardeningConfig()
	cfg.MaxConnections, err = strconv.Atoi(os.Getenv("HABRING_FLOOD_MAX_CONNECTIONS"))
	require.NoError(t, err)
	f := newFixture(t, []runtime.Object{ringSTS("db", 3)})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv, ln := NewServer(cfg, raw, func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil }, f.router, slog.New(slog.DiscardHandler))
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("listening %s\n", raw.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
}

type floodServer struct {
	*tlsServer
	pid int
}

func startFloodServer(t *testing.T, maxConns int) *floodServer {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("flood-ca", time.Hour)
	require.NoError(t, err)
	crt, key, err := ca.Issue([]string{"127.0.0.1"}, time.Now().Add(-time.Minute), time.Hour)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.crt"), crt, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.key"), key, 0o600))
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperFloodServer$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir, "HABRING_FLOOD_MAX_CONNECTIONS="+strconv.Itoa(maxConns))
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	var addr string
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
			addr = a
			break
		}
	}
	require.NotEmpty(t, addr, "the flood server did not start")
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &floodServer{tlsServer: &tlsServer{addr: addr, pool: pool}, pid: cmd.Process.Pid}
}

func (s *floodServer) rssMiB(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	require.NoError(t, err)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			require.NoError(t, err)
			return float64(kb) / 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestFlood opens thousands of connections that never send a request (half of them also
// finish the TLS handshake and send half a header) against the real server in its own
// process, with the default cap and with the cap out of the way, and shows that with the
// cap the server's memory stays bounded while real AdmissionReviews and /readyz are
// answered throughout.
func TestFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	const raw, slow = 3000, 1000
	for _, tc := range []struct {
		name string
		max  int
	}{{"cap 1000 (default)", Defaults().MaxConnections}, {"no effective cap", 100000}} {
		t.Run(tc.name, func(t *testing.T) {
			s := startFloodServer(t, tc.max)
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
				TLSClientConfig: &tls.Config{RootCAs: s.pool, MinVersion: tls.VersionTLS12}}}
			review := reviewBody(t, admissionv1.Create, stsPod("db", 1), nil)
			answer := func() (time.Duration, int, int) {
				start := time.Now()
				resp, err := client.Post("https://"+s.addr+"/mutate", "application/json", bytes.NewReader(review))
				require.NoError(t, err)
				_ = resp.Body.Close()
				ready, err := client.Get("https://" + s.addr + "/readyz")
				require.NoError(t, err)
				_ = ready.Body.Close()
				return time.Since(start), resp.StatusCode, ready.StatusCode
			}
			_, code, _ := answer()
			require.Equal(t, http.StatusOK, code)
			before := s.rssMiB(t)
			var conns []net.Conn
			t.Cleanup(func() {
				for _, c := range conns {
					_ = c.Close()
				}
			})
			for range raw {
				c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
				require.NoError(t, err)
				conns = append(conns, c)
			}
			for range slow {
				c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
				require.NoError(t, err)
				conns = append(conns, c)
				tc := tls.Client(c, &tls.Config{RootCAs: s.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
				go func() { // handshake and half a header, then nothing
					if tc.Handshake() == nil {
						_, _ = io.WriteString(tc, "POST /mutate HTTP/1.1\r\nHost: x\r\n")
					}
				}()
			}
			took, code, ready := answer()
			during := s.rssMiB(t)
			t.Logf("%s: %d idle + %d half-sent connections: server RSS %.1f -> %.1f MiB; a review answered %d and /readyz %d in %s",
				tc.name, raw, slow, before, during, code, ready, took.Round(time.Millisecond))
			require.Equal(t, http.StatusOK, code)
			require.Equal(t, http.StatusOK, ready)
			if tc.max < raw+slow && !raceEnabled {
				require.Less(t, during-before, 64.0, "memory grew with the flood despite the cap")
			}
		})
	}
}
