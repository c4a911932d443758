package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/test/cluster"
	"github.com/habring/habring/test/podnet"
	"github.com/habring/habring/test/runner"
	"github.com/habring/habring/test/supervisor"
)

// PodNetwork sweeps what killed runs left (namespaces, links) and makes a pod network for
// a runner, or says why pods cannot run on this machine (not root, no iproute2).
func PodNetwork(ctx context.Context, progress io.Writer) (*podnet.Bridge, error) {
	if err := podnet.Supported(); err != nil {
		return nil, err
	}
	removed, err := podnet.Sweep(ctx)
	if err != nil {
		return nil, err
	}
	if len(removed) > 0 {
		fmt.Fprintln(progress, "swept what killed runs left:", removed)
	}
	return podnet.NewRandomBridge(ctx)
}

// initScript is /init.sh of an image made by `hab pkg export container`, with the
// Supervisor double as `hab sup`: arguments that start with a flag run the image's package
// (HABRING_IMAGE_PKG here; the real image bakes it in), others are `hab sup` arguments.
const initScript = `#!/bin/sh
case "$1" in
-*) set -- run "$HABRING_IMAGE_PKG" "$@" ;;
esac
exec '%s' "$@"
`

// habScript is `hab` on the PATH of a Supervisor image: `hab sup run ...` (or `hab sup
// start`) runs the double, as scripts written for the real images expect, and `hab pkg
// exec <ident> <command> [args]` runs a command of a package (a hook or preStop calling
// redis-cli): the real one puts the package's runtime PATH first, here the programs are
// this machine's.
const habScript = `#!/bin/sh
case "$1 $2" in
"pkg exec")
  if [ $# -lt 4 ]; then echo "hab pkg exec: usage: hab pkg exec <ident> <command> [args...]" >&2; exit 64; fi
  shift 3
  exec "$@" ;;
sup\ *) shift; exec '%s' "$@" ;;
esac
echo "hab: only 'hab sup run' and 'hab pkg exec' are here (the Supervisor double)" >&2
exit 64
`

// StartRunner builds the Supervisor double into dir and starts a runner for the cluster's
// node. What runs for an image:
//   - habitat/<name>: an image of core/<name> from `hab pkg export container`, its
//     init.sh (initScript) starting the double, `hab sup run` on its PATH doing the same,
//     the container's own file system holding the Supervisor's MEMBER_ID;
//   - habring/redis: the image of examples/redis (`hab pkg export container habring/redis`),
//     the same init.sh, the double running that plan's service (HABRING_DOUBLE_PLAN) with
//     this machine's redis-server, its /hab/svc fresh at each container start as a
//     container's file system is;
//   - the labeler image (LabelerImageRepo): habring, and /habring-labeler; for a tag of
//     StartRunnerWith's tags, the habring (and its labeler) built for that tag;
//   - busybox: this machine's /bin/sh.
//
// Its log and the containers' are under dir.
func StartRunner(ctx context.Context, c *cluster.Cluster, bridge *podnet.Bridge, dir, habring string) (*runner.Runner, error) {
	return StartRunnerWith(ctx, c, bridge, dir, habring, nil)
}

// StartRunnerWith is StartRunner with more builds of habring: tags maps a tag of the
// labeler image (habring:<tag>) to the habring binary it holds, e.g. a previous release's.
func StartRunnerWith(ctx context.Context, c *cluster.Cluster, bridge *podnet.Bridge, dir, habring string, tags map[string]string) (*runner.Runner, error) {
	double := filepath.Join(dir, "hab-sup-double")
	build := exec.CommandContext(ctx, "go", "build", "-o", double, "./test/supervisor/cmd/hab-sup-double")
	build.Dir = RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the Supervisor double: %w: %s", err, out)
	}
	initSh := filepath.Join(dir, "hab-init.sh")
	if err := os.WriteFile(initSh, fmt.Appendf(nil, initScript, double), 0o755); err != nil {
		return nil, err
	}
	habBin := filepath.Join(dir, "hab-bin")
	if err := os.MkdirAll(habBin, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(habBin, "hab"), fmt.Appendf(nil, habScript, double), 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "runner.log"))
	if err != nil {
		return nil, err
	}
	images := func(ref string) (runner.Image, bool) {
		repo := runner.Repository(ref)
		path := "PATH=" + habBin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
		if name, ok := strings.CutPrefix(repo, "habitat/"); ok && name != "" && !strings.Contains(name, "/") {
			return runner.Image{Entrypoint: []string{initSh}, Cmd: []string{"run", "core/" + name},
				Env: []string{path, "HABRING_IMAGE_PKG=core/" + name}, FreshDirs: []string{supervisor.EnvSupRoot}}, true
		}
		switch repo {
		case RedisImageRepo:
			return runner.Image{Entrypoint: []string{initSh}, Cmd: []string{"run", RedisImageRepo},
				Env:       []string{path, "HABRING_IMAGE_PKG=" + RedisImageRepo, supervisor.EnvPlan + "=" + filepath.Join(RepoRoot(), "examples", "redis")},
				FreshDirs: []string{supervisor.EnvSupRoot, supervisor.EnvSvcRoot}}, true
		case LabelerImageRepo:
			bin := habring
			if _, tag, ok := strings.Cut(strings.TrimPrefix(ref, repo), ":"); ok && tags[tag] != "" {
				bin = tags[tag]
			}
			return runner.Image{Entrypoint: []string{bin},
				Files: map[string]string{"/habring": bin, contract.LabelerCommand: LabelerBinary(bin)}}, true
		case "busybox":
			return runner.Image{Entrypoint: []string{"/bin/sh"}}, true
		}
		return runner.Image{}, false
	}
	return runner.Start(ctx, runner.Options{Config: c.Config, Bridge: bridge, Dir: filepath.Join(dir, "runner"),
		Log: slog.New(slog.NewTextHandler(logFile, nil)), Images: images})
}

// Gateway reads a route of the Supervisor HTTP gateway at ip (port 9631) into a T.
func Gateway[T any](ctx context.Context, ip, route string) (T, error) {
	var v T
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(ip, "9631")+route, nil)
	if err != nil {
		return v, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return v, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("%s%s: HTTP %d", ip, route, resp.StatusCode)
	}
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

// PodReady reports whether the pod's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RingView is the Supervisor at ip's view of its ring: the addresses of the members it
// holds alive, sorted.
func RingView(ctx context.Context, ip string) ([]string, error) {
	b, err := Gateway[supervisor.Butterfly](ctx, ip, "/butterfly")
	if err != nil {
		return nil, err
	}
	var alive []string
	for id, m := range b.Member.Members {
		if b.Member.Health[id] == "Alive" {
			alive = append(alive, m.Address)
		}
	}
	slices.Sort(alive)
	return alive, nil
}
