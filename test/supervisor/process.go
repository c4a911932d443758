package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// DefaultShutdownTimeout is how long a stopping service has between SIGTERM and SIGKILL
// (components/core/src/os/process.rs ShutdownTimeout, the package's shutdown_timeout: 8 s).
const DefaultShutdownTimeout = 8 * time.Second

// process is the service's running program: its run hook.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // set before exited closes
}

// command runs a rendered hook at path as the Supervisor does: in the service's directory,
// with the Supervisor's environment, its output logged line by line under the service
// group's name (the real Supervisor prefixes it "redis.default(O):"). The hook gets its own
// process group, so signals meant for the Supervisor (a pod's SIGTERM goes to PID 1) do not
// reach it, and dies with the Supervisor (Pdeathsig): when a container's first process is
// killed, the kernel kills the rest of its PID namespace.
func command(ctx context.Context, path, dir string, env []string, log *slog.Logger, tag string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			log.Info(tag, "line", sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	cmd.WaitDelay = time.Second
	go func() {
		<-ctx.Done()
		_ = pw.Close()
	}()
	return cmd
}

// startProcess starts the run hook; exited closes when it ends.
func startProcess(path, dir string, env []string, log *slog.Logger, tag string) (*process, error) {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := command(ctx, path, dir, env, log, tag)
	cmd.Cancel = nil // stopped by stop(), never by a context
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		cancel()
		close(p.exited)
	}()
	return p, nil
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after timeout, and waits.
func (p *process) stop(timeout time.Duration) {
	if !p.running() {
		return
	}
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-p.exited
	}
	_ = syscall.Kill(pgid, syscall.SIGKILL) // what it left in its group
}

// kill sends SIGKILL to the process group and waits.
func (p *process) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// ErrHookTimeout is why a hook that ran too long failed.
var ErrHookTimeout = errors.New("hook timed out")

// runHook runs a short-lived hook (init, reconfigure, health-check, suitability, post-stop)
// to its end, at most timeout, and returns its exit code and its standard output.
func runHook(path, dir string, env []string, log *slog.Logger, tag string, timeout time.Duration) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := command(ctx, path, dir, env, log, tag)
	var out strings.Builder
	cmd.Stdout = &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return -1, out.String(), fmt.Errorf("%s: %w after %s", tag, ErrHookTimeout, timeout)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String(), nil
	}
	if err != nil {
		return -1, out.String(), err
	}
	return 0, out.String(), nil
}

// hookEnv is the environment of the service and its hooks: the Supervisor's own.
func hookEnv() []string { return os.Environ() }
