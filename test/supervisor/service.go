package supervisor

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailgun/raymond/v2"
)

// Service healths, as /services reports them (components/sup/src/manager/service/health.rs).
const (
	HealthOk       = "Ok"
	HealthWarning  = "Warning"
	HealthCritical = "Critical"
	HealthUnknown  = "Unknown"
)

// DefaultHealthCheckInterval is `--health-check-interval`'s default (HealthCheckInterval::default).
const DefaultHealthCheckInterval = 30 * time.Second

// hookTimeout bounds the short-lived hooks; the real Supervisor waits for them, but a hung
// hook in a test should fail it, not hang it.
const hookTimeout = 30 * time.Second

// Service is the one service a double supervises, as components/sup/src/manager/service.rs
// does: its templates rendered every tick, its run hook kept running, restarted on a
// changed config (or reconfigured, when the plan has that hook), its health checked.
type Service struct {
	plan     *Plan
	group    string // "<service>.<group>"
	path     string // pkg.svc_path: /hab/svc/<service>
	cfg      map[string]any
	exported map[string]any
	env      []string
	log      *slog.Logger
	shutdown time.Duration

	mu          sync.Mutex
	proc        *process
	initialized bool
	stopped     bool // the Supervisor is shutting down: no tick starts it again
	health      string
	lastStatus  string // the election status hooks last waited on (for the log)
	restarts    int    // starts of the run hook after the first
	reconfigs   int    // reconfigure hook runs
	suitability uint64 // the last suitability hook's answer
}

// svcPaths are pkg.svc_* of the render context.
func (v *Service) paths() map[string]string {
	return map[string]string{
		"svc_path": v.path, "svc_config_path": filepath.Join(v.path, "config"), "svc_data_path": filepath.Join(v.path, "data"),
		"svc_files_path": filepath.Join(v.path, "files"), "svc_static_path": filepath.Join(v.path, "static"),
		"svc_var_path": filepath.Join(v.path, "var"), "svc_pid_file": filepath.Join(v.path, "PID"),
		"svc_run": filepath.Join(v.path, "run"), "svc_hooks_path": filepath.Join(v.path, "hooks"),
	}
}

// newService prepares a service of opts from its plan: the merged config and the service
// directories. Nothing runs until the first tick that may execute hooks.
func newService(opts Options, log *slog.Logger) (*Service, error) {
	plan, err := LoadPlan(opts.PlanDir)
	if err != nil {
		return nil, err
	}
	u := UserConfig{Env: opts.UserEnv}
	if b, err := os.ReadFile(filepath.Join(opts.UserRoot, opts.Service, "config", "user.toml")); err == nil {
		u.File = string(b)
	}
	cfg, err := plan.Cfg(u)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", opts.Service, err)
	}
	v := &Service{plan: plan, group: opts.ServiceGroup(), path: filepath.Join(opts.SvcRoot, opts.Service), cfg: cfg,
		exported: plan.Exported(cfg), env: hookEnv(), log: log.With("service", opts.ServiceGroup()),
		shutdown: DefaultShutdownTimeout, health: HealthUnknown}
	for _, d := range []string{"config", "data", "files", "static", "var", "hooks"} {
		if err := os.MkdirAll(filepath.Join(v.path, d), 0o755); err != nil {
			return nil, fmt.Errorf("service %s: %w", opts.Service, err)
		}
	}
	return v, nil
}

// templateUpdate is what one render changed (TemplateUpdate upstream).
type templateUpdate struct {
	config bool            // any file under config/
	hooks  map[string]bool // hooks whose rendered content changed
}

// needsRestart follows TemplateUpdate::needs_restart: a changed init, run or post-run
// hook, or a changed config when the plan has no reconfigure hook.
func (u templateUpdate) needsRestart(haveReconfigure bool) bool {
	return u.hooks[HookInit] || u.hooks[HookRun] || u.hooks["post-run"] || (!haveReconfigure && u.config)
}

// needsReconfigure follows TemplateUpdate::needs_reconfigure.
func (u templateUpdate) needsReconfigure() bool { return u.config || u.hooks[HookReconfigure] }

// render renders every template against ctx and writes those whose content differs from
// the file on disk (CfgRenderer::compile compares hashes with what is there): the
// outcome of a render is acted on only by the tick that made it.
func (v *Service) render(ctx map[string]any) (templateUpdate, error) {
	u := templateUpdate{hooks: map[string]bool{}}
	p := v.paths()
	for name, t := range v.plan.Hooks {
		changed, err := writeRendered(t, ctx, filepath.Join(p["svc_hooks_path"], name), 0o755)
		if err != nil {
			return u, fmt.Errorf("hook %s: %w", name, err)
		}
		u.hooks[name] = changed
	}
	for rel, t := range v.plan.Config {
		changed, err := writeRendered(t, ctx, filepath.Join(p["svc_config_path"], rel), 0o644)
		if err != nil {
			return u, fmt.Errorf("config %s: %w", rel, err)
		}
		u.config = u.config || changed
	}
	return u, nil
}

func writeRendered(t *raymond.Template, ctx map[string]any, path string, mode os.FileMode) (bool, error) {
	out, err := t.Exec(ctx)
	if err != nil {
		return false, err
	}
	if old, err := os.ReadFile(path); err == nil && sha256.Sum256(old) == sha256.Sum256([]byte(out)) {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(out), mode); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, path)
}

// tick is one Supervisor tick for the service (Service::tick): render, then, for the
// leader topology only while the group's election is finished, execute hooks. A change
// rendered while hooks wait is on disk already and is never acted on later.
func (v *Service) tick(ctx map[string]any, topology, status string) {
	u, err := v.render(ctx)
	if err != nil {
		v.log.Warn("render failed", "err", err)
		return
	}
	if topology == "leader" && status != ElectionFinished {
		v.mu.Lock()
		if v.lastStatus != status {
			v.log.Info("waiting to execute hooks", "election", status)
			v.lastStatus = status
		}
		v.mu.Unlock()
		return
	}
	v.mu.Lock()
	if v.lastStatus != status {
		v.log.Info("executing hooks", "election", status)
		v.lastStatus = status
	}
	v.mu.Unlock()
	v.executeHooks(u)
}

// executeHooks follows Service::execute_hooks: initialize and start once; then restart a
// process that is down or whose run hook or config changed; else reconfigure.
func (v *Service) executeHooks(u templateUpdate) {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, haveReconfigure := v.plan.Hooks[HookReconfigure]
	switch {
	case v.stopped:
	case !v.initialized:
		v.startLocked()
	case v.proc == nil || !v.proc.running():
		v.log.Info("service process is down: restarting")
		v.restartLocked()
	case u.needsRestart(haveReconfigure):
		v.log.Info("restarting: its run hook or config changed")
		v.restartLocked()
	case u.needsReconfigure() && haveReconfigure:
		v.reconfigs++
		code, _, err := v.hook(HookReconfigure)
		v.log.Info("reconfigure hook ran", "exit", code, "err", err) // its exit code is ignored upstream
	}
}

// startLocked runs init (when the plan has it), then the run hook. An init hook that fails
// leaves the service uninitialized: the next tick tries again.
func (v *Service) startLocked() {
	if _, ok := v.plan.Hooks[HookInit]; ok {
		if code, _, err := v.hook(HookInit); err != nil || code != 0 {
			v.log.Warn("init hook failed", "exit", code, "err", err)
			return
		}
	}
	p, err := startProcess(filepath.Join(v.paths()["svc_hooks_path"], HookRun), v.path, v.env, v.log, v.group+"(O)")
	if err != nil {
		v.log.Warn("run hook did not start", "err", err)
		return
	}
	if v.initialized {
		v.restarts++
	}
	v.proc, v.initialized = p, true
	v.log.Info("service started", "pid", p.cmd.Process.Pid)
}

// restartLocked stops the process as Process::kill does, runs post-stop, and starts it
// again from init: the real Supervisor makes a new Service for a restart.
func (v *Service) restartLocked() {
	v.stopLocked()
	v.startLocked()
}

func (v *Service) stopLocked() {
	if v.proc == nil {
		return
	}
	v.proc.stop(v.shutdown)
	v.proc = nil
	if _, ok := v.plan.Hooks[HookPostStop]; ok {
		_, _, _ = v.hook(HookPostStop)
	}
}

// kill stops the service at once, as the kernel does to a container's processes when
// its first one dies.
func (v *Service) kill() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.stopped = true
	if v.proc != nil {
		v.proc.kill()
		v.proc = nil
	}
}

// Stop stops the service for good (the Supervisor shutting down): no later tick starts it
// again, as the real Supervisor leaves its main loop before it stops its services.
func (v *Service) Stop() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.stopped = true
	v.stopLocked()
}

func (v *Service) hook(name string) (int, string, error) {
	return runHook(filepath.Join(v.paths()["svc_hooks_path"], name), v.path, v.env, v.log, v.group+"("+name+")", hookTimeout)
}

// checkHealth runs the health-check hook (exit 0 ok, 1 warning, 2 critical, anything else
// unknown); without one a running process is Ok and a stopped one Critical (health.rs).
func (v *Service) checkHealth() string {
	v.mu.Lock()
	initialized, up := v.initialized, v.proc != nil && v.proc.running()
	v.mu.Unlock()
	h := HealthUnknown
	switch _, hasHook := v.plan.Hooks[HookHealthCheck]; {
	case !initialized:
	case !hasHook && up:
		h = HealthOk
	case !hasHook:
		h = HealthCritical
	default:
		code, _, err := v.hook(HookHealthCheck)
		switch {
		case err != nil:
		case code == 0:
			h = HealthOk
		case code == 1:
			h = HealthWarning
		case code == 2:
			h = HealthCritical
		}
	}
	v.mu.Lock()
	if h != v.health {
		v.log.Info("health changed", "health", h)
	}
	v.health = h
	v.mu.Unlock()
	return h
}

// Suitability runs the suitability hook: the last line of its output as an unsigned
// integer; a failure, no output or no hook is 0, and so is a service not yet initialized
// (SuitabilityHook::parse_suitability, Service::suitability).
func (v *Service) Suitability() uint64 {
	v.mu.Lock()
	initialized := v.initialized
	v.mu.Unlock()
	if _, ok := v.plan.Hooks[HookSuitability]; !ok || !initialized {
		return 0
	}
	code, out, err := v.hook(HookSuitability)
	if err != nil || code != 0 {
		return 0
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	n, err := strconv.ParseUint(strings.TrimSpace(lines[len(lines)-1]), 10, 64)
	if err != nil {
		return 0
	}
	v.mu.Lock()
	v.suitability = n
	v.mu.Unlock()
	return n
}

// ServiceStatus is what /services shows of the service (a subset of the upstream
// ServiceQueryModel, components/sup/doc/http_gateway_services_schema.json).
type ServiceStatus struct {
	ServiceGroup       string         `json:"service_group"`
	HealthCheck        string         `json:"health_check"`
	Initialized        bool           `json:"initialized"`
	LastElectionStatus string         `json:"last_election_status"`
	Cfg                map[string]any `json:"cfg"`
	Process            struct {
		PID   *int   `json:"pid"`
		State string `json:"state"`
	} `json:"process"`
	RestartCount int      `json:"restart_count"`
	Hooks        []string `json:"hooks"`
	// Double-only: how often the reconfigure hook ran (not in the upstream model).
	ReconfigureCount int `json:"habring_double_reconfigure_count"`
}

// Status reports the service for /services.
func (v *Service) Status() ServiceStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := ServiceStatus{ServiceGroup: v.group, HealthCheck: v.health, Initialized: v.initialized, LastElectionStatus: v.lastStatus,
		Cfg: v.cfg, RestartCount: v.restarts, Hooks: v.plan.HookNames(), ReconfigureCount: v.reconfigs}
	s.Process.State = "down"
	if v.proc != nil && v.proc.running() {
		pid := v.proc.cmd.Process.Pid
		s.Process.PID, s.Process.State = &pid, "up"
	}
	return s
}

// renderContext is the Handlebars context of a service's templates
// (components/sup/src/manager/service/context.rs; components/sup/doc/render_context_schema.json):
// sys, pkg, cfg, svc (me, leader, first, members) and bind, made from the same census
// view GET /census shows. Strings are raymond.SafeString: Habitat renders with no HTML
// escaping (never_escape).
func (v *Service) renderContext(o Options, self Member, g CensusGroup) map[string]any {
	members := []any{}
	var me, leader, first any
	ids := make([]string, 0, len(g.Population))
	for id := range g.Population {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		m := g.Population[id]
		mm := toContext(m)
		if first == nil {
			first = mm
		}
		if m.Alive || m.Suspect {
			members = append(members, mm)
		}
		if id == self.ID {
			me = mm
		}
		if g.LeaderID != nil && *g.LeaderID == id {
			leader = mm
		}
	}
	if leader != nil {
		first = leader
	}
	p := v.paths()
	pkg := map[string]any{"ident": o.Package, "origin": strings.SplitN(o.Package, "/", 2)[0], "name": o.Service,
		"exports": v.plan.Exports, "path": v.plan.Dir, "svc_user": "hab", "svc_group": "hab"}
	for k, val := range p {
		if k != "svc_hooks_path" {
			pkg[k] = val
		}
	}
	ctx := map[string]any{
		"sys": map[string]any{"member_id": self.ID, "ip": self.IP, "hostname": self.Hostname, "gossip_ip": self.IP,
			"gossip_port": self.GossipPort, "http_gateway_ip": "0.0.0.0", "http_gateway_port": 9631,
			"ctl_gateway_ip": "127.0.0.1", "ctl_gateway_port": 9632, "permanent": self.Permanent, "version": "double"},
		"pkg": pkg,
		"cfg": v.cfg,
		"svc": map[string]any{"service": o.Service, "group": o.Group, "org": nil,
			"election_is_running": g.ElectionStatus == ElectionInProgress, "election_is_no_quorum": g.ElectionStatus == ElectionNoQuorum,
			"election_is_finished": g.ElectionStatus == ElectionFinished,
			"me":                   me, "leader": leader, "first": first, "members": members},
		"bind": map[string]any{},
	}
	return safe(ctx).(map[string]any)
}

// toContext turns a census member into the render context's svc_member (the same fields,
// as JSON names them).
func toContext(m CensusMember) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	_ = d.Decode(&out)
	return out
}

// safe makes every string of a context a raymond.SafeString and every JSON number a Go
// number, so templates print values as they are.
func safe(v any) any {
	switch x := v.(type) {
	case string:
		return raymond.SafeString(x)
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			out[k] = safe(val)
		}
		return out
	case map[string]string:
		out := make(map[string]any, len(x))
		for k, val := range x {
			out[k] = raymond.SafeString(val)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = safe(val)
		}
		return out
	case []map[string]any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = safe(val)
		}
		return out
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x)
		}
	}
	return v
}
