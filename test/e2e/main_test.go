package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/certs"
	"github.com/habring/habring/test/cluster"
)

// env is the shared end-to-end environment; nil when HABRING_E2E is unset.
var env *environment

type environment struct {
	cluster *cluster.Cluster
	client  kubernetes.Interface
	dir     string
	binary  string
	webhook *webhookProcess
}

func TestMain(m *testing.M) {
	if os.Getenv("HABRING_E2E") == "" {
		fmt.Println("e2e: skipped; run with HABRING_E2E=1 (make e2e) to start a local control plane")
		os.Exit(m.Run())
	}
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "habring-e2e-")
	if err != nil {
		return 0, err
	}
	c, err := cluster.Start(ctx, cluster.Options{Dir: filepath.Join(dir, "cluster"), ControllerQPS: 200})
	if err != nil {
		return 0, fmt.Errorf("start the local cluster: %w (state and logs in %s)", err, dir)
	}
	defer c.Stop()
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return 0, err
	}
	env = &environment{cluster: c, client: client, dir: dir, binary: filepath.Join(dir, "habring")}
	fmt.Println("e2e: building habring")
	build := exec.Command("go", "build", "-o", env.binary, "./cmd/habring")
	build.Dir = repoRoot()
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return 0, fmt.Errorf("build habring: %w", err)
	}
	env.webhook, err = startWebhook(ctx, env)
	if err != nil {
		return 0, err
	}
	defer env.webhook.stop()
	if err := installWebhookConfiguration(ctx, env); err != nil {
		return 0, err
	}
	code := m.Run()
	if code == 0 {
		_ = os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: failed; cluster and webhook logs kept in %s\n", dir)
	}
	return code, nil
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// webhookProcess is `habring webhook` running on the host, as it would in its pod.
type webhookProcess struct {
	cmd     *exec.Cmd
	done    chan struct{}
	addr    string
	ca      *certs.CA
	certDir string
	log     string
	args    []string
	binary  string
}

func startWebhook(ctx context.Context, e *environment) (*webhookProcess, error) {
	ca, err := certs.NewCA("habring-e2e-webhook-ca", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	w := &webhookProcess{ca: ca, certDir: filepath.Join(e.dir, "webhook-tls"), log: filepath.Join(e.dir, "webhook.log"), binary: e.binary}
	if err := os.MkdirAll(w.certDir, 0o755); err != nil {
		return nil, err
	}
	if err := w.rotate(); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	w.addr = l.Addr().String()
	l.Close()
	w.args = []string{"webhook", "--listen=" + w.addr, "--kubeconfig=" + e.cluster.Kubeconfig,
		"--tls-cert-file=" + filepath.Join(w.certDir, "tls.crt"), "--tls-key-file=" + filepath.Join(w.certDir, "tls.key"),
		"--labeler-image=habring:e2e", "--shutdown-delay=0s", "--log-level=debug"}
	return w, w.start(ctx)
}

// rotate issues a new serving certificate and swaps it in as kubelet updates a Secret volume.
func (w *webhookProcess) rotate() error {
	crt, key, err := w.ca.Issue([]string{"127.0.0.1"}, time.Now().Add(-time.Minute), time.Hour)
	if err != nil {
		return err
	}
	return certs.WriteAtomic(w.certDir, map[string][]byte{"tls.crt": crt, "tls.key": key})
}

func (w *webhookProcess) client() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(w.ca.Cert)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// metrics returns the webhook's /metrics.
func (w *webhookProcess) metrics() ([]byte, error) {
	resp, err := w.client().Get("https://" + w.addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func (w *webhookProcess) start(ctx context.Context) error {
	log, err := os.OpenFile(w.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	w.cmd = exec.Command(w.binary, w.args...)
	w.cmd.Stdout, w.cmd.Stderr = log, log
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := w.cmd.Start(); err != nil {
		return err
	}
	w.done = make(chan struct{})
	go func() { _ = w.cmd.Wait(); log.Close(); close(w.done) }()
	hc := w.client()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-w.done:
			return fmt.Errorf("habring webhook exited; see %s", w.log)
		default:
		}
		resp, err := hc.Get("https://" + w.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("habring webhook not ready after 30s; see %s", w.log)
}

// stop sends SIGTERM and waits: the graceful shutdown a pod gets.
func (w *webhookProcess) stop() {
	if w.cmd == nil || w.cmd.Process == nil {
		return
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.done
	}
}

func (w *webhookProcess) exitCode() int {
	if w.cmd.ProcessState == nil {
		return -1
	}
	return w.cmd.ProcessState.ExitCode()
}

// installWebhookConfiguration applies deploy/mutatingwebhook.yaml as it is, but for the
// clientConfig, which points at the host process instead of the in-cluster Service.
func installWebhookConfiguration(ctx context.Context, e *environment) error {
	data, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "mutatingwebhook.yaml"))
	if err != nil {
		return err
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(data, nil, nil)
	if err != nil {
		return fmt.Errorf("deploy/mutatingwebhook.yaml: %w", err)
	}
	cfg := obj.(*admissionregistrationv1.MutatingWebhookConfiguration)
	for i := range cfg.Webhooks {
		cfg.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{
			URL: ptr.To("https://" + e.webhook.addr + "/mutate"), CABundle: e.webhook.ca.PEM}
	}
	delete(cfg.Annotations, "cert-manager.io/inject-ca-from")
	_, err = e.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("install the webhook configuration: %w", err)
	}
	// The API server picks configurations up from an informer; give it a moment.
	time.Sleep(2 * time.Second)
	return nil
}

func requireEnv(t *testing.T) *environment {
	t.Helper()
	if env == nil {
		t.Skip("set HABRING_E2E=1 (make e2e)")
	}
	return env
}

var nsCounter int

func itoa(i int) string { return strconv.Itoa(i) }
