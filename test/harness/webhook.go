package harness

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
	"strings"
	"syscall"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/test/pki"
)

// RepoRoot is the habring checkout this package is in.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// LabelerImage is the labeler image the harness's webhook injects; LabelerImageRepo is its
// repository (what test/runner matches to run habring).
const (
	LabelerImage     = LabelerImageRepo + ":local"
	LabelerImageRepo = "habring"
)

// Webhook is `habring webhook` running on the host, as it would in its pod.
type Webhook struct {
	// Addr is the listen address (127.0.0.1:port).
	Addr string
	// CA signs the serving certificate (the webhook configuration's caBundle).
	CA *pki.CA
	// Log is the file the process writes to.
	Log string

	cmd     *exec.Cmd
	done    chan struct{}
	certDir string
	args    []string
	binary  string
}

// The local webhook's certificates live as long as cert-manager's would: its default
// Certificate duration for the serving certificate (90 days), so `habring check`, which
// fails under 7 days left, passes on the demo; the CA outlives it.
const (
	caValidity      = 365 * 24 * time.Hour
	servingValidity = 90 * 24 * time.Hour
)

// StartWebhook runs binary as `habring webhook` against kubeconfig, with a serving
// certificate from a new CA written under dir, and returns once /readyz answers.
func StartWebhook(ctx context.Context, dir, binary, kubeconfig string, extraArgs ...string) (*Webhook, error) {
	ca, err := pki.NewCA("habring-local-webhook-ca", caValidity)
	if err != nil {
		return nil, err
	}
	w := &Webhook{CA: ca, certDir: filepath.Join(dir, "webhook-tls"), Log: filepath.Join(dir, "webhook.log"), binary: binary}
	if err := os.MkdirAll(w.certDir, 0o755); err != nil {
		return nil, err
	}
	if err := w.Rotate(); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	w.Addr = l.Addr().String()
	_ = l.Close()
	w.args = []string{"webhook", "--listen=" + w.Addr, "--kubeconfig=" + kubeconfig,
		"--tls-cert-file=" + filepath.Join(w.certDir, "tls.crt"), "--tls-key-file=" + filepath.Join(w.certDir, "tls.key"),
		"--labeler-image=" + LabelerImage, "--shutdown-delay=0s"}
	w.args = append(w.args, extraArgs...)
	return w, w.Start(ctx)
}

// Rotate issues a new serving certificate and swaps it in as kubelet updates a Secret volume.
func (w *Webhook) Rotate() error { return w.RotateValid(servingValidity) }

// RotateValid is Rotate with a certificate valid for validity from now.
func (w *Webhook) RotateValid(validity time.Duration) error {
	crt, key, err := w.CA.Issue([]string{"127.0.0.1"}, time.Now().Add(-time.Minute), validity)
	if err != nil {
		return err
	}
	return pki.WriteAtomic(w.certDir, map[string][]byte{"tls.crt": crt, "tls.key": key})
}

// Client trusts the webhook's CA.
func (w *Webhook) Client() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(w.CA.Cert)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// Metrics returns the webhook's /metrics.
func (w *Webhook) Metrics() ([]byte, error) {
	resp, err := w.Client().Get("https://" + w.Addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	return io.ReadAll(resp.Body)
}

// Start (re)starts the process and waits for /readyz.
func (w *Webhook) Start(ctx context.Context) error {
	log, err := os.OpenFile(w.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
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
	go func() { _ = w.cmd.Wait(); _ = log.Close(); close(w.done) }()
	hc := w.Client()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-w.done:
			return fmt.Errorf("habring webhook exited; see %s", w.Log)
		default:
		}
		resp, err := hc.Get("https://" + w.Addr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("habring webhook not ready after 30s; see %s", w.Log)
}

// Stop sends SIGTERM and waits: the graceful shutdown a pod gets.
func (w *Webhook) Stop() {
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

// Pid is the running process's id.
func (w *Webhook) Pid() int { return w.cmd.Process.Pid }

// ExitCode is the last exit code, -1 while running.
func (w *Webhook) ExitCode() int {
	if w.cmd.ProcessState == nil {
		return -1
	}
	return w.cmd.ProcessState.ExitCode()
}

// InstallWebhookConfiguration applies deploy/mutatingwebhook.yaml as it is, but for the
// clientConfig, which points at the host process instead of the in-cluster Service.
func InstallWebhookConfiguration(ctx context.Context, client kubernetes.Interface, w *Webhook) error {
	data, err := os.ReadFile(filepath.Join(RepoRoot(), "deploy", "mutatingwebhook.yaml"))
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
			URL: ptr.To("https://" + w.Addr + "/mutate"), CABundle: w.CA.PEM}
	}
	delete(cfg.Annotations, "cert-manager.io/inject-ca-from")
	_, err = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("install the webhook configuration: %w", err)
	}
	// The API server picks configurations up from an informer; give it a moment.
	time.Sleep(2 * time.Second)
	return nil
}

// BuildHabring builds cmd/habring into dst and cmd/habring-labeler beside it
// (LabelerBinary(dst)), as the image holds them: static and stripped (tools/image's
// flags), so that what the tests measure is what a cluster runs.
func BuildHabring(ctx context.Context, dst string) error {
	for pkg, out := range map[string]string{"./cmd/habring": dst, "./cmd/habring-labeler": LabelerBinary(dst)} {
		build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o", out, pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Dir = RepoRoot()
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build %s: %w", pkg, err)
		}
	}
	return nil
}

// LabelerBinary is where BuildHabring puts habring-labeler for the habring at habring.
func LabelerBinary(habring string) string {
	return filepath.Join(filepath.Dir(habring), "habring-labeler")
}

// RSS is the resident memory of process pid, from /proc.
func RSS(pid int) (int64, error) {
	m, err := ReadMemory(pid)
	return m.RSS, err
}

// Memory is a process's resident memory, in bytes: all of it, and its anonymous (heap,
// stacks) and file-backed (the binary's pages, shared with every process mapping the
// same file) parts.
type Memory struct{ RSS, Anon, File int64 }

func (m Memory) String() string {
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	return fmt.Sprintf("%.1f MiB (%.1f MiB anonymous, %.1f MiB file-backed)", mib(m.RSS), mib(m.Anon), mib(m.File))
}

// ReadMemory reads process pid's Memory from /proc/<pid>/status.
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	fields := map[string]*int64{"VmRSS": &m.RSS, "RssAnon": &m.Anon, "RssFile": &m.File}
	for _, line := range strings.Split(string(b), "\n") {
		name, value, _ := strings.Cut(line, ":")
		dst := fields[name]
		if dst == nil {
			continue
		}
		var kb int64
		if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(value), "kB"), &kb); err != nil {
			return Memory{}, fmt.Errorf("%s of pid %d: %w", name, pid, err)
		}
		*dst = kb << 10
	}
	if m.RSS == 0 {
		return Memory{}, fmt.Errorf("no VmRSS for pid %d", pid)
	}
	return m, nil
}
