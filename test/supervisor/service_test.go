package supervisor

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writePlan makes a plan directory from files (path below the plan -> content); hooks are
// made executable as a built package's are.
func writePlan(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for path, content := range files {
		full := filepath.Join(dir, path)
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(content), 0o755))
	}
	return dir
}

// testService prepares a service of plan in a directory of its own, as `run core/<name>`.
func testService(t *testing.T, plan, userEnv string) *Service {
	t.Helper()
	o := Options{Package: "core/redis", Service: "redis", Group: "default", PlanDir: plan, SvcRoot: t.TempDir(),
		UserRoot: t.TempDir(), UserEnv: userEnv}
	v, err := newService(o, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	v.shutdown = 2 * time.Second
	t.Cleanup(v.kill)
	return v
}

// group is a census group of members a (10.0.0.1), b (10.0.0.2), c (10.0.0.3), seen from
// a: status, the leader (sticky flags: the members keep leader/follower of the last
// finished election, as census.rs keeps them while a new one runs).
func group(status, leader string) CensusGroup {
	g := CensusGroup{ElectionStatus: status, Population: map[string]CensusMember{}}
	if leader != "" {
		g.LeaderID = &leader
	}
	for i, id := range []string{"a", "b", "c"} {
		g.Population[id] = CensusMember{MemberID: id, Alive: true, Leader: leader == id, Follower: leader != "" && leader != id,
			Sys: map[string]any{"ip": fmt.Sprintf("10.0.0.%d", i+1)}, Cfg: map[string]any{"port": 6379}}
	}
	return g
}

func self(id string) Member {
	return Member{ID: id, IP: "10.0.0.1", Hostname: "redis-0", GossipPort: 9638}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// The project's own plan (examples/redis) renders as core-plans' redis does: a follower
// names the leader's sys.ip and exported port in a replicaof line, the leader has none,
// the password comes from the user config layered over default.toml, and nothing is
// HTML-escaped (Habitat renders with never_escape).
func TestExamplePlanRenders(t *testing.T) {
	t.Parallel()
	v := testService(t, "../../examples/redis", "requirepass = \"s3<cr>&t\"\nmasterauth = \"s3<cr>&t\"\n")
	conf := filepath.Join(v.path, "config", "redis.config")
	o := Options{Package: "core/redis", Service: "redis", Group: "default"}

	_, err := v.render(v.renderContext(o, self("a"), group(ElectionFinished, "b")))
	require.NoError(t, err)
	follower := read(t, conf)
	assert.Contains(t, follower, "\nreplicaof 10.0.0.2 6379\n")
	assert.Contains(t, follower, "\nrequirepass \"s3<cr>&t\"\n")
	assert.Contains(t, follower, "\nprotected-mode yes\n")
	assert.Contains(t, follower, "\ndir "+filepath.Join(v.path, "data")+"\n")

	_, err = v.render(v.renderContext(o, self("a"), group(ElectionFinished, "a")))
	require.NoError(t, err)
	assert.NotContains(t, read(t, conf), "replicaof")
	assert.Contains(t, read(t, filepath.Join(v.path, "hooks", HookReconfigure)), "REDISCLI_AUTH='s3<cr>&t'")
	assert.Equal(t, map[string]any{"port": int64(6379)}, v.exported, "pkg_exports of plan.sh")
}

// Config layers: default.toml, then HAB_<SERVICE> (TOML), then user.toml, a later layer
// winning key by key, tables merged (components/common/src/templating/config.rs).
func TestConfigLayers(t *testing.T) {
	t.Parallel()
	plan := writePlan(t, map[string]string{
		"default.toml": "port = 6379\nname = \"default\"\n[tls]\nport = 0\nauth = \"none\"\n",
		"hooks/run":    "#!/bin/sh\nexec sleep 60\n"})
	p, err := LoadPlan(plan)
	require.NoError(t, err)
	cfg, err := p.Cfg(UserConfig{Env: "name = \"env\"\n[tls]\nport = 6380\n", File: "[tls]\nauth = \"file\"\n"})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"port": int64(6379), "name": "env", "tls": map[string]any{"port": int64(6380), "auth": "file"}}, cfg)
	_, err = p.Cfg(UserConfig{Env: "not toml ["})
	require.ErrorContains(t, err, "user config (environment)")
	assert.Equal(t, "HAB_REDIS_CACHE", EnvName("redis-cache"))
}

// A template that does not compile fails the start with its file named; a plan with no
// run hook runs nothing and says so.
func TestPlanErrors(t *testing.T) {
	t.Parallel()
	_, err := LoadPlan(writePlan(t, map[string]string{"hooks/run": "#!/bin/sh\n", "config/x.conf": "{{#if}}"}))
	require.ErrorContains(t, err, "template config/x.conf")
	_, err = LoadPlan(writePlan(t, map[string]string{"config/x.conf": "port {{cfg.port}}"}))
	require.ErrorContains(t, err, "no hooks/run")
}

// A file is written only when its rendered content changes (CfgRenderer::compile compares
// the rendered hash with the file's): a second render of the same context changes nothing
// on disk and reports nothing changed.
func TestRenderedFilesWrittenOnlyWhenChanged(t *testing.T) {
	t.Parallel()
	v := testService(t, writePlan(t, map[string]string{"hooks/run": "#!/bin/sh\nexec sleep 60\n",
		"config/peer.conf": "leader {{svc.leader.sys.ip}}\n"}), "")
	o := Options{Service: "redis", Group: "default"}
	ctx := v.renderContext(o, self("a"), group(ElectionFinished, "b"))
	u, err := v.render(ctx)
	require.NoError(t, err)
	require.True(t, u.config)
	path := filepath.Join(v.path, "config", "peer.conf")
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, os.Chtimes(path, time.Unix(1, 0), time.Unix(1, 0)))
	u, err = v.render(ctx)
	require.NoError(t, err)
	assert.False(t, u.config)
	st2, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, time.Unix(1, 0), st2.ModTime(), "not rewritten")
	assert.Equal(t, st.Size(), st2.Size())
	u, err = v.render(v.renderContext(o, self("a"), group(ElectionFinished, "c")))
	require.NoError(t, err)
	assert.True(t, u.config)
	assert.Equal(t, "leader 10.0.0.3\n", read(t, path))
}

// startsPlan is a plan whose run hook appends a line to <svc>/var/starts at each start and
// traps SIGTERM into a line of <svc>/var/stops; reconfigure, when given, appends to
// <svc>/var/reconfigures.
func startsPlan(t *testing.T, reconfigure bool) string {
	files := map[string]string{
		"hooks/run": "#!/bin/sh\necho start >> {{pkg.svc_var_path}}/starts\n" +
			"trap 'echo stop >> {{pkg.svc_var_path}}/stops; exit 0' TERM\nwhile :; do sleep 0.1; done\n",
		"config/role.conf": "{{#if svc.me.leader}}leader{{/if}}{{#if svc.me.follower}}follower of {{svc.leader.sys.ip}}{{/if}}\n",
	}
	if reconfigure {
		files["hooks/reconfigure"] = "#!/bin/sh\ncat {{pkg.svc_config_path}}/role.conf >> {{pkg.svc_var_path}}/reconfigures\n"
	}
	return writePlan(t, files)
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	if strings.TrimSpace(string(b)) == "" {
		return nil // made by the shell's >>, not written yet
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func waitLines(t *testing.T, path string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return len(lines(t, path)) >= n }, 10*time.Second, 20*time.Millisecond, "%s: %d lines", path, n)
}

// A changed config restarts the service (SIGTERM, then a new start) when the plan has no
// reconfigure hook; with one, the hook runs instead and the process is left alone
// (TemplateUpdate::needs_restart, needs_reconfigure; Service::execute_hooks).
func TestChangedConfigRestartsUnlessReconfigureHook(t *testing.T) {
	t.Parallel()
	o := Options{Service: "redis", Group: "default"}
	for name, reconfigure := range map[string]bool{"restart": false, "reconfigure": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			v := testService(t, startsPlan(t, reconfigure), "")
			varDir := filepath.Join(v.path, "var")
			v.tick(v.renderContext(o, self("a"), group(ElectionFinished, "b")), "standalone", ElectionFinished)
			waitLines(t, filepath.Join(varDir, "starts"), 1)
			v.tick(v.renderContext(o, self("a"), group(ElectionFinished, "b")), "standalone", ElectionFinished)
			v.tick(v.renderContext(o, self("a"), group(ElectionFinished, "a")), "standalone", ElectionFinished)
			if reconfigure {
				waitLines(t, filepath.Join(varDir, "reconfigures"), 1)
				assert.Equal(t, []string{"leader"}, lines(t, filepath.Join(varDir, "reconfigures")))
				assert.Len(t, lines(t, filepath.Join(varDir, "starts")), 1, "no restart")
				assert.Nil(t, lines(t, filepath.Join(varDir, "stops")))
				return
			}
			waitLines(t, filepath.Join(varDir, "starts"), 2)
			assert.Equal(t, []string{"stop"}, lines(t, filepath.Join(varDir, "stops")), "SIGTERM first")
			assert.Equal(t, 1, v.Status().RestartCount)
		})
	}
}

// A service that ignores SIGTERM is killed when the shutdown timeout ends (Process::kill;
// 8 s by default, ShutdownTimeout).
func TestStopKillsAfterTheShutdownTimeout(t *testing.T) {
	t.Parallel()
	require.Equal(t, 8*time.Second, DefaultShutdownTimeout)
	v := testService(t, writePlan(t, map[string]string{"hooks/run": "#!/bin/sh\ntrap '' TERM\necho trapped > {{pkg.svc_var_path}}/ready\nwhile :; do sleep 0.1; done\n"}), "")
	v.shutdown = 500 * time.Millisecond
	v.tick(v.renderContext(Options{}, self("a"), group(ElectionFinished, "a")), "standalone", "")
	waitLines(t, filepath.Join(v.path, "var", "ready"), 1)
	require.Equal(t, "up", v.Status().Process.State)
	start := time.Now()
	v.Stop()
	took := time.Since(start)
	assert.GreaterOrEqual(t, took, 500*time.Millisecond, "waited for the timeout")
	assert.Equal(t, "down", v.Status().Process.State)
}

// Leader topology: nothing starts and nothing is restarted while the group's election is
// not finished ("Waiting to execute hooks"); a change rendered then is written, and is
// never acted on later, because the next render finds the file already so
// (Service::tick drops that tick's TemplateUpdate).
func TestLeaderTopologyHooksWaitAndMidElectionChangesAreLost(t *testing.T) {
	t.Parallel()
	v := testService(t, startsPlan(t, false), "")
	o := Options{Service: "redis", Group: "default"}
	varDir := filepath.Join(v.path, "var")
	for _, status := range []string{ElectionNone, ElectionInProgress, ElectionNoQuorum} {
		v.tick(v.renderContext(o, self("a"), group(status, "")), "leader", status)
	}
	assert.Equal(t, "down", v.Status().Process.State, "no hooks before the election finishes")
	assert.False(t, v.Status().Initialized)

	v.tick(v.renderContext(o, self("a"), group(ElectionFinished, "b")), "leader", ElectionFinished)
	waitLines(t, filepath.Join(varDir, "starts"), 1)

	// Election in progress with a config change (here: the census as an update lists the
	// leader at another address): written, not acted on.
	mid := group(ElectionInProgress, "b")
	m := mid.Population["b"]
	m.Sys = map[string]any{"ip": "10.0.0.9"}
	mid.Population["b"] = m
	v.tick(v.renderContext(o, self("a"), mid), "leader", ElectionInProgress)
	assert.Equal(t, "follower of 10.0.0.9\n", read(t, filepath.Join(v.path, "config", "role.conf")))
	// Finished, the same content: no change seen, no restart, ever.
	fin := mid
	fin.ElectionStatus = ElectionFinished
	for range 3 {
		v.tick(v.renderContext(o, self("a"), fin), "leader", ElectionFinished)
	}
	time.Sleep(200 * time.Millisecond)
	assert.Len(t, lines(t, filepath.Join(varDir, "starts")), 1, "the change rendered mid-election was lost")
	assert.Equal(t, 0, v.Status().RestartCount)
}

// A service whose process exits is started again by the next tick that executes hooks
// (Service::execute_hooks: not running -> restart; the default backoff is 0).
func TestExitedServiceIsRestarted(t *testing.T) {
	t.Parallel()
	v := testService(t, writePlan(t, map[string]string{"hooks/run": "#!/bin/sh\necho x >> {{pkg.svc_var_path}}/starts\nsleep 0.2\n"}), "")
	ctx := v.renderContext(Options{}, self("a"), group(ElectionFinished, "a"))
	require.Eventually(t, func() bool {
		v.tick(ctx, "standalone", "")
		return len(lines(t, filepath.Join(v.path, "var", "starts"))) >= 3
	}, 10*time.Second, 100*time.Millisecond)
}

// health-check: exit 0 ok, 1 warning, 2 critical, anything else unknown; without the hook
// a running process is ok (health.rs). /services shows it, and the health route answers
// 200, 200, 503, 500.
func TestHealthCheck(t *testing.T) {
	t.Parallel()
	for code, want := range map[int]struct {
		health string
		status int
	}{0: {HealthOk, 200}, 1: {HealthWarning, 200}, 2: {HealthCritical, 503}, 3: {HealthUnknown, 500}, 7: {HealthUnknown, 500}} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			v := testService(t, writePlan(t, map[string]string{"hooks/run": "#!/bin/sh\nexec sleep 60\n",
				"hooks/health-check": fmt.Sprintf("#!/bin/sh\nexit %d\n", code)}), "")
			assert.Equal(t, HealthUnknown, v.checkHealth(), "not initialized yet")
			v.tick(v.renderContext(Options{}, self("a"), group(ElectionFinished, "a")), "standalone", "")
			assert.Equal(t, want.health, v.checkHealth())
			s := &Supervisor{opts: Options{Service: "redis", Group: "default"}, svc: v}
			rec := httpGet(t, s.Gateway(), "/services/redis/default/health")
			assert.Equal(t, want.status, rec.Code)
			assert.Contains(t, httpGet(t, s.Gateway(), "/services").Body.String(), `"health_check":"`+want.health+`"`)
		})
	}
	v := testService(t, writePlan(t, map[string]string{"hooks/run": "#!/bin/sh\nexec sleep 60\n"}), "")
	v.tick(v.renderContext(Options{}, self("a"), group(ElectionFinished, "a")), "standalone", "")
	assert.Equal(t, HealthOk, v.checkHealth(), "no hook, process up")
	v.kill()
	assert.Equal(t, HealthCritical, v.checkHealth(), "no hook, process down")
	s := &Supervisor{opts: Options{Service: "redis", Group: "default"}, svc: v}
	assert.Equal(t, http.StatusNotFound, httpGet(t, s.Gateway(), "/services/other/default/health").Code)
}

// Suitability: the last line of the hook's output as an unsigned integer; a failure, no
// output or garbage is 0, and so is a service not yet initialized
// (SuitabilityHook::parse_suitability).
func TestSuitabilityHook(t *testing.T) {
	t.Parallel()
	for out, want := range map[string]uint64{"echo 17": 17, "echo noise; echo ' 42 '": 42, "echo x": 0, "exit 1": 0, "true": 0} {
		v := testService(t, writePlan(t, map[string]string{"hooks/run": "#!/bin/sh\nexec sleep 60\n",
			"hooks/suitability": "#!/bin/sh\n" + out + "\n"}), "")
		assert.Equal(t, uint64(0), v.Suitability(), "%q: not initialized", out)
		v.tick(v.renderContext(Options{}, self("a"), group(ElectionFinished, "a")), "standalone", "")
		assert.Equal(t, want, v.Suitability(), out)
	}
}

func httpGet(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
	return w
}
