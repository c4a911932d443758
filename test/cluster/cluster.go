package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/habring/habring/test/pki"
)

// Versions of what is built. Kubernetes' own go.mod pins everything else.
const (
	KubernetesVersion = "v1.37.2"
	KwokVersion       = "v0.8.0"
)

// Options configure Build and Start.
type Options struct {
	// Dir holds the cluster's state: etcd data, keys, logs, kubeconfig (required).
	Dir string
	// BinDir holds the built binaries (default: BinDir()).
	BinDir string
	// Progress receives what is being done, a line at a time (default os.Stderr).
	Progress io.Writer
	// ControllerQPS is kube-controller-manager's --kube-api-qps (default 20, the upstream
	// default, which caps pod creation at about 20/s); burst is twice it.
	ControllerQPS int
	// APIServerAddresses are extra addresses the API server's certificate is valid for:
	// a pod network's gateway, where pods reach the API server through a proxy.
	APIServerAddresses []string
}

// Cluster is a running local control plane.
type Cluster struct {
	// Kubeconfig is the path of an admin kubeconfig (system:masters, by token).
	Kubeconfig string
	// Config is the same, for client-go.
	Config *rest.Config
	// CA signs the API server's certificate; Issue from it for anything else.
	CA *pki.CA

	dir   string
	out   io.Writer
	mu    sync.Mutex
	procs []*proc
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// BinDir is where Build puts the binaries by default: the user cache directory, so a
// second run (or CI's second job) relinks nothing.
func BinDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "habring", "cluster-"+KubernetesVersion)
}

func (o *Options) defaults() {
	if o.BinDir == "" {
		o.BinDir = BinDir()
	}
	if o.Progress == nil {
		o.Progress = os.Stderr
	}
	if o.ControllerQPS == 0 {
		o.ControllerQPS = 20
	}
}

func componentsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "components")
}

// Build compiles the control plane and installs kwok into BinDir. The first build on a
// fresh 2-core machine takes about 15 minutes (kube-apiserver alone about 9); after that
// Go's build cache makes it seconds.
func Build(ctx context.Context, o Options) error {
	o.defaults()
	if err := os.MkdirAll(o.BinDir, 0o755); err != nil {
		return err
	}
	// Stamp the version, as upstream's build does: the API server reports it, and
	// habring's --sidecar-mode=auto reads it.
	major, minor, _ := strings.Cut(strings.TrimPrefix(KubernetesVersion, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	ldflags := fmt.Sprintf("-X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=%s -X k8s.io/component-base/version.gitMinor=%s -X k8s.io/component-base/version.gitTreeState=clean",
		KubernetesVersion, major, minor)
	for _, c := range []string{"etcd", "kube-scheduler", "kube-controller-manager", "kube-apiserver"} {
		fmt.Fprintf(o.Progress, "cluster: building %s (the first build takes minutes; later ones are cached)\n", c)
		start := time.Now()
		cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", ldflags, "-o", filepath.Join(o.BinDir, c), "./"+c)
		cmd.Dir = componentsDir()
		cmd.Stdout, cmd.Stderr = o.Progress, o.Progress
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s in %s: %w", c, cmd.Dir, err)
		}
		fmt.Fprintf(o.Progress, "cluster: built %s in %s\n", c, time.Since(start).Round(time.Second))
	}
	if _, err := os.Stat(filepath.Join(o.BinDir, "kwok")); err != nil {
		fmt.Fprintf(o.Progress, "cluster: installing kwok %s\n", KwokVersion)
		cmd := exec.CommandContext(ctx, "go", "install", "sigs.k8s.io/kwok/cmd/kwok@"+KwokVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+o.BinDir)
		cmd.Stdout, cmd.Stderr = o.Progress, o.Progress
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("install kwok: %w", err)
		}
	}
	return nil
}

// Start builds what is missing, then runs etcd, the API server, the controller manager,
// the scheduler and kwok with one fake node, and returns once the API server is ready and
// the node is Ready. Stop ends them all; so does ctx ending.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	o.defaults()
	if o.Dir == "" {
		return nil, errors.New("cluster: Options.Dir is required")
	}
	if err := Build(ctx, o); err != nil {
		return nil, err
	}
	c = &Cluster{dir: o.Dir, out: o.Progress}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	for _, d := range []string{"etcd", "pki", "logs"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	pki := filepath.Join(o.Dir, "pki")
	token, err := c.writePKI(pki, o.APIServerAddresses)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	if err := c.run(ctx, o.BinDir, "etcd", "--data-dir", filepath.Join(o.Dir, "etcd"),
		"--listen-client-url", etcdURL, "--listen-peer-url", "http://127.0.0.1:"+strconv.Itoa(ports[1])); err != nil {
		return nil, err
	}
	if err := c.waitFor(ctx, "etcd", 60*time.Second, func() error { return httpOK(http.DefaultClient, etcdURL+"/health", "") }); err != nil {
		return nil, err
	}

	apiURL := "https://127.0.0.1:" + strconv.Itoa(ports[2])
	if err := c.run(ctx, o.BinDir, "kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports[2]),
		"--endpoint-reconciler-type=none", // it refuses a loopback advertise address otherwise
		"--service-cluster-ip-range=10.96.0.0/16",
		"--tls-cert-file="+filepath.Join(pki, "apiserver.crt"), "--tls-private-key-file="+filepath.Join(pki, "apiserver.key"),
		"--client-ca-file="+filepath.Join(pki, "ca.crt"),
		"--service-account-key-file="+filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(pki, "sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--token-auth-file="+filepath.Join(pki, "tokens.csv"),
		"--authorization-mode=Node,RBAC",
		// A namespace's annotations can place its pods on a node and let them tolerate its
		// taint: that is how pods reach the runner's node (test/runner) and the rest stay on
		// kwok's.
		"--enable-admission-plugins=PodNodeSelector,PodTolerationRestriction",
		"--allow-privileged=true",
		// Webhooks and aggregated APIs behind a Service are called at an endpoint of it
		// (this cluster has no kube-proxy to route a ClusterIP): a webhook that runs as a
		// pod on the runner is reached at its pod IP on the bridge.
		"--enable-aggregator-routing=true",
		"--max-requests-inflight=1000", "--max-mutating-requests-inflight=500",
	); err != nil {
		return nil, err
	}
	c.CA, err = loadCA(pki)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.CA.Cert)
	api := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	if err := c.waitFor(ctx, "kube-apiserver", 3*time.Minute, func() error { return httpOK(api, apiURL+"/readyz", token) }); err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(o.Dir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, apiURL, token, c.CA.PEM); err != nil {
		return nil, err
	}
	c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	c.Config.QPS, c.Config.Burst = 200, 400

	qps := strconv.Itoa(o.ControllerQPS)
	burst := strconv.Itoa(2 * o.ControllerQPS)
	if err := c.run(ctx, o.BinDir, "kube-controller-manager", "--kubeconfig="+c.Kubeconfig,
		"--service-account-private-key-file="+filepath.Join(pki, "sa.key"), "--root-ca-file="+filepath.Join(pki, "ca.crt"),
		"--use-service-account-credentials", "--leader-elect=false", "--secure-port=0",
		"--kube-api-qps="+qps, "--kube-api-burst="+burst,
		"--concurrent-replicaset-syncs=10", "--concurrent-statefulset-syncs=10",
	); err != nil {
		return nil, err
	}
	if err := c.run(ctx, o.BinDir, "kube-scheduler", "--kubeconfig="+c.Kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--kube-api-qps="+qps, "--kube-api-burst="+burst); err != nil {
		return nil, err
	}
	stages, err := kwokStages(ctx)
	if err != nil {
		return nil, err
	}
	stageFile := filepath.Join(o.Dir, "kwok-stages.yaml")
	if err := os.WriteFile(stageFile, stages, 0o644); err != nil {
		return nil, err
	}
	if err := c.run(ctx, o.BinDir, "kwok", "--kubeconfig="+c.Kubeconfig, "--manage-single-node="+kwokNode,
		"--cidr=10.0.0.1/16", "--node-ip=127.0.0.1", "-c", stageFile, "--server-address=127.0.0.1:0"); err != nil {
		return nil, err
	}
	if err := c.addNode(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(c.out, "cluster: ready; export KUBECONFIG=%s\n", c.Kubeconfig)
	return c, nil
}

// Stop ends every process the cluster started (SIGTERM, then SIGKILL after 10s) and
// waits for them. It is safe to call more than once.
func (c *Cluster) Stop() {
	c.mu.Lock()
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- { // kwok first, etcd last
		p := procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	if len(procs) > 0 {
		fmt.Fprintln(c.out, "cluster: stopped")
	}
}

// Alive reports an error for the first component that exited.
func (c *Cluster) Alive() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %w (see %s)", p.name, p.err, c.LogFile(p.name))
		default:
		}
	}
	return nil
}

// LogFile is where a component's output goes.
func (c *Cluster) LogFile(name string) string { return filepath.Join(c.dir, "logs", name+".log") }

func (c *Cluster) run(ctx context.Context, binDir, name string, args ...string) error {
	log, err := os.Create(c.LogFile(name))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, and killed with the parent: a test interrupted by ^C or a
	// timeout must not leave an API server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(c.out, "cluster: starting %s (log: %s)\n", name, c.LogFile(name))
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = log.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
			c.Stop()
		case <-p.done:
		}
	}()
	return nil
}

func (c *Cluster) waitFor(ctx context.Context, what string, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	start := time.Now()
	var err error
	for time.Now().Before(deadline) {
		if err = c.Alive(); err != nil {
			return err
		}
		if err = check(); err == nil {
			fmt.Fprintf(c.out, "cluster: %s ready after %s\n", what, time.Since(start).Round(100*time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %s: %w (see %s)", what, timeout, err, c.LogFile(what))
}

func httpOK(client *http.Client, url, token string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// writePKI makes the cluster CA, the API server's certificate, the service-account key
// pair and an admin token, and returns the token.
func (c *Cluster) writePKI(dir string, extra []string) (string, error) {
	ca, err := pki.NewCA("habring-local-cluster-ca", 24*time.Hour)
	if err != nil {
		return "", err
	}
	crt, key, err := ca.Issue(append([]string{"127.0.0.1", "localhost", "kubernetes.default.svc"}, extra...), time.Now().Add(-time.Hour), 24*time.Hour)
	if err != nil {
		return "", err
	}
	caKey, err := x509.MarshalPKCS8PrivateKey(ca.Key())
	if err != nil {
		return "", err
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return "", err
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	token := fmt.Sprintf("%x", b)
	files := map[string][]byte{
		"ca.crt":        ca.PEM,
		"ca.key":        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: caKey}),
		"apiserver.crt": crt,
		"apiserver.key": key,
		"sa.key":        pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sa)}),
		"sa.pub":        pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
		"tokens.csv":    []byte(token + ",admin,admin-uid,system:masters\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return "", err
		}
	}
	return token, nil
}

func loadCA(dir string) (*pki.CA, error) {
	crt, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	key, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, err
	}
	return pki.LoadCA(crt, key)
}

func writeKubeconfig(path, server, token string, ca []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "admin"}
	cfg.CurrentContext = "local"
	return clientcmd.WriteToFile(*cfg, path)
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// kwokStages joins the stage definitions kwok ships in its module: nodes initialize and
// heartbeat, pods get an IP and turn Ready, deleted pods go away.
func kwokStages(ctx context.Context) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", "sigs.k8s.io/kwok@"+KwokVersion).Output()
	if err != nil {
		return nil, fmt.Errorf("locate kwok's module: %w", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil {
		return nil, err
	}
	var docs [][]byte
	for _, f := range []string{"node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
		"pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml"} {
		b, err := os.ReadFile(filepath.Join(mod.Dir, "kustomize", "stage", f))
		if err != nil {
			return nil, fmt.Errorf("kwok stage: %w", err)
		}
		docs = append(docs, b)
	}
	return bytes.Join(docs, []byte("\n---\n")), nil
}

// kwokNode is the fake node kwok plays the kubelet of; other nodes (test/runner's) are
// left to whoever registered them.
const kwokNode = "kwok-node-0"

// addNode registers the fake node kwok plays the kubelet of, and waits until it is Ready.
func (c *Cluster) addNode(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: kwokNode,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels:      map[string]string{"kubernetes.io/hostname": kwokNode, "kubernetes.io/os": "linux", "type": "kwok"}},
		Status: corev1.NodeStatus{Allocatable: resources(), Capacity: resources()},
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create node: %w", err)
	}
	return c.waitFor(ctx, "kwok", 2*time.Minute, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("node not Ready yet")
	})
}

func resources() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("1000"), corev1.ResourceMemory: resource.MustParse("4Ti"),
		corev1.ResourcePods: resource.MustParse("10000"),
	}
}
