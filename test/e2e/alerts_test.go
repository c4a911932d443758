package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/test/harness"
)

// scraped is one target's /metrics, parsed, with the labels the chart's ServiceMonitor or
// PodMonitor give its series (namespace, pod, and ring for a labeler).
type scraped struct {
	at       time.Time
	target   map[string]string
	families map[string]*dto.MetricFamily
}

func scrapeMetrics(t *testing.T, get func() ([]byte, error), target map[string]string) scraped {
	t.Helper()
	raw, err := get()
	require.NoError(t, err)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	require.NoError(t, err)
	return scraped{at: time.Now(), target: target, families: families}
}

func httpGet(url string) func() ([]byte, error) {
	return func() ([]byte, error) {
		resp, err := http.Get(url) // a loopback scrape
		if err != nil {
			return nil, err
		}
		defer func() { _ = resp.Body.Close() }()
		return io.ReadAll(resp.Body)
	}
}

type inputSeries struct {
	Series string `json:"series"`
	Values string `json:"values"`
}

// span is how long, in promtool's one-minute steps, the scraped state is held.
const span = 150

// series writes two scrapes of one target as promtool input series, as if the state
// they saw went on for span minutes: a gauge stays as last scraped, a counter goes on
// rising as fast as it rose between them. A *_timestamp_seconds gauge becomes the seconds
// from the scrape on, since promtool's clock starts at 0.
func series(first, last scraped) []inputSeries {
	var out []inputSeries
	minutes := last.at.Sub(first.at).Minutes()
	for name, f := range last.families {
		if f.GetType() != dto.MetricType_GAUGE && f.GetType() != dto.MetricType_COUNTER {
			continue // the rules read no histogram
		}
		before := map[string]float64{}
		if fb, ok := first.families[name]; ok {
			for _, m := range fb.GetMetric() {
				before[seriesName(name, m, first.target)] = value(m)
			}
		}
		for _, m := range f.GetMetric() {
			s := seriesName(name, m, last.target)
			v := value(m)
			switch {
			case f.GetType() == dto.MetricType_COUNTER:
				out = append(out, inputSeries{s, fmt.Sprintf("%g+%gx%d", before[s], (v-before[s])/minutes, span)})
			case strings.HasSuffix(name, "_timestamp_seconds"):
				out = append(out, inputSeries{s, fmt.Sprintf("%g+0x%d", v-float64(last.at.Unix()), span)})
			default:
				out = append(out, inputSeries{s, fmt.Sprintf("%g+0x%d", v, span)})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Series < out[j].Series })
	return out
}

func value(m *dto.Metric) float64 {
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func seriesName(name string, m *dto.Metric, target map[string]string) string {
	labels := maps.Clone(target)
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, labels[k]))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// alertRule is what the test needs of one of the chart's alerting rules.
type alertRule struct {
	Alert  string            `json:"alert"`
	Labels map[string]string `json:"labels"`
}

// chartRules reads the chart's rules file and writes it to dir without the annotations
// (promtool test rules compares them whole; `promtool check rules` parses their
// templates, in test/helm). It returns that file's path and the alerting rules.
func chartRules(t *testing.T, dir string) (string, []alertRule) {
	t.Helper()
	b, err := os.ReadFile(harness.RulesFile())
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(b, &doc))
	var alerts []alertRule
	for _, g := range doc["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			rule := r.(map[string]any)
			delete(rule, "annotations")
			j, err := json.Marshal(rule)
			require.NoError(t, err)
			var a alertRule
			require.NoError(t, json.Unmarshal(j, &a))
			alerts = append(alerts, a)
		}
	}
	out, err := yaml.Marshal(doc)
	require.NoError(t, err)
	path := filepath.Join(dir, "rules.yaml")
	require.NoError(t, os.WriteFile(path, out, 0o644))
	return path, alerts
}

// firing is an alert a state should raise: its name and the labels its expression keeps.
type firing struct {
	alert  string
	labels map[string]string
}

// alertState is a ring (or a webhook) put into one state, scraped twice, and the alerts it
// should raise.
type alertState struct {
	name   string
	series []inputSeries
	want   []firing
}

// freePort is a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// alertRing is a ring of three kwok pods in a namespace of its own, each with a labeler
// of this tree reading the census given for it (edit, when set, changes each), with the
// labelers' RBAC when rbac is set. It returns the namespace, the pods and their labelers'
// /metrics URLs once settled says the labels are as the state has them (for a state
// where no label can be written, settled gets nil pods and waits a few census reads).
func alertRing(t *testing.T, e *environment, censuses [3]string, edit func(doc map[string]any), rbac bool, settled func(roles map[string]string) bool) (string, []corev1.Pod, []string) {
	t.Helper()
	var ns string
	if rbac {
		ns = labelledRing(t, e, 3)
	} else {
		ns = namespace(t, e, true)
		_, err := e.client.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "habitat"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		ringService(t, e, ns, "redis", "main")
		sts := statefulSet(ns, "redis", 3, map[string]string{contract.AnnotationRing: "main", contract.AnnotationTopology: "leader"})
		sts.Spec.Template.Spec.ServiceAccountName = "habitat"
		sts.Spec.PodManagementPolicy = appsv1.ParallelPodManagement
		_, err = e.client.AppsV1().StatefulSets(ns).Create(t.Context(), sts, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	pods := readyPods(t, e, ns, "redis", 3, 2*time.Minute)
	var urls []string
	for i, p := range pods {
		port := freePort(t)
		c := runLabelerBinary(t, e, harness.LabelerBinary(e.binary), ns, &p, censuses[i], fmt.Sprintf("--health-listen=127.0.0.1:%d", port))
		if edit != nil {
			c.edit(t, edit)
		}
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if i == 0 {
			// The first labeler's Lease first: in a state with two claimants, pod 0 holds it.
			time.Sleep(time.Second)
		}
	}
	if settled == nil {
		time.Sleep(3 * time.Second)
		return ns, pods, urls
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		roles := map[string]string{}
		for _, p := range pods {
			got, err := e.client.CoreV1().Pods(ns).Get(t.Context(), p.Name, metav1.GetOptions{})
			require.NoError(c, err)
			roles[p.Name] = got.Labels[contract.LabelRole]
		}
		assert.True(c, settled(roles), "roles %v", roles)
	}, time.Minute, 200*time.Millisecond)
	time.Sleep(time.Second) // a census read or more past the last label
	return ns, pods, urls
}

// edit changes the census document as it is now.
func (c *census) edit(t *testing.T, f func(doc map[string]any)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var doc map[string]any
	require.NoError(t, json.Unmarshal(c.body, &doc))
	f(doc)
	b, err := json.Marshal(doc)
	require.NoError(t, err)
	c.body = b
}

// The chart's alerts, each evaluated by Prometheus's own rule engine (promtool test
// rules) on metrics scraped from real labelers and a real webhook put into the state it
// alerts on: a ring at its quorum's edge, one past it, one electing, one whose two
// Supervisors claim the leader, one whose labelers are denied, a webhook failing requests
// and serving a certificate about to expire. Each state raises exactly its alerts, and a
// healthy ring and webhook none. The series carry the labels the chart's PodMonitor and
// ServiceMonitor give them.
func TestAlerts(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	promtool, err := harness.Promtool()
	require.NoError(t, err)
	dir := t.TempDir()
	rulesPath, rules := chartRules(t, dir)

	const group = "redis.default"
	leaderFollowers := [3]string{"census_leader.json", "census_follower.json", "census_follower.json"}
	ringLabels := func(ns string, extra ...string) map[string]string {
		l := map[string]string{"namespace": ns, "ring": "main", "group": group}
		for i := 0; i+1 < len(extra); i += 2 {
			l[extra[i]] = extra[i+1]
		}
		return l
	}
	roles := func(want ...string) func(map[string]string) bool {
		return func(got map[string]string) bool {
			have := slices.Sorted(maps.Values(got))
			return slices.Equal(have, slices.Sorted(slices.Values(want)))
		}
	}
	type ringCase struct {
		name     string
		censuses [3]string
		edit     func(map[string]any)
		rbac     bool
		settled  func(map[string]string) bool
		want     func(ns string, pods []corev1.Pod, roles map[string]string) []firing
	}
	cases := []ringCase{
		{name: "a healthy ring", censuses: leaderFollowers, rbac: true, settled: roles("leader", "follower", "follower"),
			want: func(string, []corev1.Pod, map[string]string) []firing { return nil }},
		{name: "a ring at its quorum's edge (one of three confirmed dead)", censuses: leaderFollowers, rbac: true,
			edit: func(doc map[string]any) {
				m := doc["census_groups"].(map[string]any)[group].(map[string]any)["population"].(map[string]any)["2f6d8b0a4c1e4a7f9d2b6c8e0a3f5d71"].(map[string]any)
				m["alive"], m["confirmed"] = false, true
			},
			settled: roles("leader", "follower", "follower"),
			want: func(ns string, _ []corev1.Pod, _ map[string]string) []firing {
				return []firing{{"HabringQuorumAtEdge", ringLabels(ns)}}
			}},
		{name: "a ring without quorum", censuses: [3]string{"census_no_quorum.json", "census_no_quorum.json", "census_no_quorum.json"}, rbac: true,
			settled: roles("none", "none", "none"),
			want: func(ns string, _ []corev1.Pod, _ map[string]string) []firing {
				return []firing{{"HabringQuorumLost", ringLabels(ns)}, {"HabringNoLeader", ringLabels(ns)}}
			}},
		{name: "a ring electing", censuses: [3]string{"census_election_in_progress.json", "census_election_in_progress.json", "census_election_in_progress.json"}, rbac: true,
			settled: roles("none", "none", "none"),
			want: func(ns string, _ []corev1.Pod, _ map[string]string) []firing {
				return []firing{{"HabringNoLeader", ringLabels(ns)}}
			}},
		{name: "two Supervisors claim the leader", censuses: [3]string{"census_leader.json", "census_leader.json", "census_follower.json"}, rbac: true,
			settled: roles("leader", "none", "follower"),
			want: func(ns string, pods []corev1.Pod, got map[string]string) []firing {
				waiting := pods[1].Name
				if got[pods[1].Name] == contract.RoleLeader {
					waiting = pods[0].Name
				}
				return []firing{{"HabringLabelerFenced", ringLabels(ns, "pod", waiting)}}
			}},
		{name: "labelers without their RoleBinding", censuses: leaderFollowers,
			want: func(ns string, pods []corev1.Pod, _ map[string]string) []firing {
				var out []firing
				for _, p := range pods {
					out = append(out, firing{"HabringLabelerRequestsFailing", map[string]string{"namespace": ns, "pod": p.Name}})
				}
				// The label cannot be written, nor the Lease taken: no leader, and pod 0's
				// Supervisor leads while its label is held back.
				return append(out, firing{"HabringNoLeader", ringLabels(ns)}, firing{"HabringLabelerFenced", ringLabels(ns, "pod", pods[0].Name)})
			}},
	}
	states := make([]alertState, len(cases)+2)
	done := make(chan struct{}, len(cases)+1)
	for i, rc := range cases {
		go func() {
			defer func() { done <- struct{}{} }()
			ns, pods, urls := alertRing(t, e, rc.censuses, rc.edit, rc.rbac, rc.settled)
			got := map[string]string{}
			for _, p := range pods {
				cur, err := e.client.CoreV1().Pods(ns).Get(t.Context(), p.Name, metav1.GetOptions{})
				require.NoError(t, err)
				got[p.Name] = cur.Labels[contract.LabelRole]
			}
			st := alertState{name: rc.name + " (" + ns + ")", want: rc.want(ns, pods, got)}
			first := make([]scraped, len(pods))
			for j, p := range pods {
				first[j] = scrapeMetrics(t, httpGet(urls[j]), map[string]string{"namespace": ns, "pod": p.Name, "ring": "main"})
			}
			time.Sleep(5 * time.Second)
			for j, p := range pods {
				st.series = append(st.series, series(first[j], scrapeMetrics(t, httpGet(urls[j]), map[string]string{"namespace": ns, "pod": p.Name, "ring": "main"}))...)
			}
			states[i] = st
		}()
	}

	// A webhook of its own: healthy, then failing requests with a certificate about to
	// expire.
	go func() {
		defer func() { done <- struct{}{} }()
		w, err := harness.StartWebhook(t.Context(), t.TempDir(), e.binary, e.cluster.Kubeconfig)
		require.NoError(t, err)
		t.Cleanup(w.Stop)
		target := map[string]string{"namespace": "habring-system", "pod": "habring-webhook"}
		healthy := scrapeMetrics(t, w.Metrics, target)
		time.Sleep(5 * time.Second)
		states[len(cases)] = alertState{name: "a healthy webhook", series: series(healthy, scrapeMetrics(t, w.Metrics, target))}

		require.NoError(t, w.RotateValid(48*time.Hour))
		require.Eventually(t, func() bool {
			s := scrapeMetrics(t, w.Metrics, target)
			f := s.families["habring_certificate_expiry_timestamp_seconds"]
			return f != nil && time.Until(time.Unix(int64(value(f.GetMetric()[0])), 0)) < 72*time.Hour
		}, 30*time.Second, 100*time.Millisecond, "the webhook never served the new certificate")
		first := scrapeMetrics(t, w.Metrics, target)
		client := w.Client()
		post := func(body string) {
			resp, err := client.Post("https://"+w.Addr+"/mutate", "application/json", strings.NewReader(body))
			require.NoError(t, err)
			_ = resp.Body.Close()
		}
		start := time.Now()
		for range 20 {
			post(`{"kind": "AdmissionReview", "request": `) // errored: bad request
			post(`{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u", "operation": "CREATE",
				"kind": {"version": "v1", "kind": "Service"}, "resource": {"version": "v1", "resource": "services"}, "namespace": "shop",
				"object": {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}}}`) // denied: not a pod
		}
		time.Sleep(5*time.Second - time.Since(start))
		states[len(cases)+1] = alertState{name: "a webhook failing requests, its certificate 2 days from expiry",
			series: series(first, scrapeMetrics(t, w.Metrics, target)),
			want: []firing{{"HabringWebhookErrors", target}, {"HabringAdmissionsDenied", target},
				{"HabringCertificateExpiresSoon", target}}}
	}()
	for range len(cases) + 1 {
		<-done
	}
	require.False(t, t.Failed())

	// One promtool test per state: at 2 h, each of the chart's alerts fires exactly as the
	// state says (promtool compares the whole list of each alert name).
	type expAlert struct {
		ExpLabels map[string]string `json:"exp_labels"`
	}
	type alertTest struct {
		EvalTime  string     `json:"eval_time"`
		Alertname string     `json:"alertname"`
		ExpAlerts []expAlert `json:"exp_alerts"`
	}
	type promTest struct {
		Name          string        `json:"name"`
		Interval      string        `json:"interval"`
		InputSeries   []inputSeries `json:"input_series"`
		AlertRuleTest []alertTest   `json:"alert_rule_test"`
	}
	var tests []promTest
	for _, st := range states {
		require.NotEmpty(t, st.series, st.name)
		pt := promTest{Name: st.name, Interval: "1m", InputSeries: st.series}
		for _, r := range rules {
			at := alertTest{EvalTime: "2h", Alertname: r.Alert, ExpAlerts: []expAlert{}}
			for _, f := range st.want {
				if f.alert == r.Alert {
					l := maps.Clone(f.labels)
					maps.Copy(l, r.Labels)
					at.ExpAlerts = append(at.ExpAlerts, expAlert{l})
				}
			}
			pt.AlertRuleTest = append(pt.AlertRuleTest, at)
		}
		tests = append(tests, pt)
	}
	for _, st := range states {
		for _, f := range st.want {
			require.True(t, slices.ContainsFunc(rules, func(r alertRule) bool { return r.Alert == f.alert }), "the chart has no alert %s", f.alert)
		}
	}
	b, err := yaml.Marshal(map[string]any{"rule_files": []string{rulesPath}, "evaluation_interval": "1m", "tests": tests})
	require.NoError(t, err)
	testFile := filepath.Join(dir, "alerts_test.yaml")
	require.NoError(t, os.WriteFile(testFile, b, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, "alerts_test.yaml"), b, 0o644)) // kept with the logs when the suite fails
	out, err := exec.Command(promtool, "test", "rules", testFile).CombinedOutput()
	require.NoError(t, err, "promtool test rules %s:\n%s", testFile, out)
	t.Logf("promtool test rules: %d states, %d alerts each:\n%s", len(tests), len(rules), out)
}
