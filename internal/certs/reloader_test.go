package certs

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/habring/habring/test/pki"
)

func issue(t *testing.T, ca *pki.CA) (cert, key []byte) {
	t.Helper()
	cert, key, err := ca.Issue([]string{"127.0.0.1", "habring.habring-system.svc"}, time.Now().Add(-time.Minute), time.Hour)
	require.NoError(t, err)
	return cert, key
}

// newTestReloader writes a first pair the way kubelet does and loads it.
func newTestReloader(t *testing.T) (*Reloader, *pki.CA, string) {
	t.Helper()
	ca, err := pki.NewCA("test-ca", time.Hour)
	require.NoError(t, err)
	dir := t.TempDir()
	c, k := issue(t, ca)
	require.NoError(t, pki.WriteAtomic(dir, map[string][]byte{"tls.crt": c, "tls.key": k}))
	r, err := NewReloader(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return r, ca, dir
}

func TestReloaderRotatesUnderLoad(t *testing.T) {
	t.Parallel()
	r, ca, dir := newTestReloader(t)
	r.Poll = time.Hour // prove the watch does it, not the backstop
	go func() { _ = r.Run(t.Context()) }()

	// Not httptest.StartTLS: it adds a certificate of its own, which crypto/tls prefers
	// over GetCertificate when the client sends no server name (an IP URL).
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: r.GetCertificate, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "https://" + ln.Addr().String()

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	var failures, requests atomic.Int64
	served := sync.Map{} // serial numbers seen by clients
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// A new connection each time, so every request does a handshake.
				client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}}
				resp, err := client.Get(url)
				requests.Add(1)
				if err != nil {
					failures.Add(1)
					continue
				}
				served.Store(resp.TLS.PeerCertificates[0].SerialNumber.String(), true)
				_ = resp.Body.Close()
			}
		})
	}
	serials := []string{r.Leaf().SerialNumber.String()}
	for range 5 {
		time.Sleep(50 * time.Millisecond)
		c, k := issue(t, ca)
		require.NoError(t, pki.WriteAtomic(dir, map[string][]byte{"tls.crt": c, "tls.key": k}))
		require.Eventually(t, func() bool { return r.Leaf().SerialNumber.String() != serials[len(serials)-1] }, 5*time.Second, 10*time.Millisecond)
		serials = append(serials, r.Leaf().SerialNumber.String())
		require.Eventually(t, func() bool { _, ok := served.Load(serials[len(serials)-1]); return ok }, 5*time.Second, 10*time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests across 5 rotations", requests.Load())
	require.Zero(t, failures.Load(), "requests failed during rotation")
}

func TestReloaderKeepsLastGoodPair(t *testing.T) {
	t.Parallel()
	r, ca, dir := newTestReloader(t)
	good := r.Leaf()

	// A new certificate beside another pair's key (a rotation written half-way) does not load.
	c2, _ := issue(t, ca)
	_, otherKey := issue(t, ca)
	require.NoError(t, pki.WriteAtomic(dir, map[string][]byte{"tls.crt": c2, "tls.key": otherKey}))
	r.reload()
	require.True(t, good.Equal(r.Leaf()))
	// Garbage does not either.
	require.NoError(t, pki.WriteAtomic(dir, map[string][]byte{"tls.crt": []byte("nope"), "tls.key": []byte("nope")}))
	r.reload()
	require.True(t, good.Equal(r.Leaf()))
}

func TestNewReloaderErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := NewReloader(filepath.Join(dir, "missing.crt"), filepath.Join(dir, "missing.key"), slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "missing.crt")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad.crt"), []byte("x"), 0o600))
	_, err = NewReloader(filepath.Join(dir, "bad.crt"), filepath.Join(dir, "bad.crt"), slog.New(slog.DiscardHandler))
	require.Error(t, err)

	var empty Reloader
	_, err = empty.GetCertificate(nil)
	require.ErrorIs(t, err, ErrNoCertificate)
}
