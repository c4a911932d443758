package runner

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

type containerKind int

const (
	mainContainer containerKind = iota
	initContainer
	sidecarContainer // an init container with restartPolicy Always
)

// container runs one container of a pod as a process, restarting it as its restart
// policy says.
type container struct {
	p       *pod
	spec    corev1.Container
	kind    containerKind
	volumes map[string]string

	startedCh chan struct{} // closed once the container first counts as started
	done      chan struct{} // closed when supervise returns
	startOnce sync.Once

	mu       sync.Mutex
	proc     *os.Process
	exited   chan struct{} // closed when the current process ended
	stopping bool
	st       corev1.ContainerStatus
	ok       bool // a regular init container ended with 0
}

func newContainer(p *pod, spec corev1.Container, kind containerKind, volumes map[string]string) *container {
	return &container{p: p, spec: spec, kind: kind, volumes: volumes, startedCh: make(chan struct{}), done: make(chan struct{}),
		st: corev1.ContainerStatus{Name: spec.Name, Image: spec.Image, ImageID: "runner://" + spec.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}}
}

func (c *container) status() corev1.ContainerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return *c.st.DeepCopy()
}

func (c *container) succeeded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok
}

func (c *container) update(f func(*corev1.ContainerStatus)) {
	c.mu.Lock()
	f(&c.st)
	c.mu.Unlock()
	c.p.markStatus()
}

// supervise starts the container and restarts it after it ends while its restart policy
// wants it, with a doubling back-off, until the pod stops.
func (c *container) supervise(ctx context.Context) {
	defer close(c.done)
	backoff := c.p.r.opts.RestartBackoff
	for {
		started := time.Now()
		exitCode, err := c.runOnce(ctx)
		if c.isStopping() || c.p.stopped() {
			return
		}
		if err == nil {
			c.mu.Lock()
			c.ok = exitCode == 0
			c.mu.Unlock()
			if !c.restarts(exitCode) {
				return
			}
		}
		if time.Since(started) > 2*c.p.r.opts.MaxRestartBackoff {
			backoff = c.p.r.opts.RestartBackoff // it ran long enough: a fresh failure
		}
		c.update(func(s *corev1.ContainerStatus) {
			if err == nil {
				s.RestartCount++
				s.LastTerminationState, s.State = s.State, corev1.ContainerState{
					Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off " + backoff.String() + " restarting the container"}}
			}
		})
		select {
		case <-c.p.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.p.r.opts.MaxRestartBackoff)
	}
}

func (c *container) restarts(exitCode int) bool {
	switch c.kind {
	case sidecarContainer:
		return true
	case initContainer:
		return exitCode != 0 && c.p.object().Spec.RestartPolicy != corev1.RestartPolicyNever
	}
	switch c.p.object().Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return exitCode != 0
	}
	return true
}

func (c *container) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// runOnce starts the process and waits for it to end. An error means it could not start
// (the status says why as a waiting reason); otherwise the exit code is returned.
func (c *container) runOnce(ctx context.Context) (int, error) {
	cmd, logFile, err := c.command(ctx)
	if err != nil {
		reason := "CreateContainerConfigError"
		if errors.Is(err, errNoImage) {
			reason = "ErrImagePull"
		}
		c.update(func(s *corev1.ContainerStatus) {
			s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}}
		})
		return 0, err
	}
	defer func() { _ = logFile.Close() }()
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return 0, errNotRunning
	}
	if err := cmd.Start(); err != nil {
		c.mu.Unlock()
		c.update(func(s *corev1.ContainerStatus) {
			s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "RunContainerError", Message: err.Error()}}
		})
		return 0, err
	}
	exited := make(chan struct{})
	c.proc, c.exited = cmd.Process, exited
	c.st.ContainerID = "runner://" + strconv.Itoa(cmd.Process.Pid)
	c.st.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
	c.st.Started, c.st.Ready = ptr.To(false), false
	c.mu.Unlock()
	c.p.markStatus()
	go c.probe(exited)
	werr := cmd.Wait()
	close(exited)
	code := cmd.ProcessState.ExitCode()
	reason, signal := "Completed", 0
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		signal = int(ws.Signal())
		code = 128 + signal
	}
	if code != 0 {
		reason = "Error"
	}
	c.mu.Lock()
	c.proc = nil
	var startedAt metav1.Time
	if r := c.st.State.Running; r != nil {
		startedAt = r.StartedAt
	}
	c.st.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: int32(code), Signal: int32(signal),
		Reason: reason, StartedAt: startedAt, FinishedAt: metav1.Now(), ContainerID: c.st.ContainerID, Message: errText(werr)}}
	c.st.Started, c.st.Ready = ptr.To(false), false
	c.mu.Unlock()
	c.p.markStatus()
	return code, nil
}

func errText(err error) string {
	var ee *exec.ExitError
	if err == nil || errors.As(err, &ee) {
		return ""
	}
	return err.Error()
}

var errNoImage = errors.New("no program for this image")

// command builds the process: `ip netns exec` (the pod's network and /etc/hosts, a mount
// namespace of its own), `unshare --uts` (its hostname), then a shell that sets the
// hostname, bind-mounts the volumes and execs the container's command: the process keeps
// its pid throughout, so signals reach the program itself.
func (c *container) command(ctx context.Context) (*exec.Cmd, *os.File, error) {
	img, ok := c.p.r.opts.Images(c.spec.Image)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %q (the runner's Options.Images does not know it)", errNoImage, c.spec.Image)
	}
	obj := c.p.object()
	e, err := c.p.containerEnv(ctx, obj, &c.spec, img)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	restarts := c.st.RestartCount
	c.mu.Unlock()
	for _, name := range img.FreshDirs {
		dir := filepath.Join(c.p.dir, "containers", fmt.Sprintf("%s-%d", c.spec.Name, restarts), name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, nil, err
		}
		e.set(name, dir)
	}
	argv := img.Entrypoint
	args := img.Cmd
	if len(c.spec.Command) > 0 {
		argv, args = c.spec.Command, nil
	}
	if len(c.spec.Args) > 0 {
		args = c.spec.Args
	}
	argv = append(append([]string(nil), argv...), args...)
	if len(argv) == 0 {
		return nil, nil, fmt.Errorf("image %q has no entrypoint and the container no command", c.spec.Image)
	}
	if host, ok := img.Files[argv[0]]; ok {
		argv[0] = host
	}
	for i := range argv {
		argv[i] = expand(argv[i], e.lookup)
	}
	mounts, err := c.p.mounts(&c.spec, c.volumes)
	if err != nil {
		return nil, nil, err
	}
	n := c.p.network()
	if n == nil {
		return nil, nil, errors.New("the pod has no network")
	}
	wd := c.spec.WorkingDir
	if wd == "" {
		wd = "/"
	}
	var script strings.Builder
	script.WriteString("set -e\necho " + quote(podHostname(obj)) + " > /proc/sys/kernel/hostname\n")
	for _, m := range mounts {
		script.WriteString("mount --bind " + quote(m.src) + " " + quote(m.dst) + "\n")
		if m.readOnly {
			script.WriteString("mount -o remount,bind,ro " + quote(m.dst) + "\n")
		}
	}
	script.WriteString("cd " + quote(wd) + "\nexec \"$@\"\n")
	logFile, err := os.OpenFile(c.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(logFile, "--- runner: start %s %q (restart %d)\n", time.Now().Format(time.RFC3339Nano), argv, restarts)
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, "unshare", "--uts", "--", "sh", "-c", script.String(), "sh"}, argv...)...)
	cmd.Env = e.list()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group (the runner signals the group), killed if the runner dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd, logFile, nil
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// signal sends sig to the container's process group; errNotRunning when there is none.
func (c *container) signal(sig syscall.Signal) (<-chan struct{}, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return nil, errNotRunning
	}
	if err := syscall.Kill(-c.proc.Pid, sig); err != nil {
		return nil, err
	}
	return c.exited, nil
}

func (c *container) kill() error {
	if _, err := c.signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("runner: container %s of %s/%s: %w", c.spec.Name, c.p.namespace, c.p.name, err)
	}
	return nil
}

// terminate stops the container for good: its preStop hook, SIGTERM, SIGKILL at the
// deadline.
func (c *container) terminate(deadline time.Time) {
	c.mu.Lock()
	c.stopping = true
	proc := c.proc
	c.mu.Unlock()
	if proc != nil {
		c.preStop(proc.Pid, deadline)
	}
	exited, err := c.signal(syscall.SIGTERM)
	if err == nil {
		select {
		case <-exited:
		case <-time.After(time.Until(deadline)):
			if exited, err = c.signal(syscall.SIGKILL); err == nil {
				<-exited
			}
		}
	}
	select {
	case <-c.done:
	case <-time.After(time.Until(deadline) + 5*time.Second):
	}
}

// preStop runs the container's preStop hook, as a kubelet does before it sends SIGTERM
// on deletion: exec (the command in the container's network, mount and UTS namespaces,
// with its environment, unexpanded as the kubelet leaves it), httpGet (to the pod's
// address) or sleep, cut off at the deadline. The hook's output goes to the container's
// log; a failed hook is logged there and in the runner's log and the container is
// stopped anyway (the kubelet's FailedPreStopHook event).
func (c *container) preStop(pid int, deadline time.Time) {
	if c.spec.Lifecycle == nil || c.spec.Lifecycle.PreStop == nil {
		return
	}
	h := c.spec.Lifecycle.PreStop
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	logFile, err := os.OpenFile(c.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.p.r.log.Warn("preStop hook", "pod", c.p.namespace+"/"+c.p.name, "container", c.spec.Name, "err", err)
		return
	}
	defer func() { _ = logFile.Close() }()
	start := time.Now()
	switch {
	case h.Exec != nil:
		err = c.execHook(ctx, pid, h.Exec.Command, logFile)
	case h.HTTPGet != nil:
		err = c.check(&corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: h.HTTPGet},
			TimeoutSeconds: int32(max(time.Until(deadline)/time.Second, 1))})
	case h.Sleep != nil:
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		}
	default:
		err = errors.New("the runner runs exec, httpGet and sleep hooks only")
	}
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("not done when the grace period ended: %w", ctx.Err())
	}
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		fmt.Fprintf(logFile, "--- runner: preStop hook failed after %s: %v\n", took, err)
		c.p.r.log.Warn("FailedPreStopHook", "pod", c.p.namespace+"/"+c.p.name, "container", c.spec.Name, "took", took, "err", err)
		return
	}
	fmt.Fprintf(logFile, "--- runner: preStop hook done in %s\n", took)
}

// execHook runs argv inside the running container whose process is pid.
func (c *container) execHook(ctx context.Context, pid int, argv []string, out *os.File) error {
	if len(argv) == 0 {
		return errors.New("exec hook without a command")
	}
	img, ok := c.p.r.opts.Images(c.spec.Image)
	if !ok {
		return fmt.Errorf("%w: %q", errNoImage, c.spec.Image)
	}
	e, err := c.p.containerEnv(ctx, c.p.object(), &c.spec, img)
	if err != nil {
		return err
	}
	argv = append([]string(nil), argv...)
	if host, ok := img.Files[argv[0]]; ok {
		argv[0] = host
	}
	fmt.Fprintf(out, "--- runner: preStop %s %q\n", time.Now().Format(time.RFC3339Nano), argv)
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", strconv.Itoa(pid), "--net", "--mount", "--uts", "--"}, argv...)...)
	cmd.Env = e.list()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	return cmd.Run()
}

func (c *container) logPath() string {
	return filepath.Join(c.p.r.opts.Dir, "logs", c.p.namespace+"_"+c.p.name+"_"+c.spec.Name+".log")
}

// probe runs the startup probe until it passes (the container counts as started), then
// the readiness probe for as long as this process lives. A failed startup probe kills the
// container, as a kubelet does.
func (c *container) probe(exited <-chan struct{}) {
	wait := func(d time.Duration) bool {
		select {
		case <-exited:
			return false
		case <-time.After(d):
			return true
		}
	}
	if sp := c.spec.StartupProbe; sp != nil {
		if !wait(time.Duration(sp.InitialDelaySeconds) * time.Second) {
			return
		}
		for failures := 0; ; {
			if c.check(sp) == nil {
				break
			}
			if failures++; failures >= int(max(sp.FailureThreshold, 1)) {
				_ = c.kill()
				return
			}
			if !wait(period(sp)) {
				return
			}
		}
	}
	c.update(func(s *corev1.ContainerStatus) { s.Started = ptr.To(true) })
	c.startOnce.Do(func() { close(c.startedCh) })
	rp := c.spec.ReadinessProbe
	if rp == nil {
		c.update(func(s *corev1.ContainerStatus) { s.Ready = true })
		return
	}
	if !wait(time.Duration(rp.InitialDelaySeconds) * time.Second) {
		return
	}
	ready, streak := false, 0
	for {
		ok := c.check(rp) == nil
		if ok != ready {
			streak++
			threshold := max(rp.FailureThreshold, 1)
			if ok {
				threshold = max(rp.SuccessThreshold, 1)
			}
			if streak >= int(threshold) {
				ready, streak = ok, 0
				c.update(func(s *corev1.ContainerStatus) { s.Ready = ok })
			}
		} else {
			streak = 0
		}
		if !wait(period(rp)) {
			return
		}
	}
}

func period(p *corev1.Probe) time.Duration {
	if p.PeriodSeconds <= 0 {
		return 10 * time.Second
	}
	return time.Duration(p.PeriodSeconds) * time.Second
}

// check runs one probe from the node against the pod's address, as a kubelet does.
func (c *container) check(p *corev1.Probe) error {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ip := c.p.object().Status.PodIP
	switch {
	case p.HTTPGet != nil:
		port, err := c.port(p.HTTPGet.Port)
		if err != nil {
			return err
		}
		scheme := "http"
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		req, err := http.NewRequest(http.MethodGet, scheme+"://"+net.JoinHostPort(ip, strconv.Itoa(port))+p.HTTPGet.Path, nil)
		if err != nil {
			return err
		}
		for _, h := range p.HTTPGet.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		// As the kubelet: an HTTPS probe does not verify the certificate, and a new
		// connection each time.
		client := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the kubelet's probes skip verification too
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil:
		port, err := c.port(p.TCPSocket.Port)
		if err != nil {
			return err
		}
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(port)), timeout)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	return errors.New("the runner runs httpGet and tcpSocket probes only")
}

func (c *container) port(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("no container port named %q", p.StrVal)
}
