package runner

import (
	"net/netip"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/habring/habring/test/podnet"
)

// Expansion follows the kubelet's rules (third_party/forked/golang/expansion upstream).
func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "a", "POD_IP": "10.1.2.3", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for in, want := range map[string]string{
		"plain":                      "plain",
		"$(A)":                       "a",
		"--sys-ip-address=$(POD_IP)": "--sys-ip-address=10.1.2.3",
		"$(A)$(A)-$(EMPTY)-":         "aa--",
		"$(UNKNOWN)":                 "$(UNKNOWN)",
		"$$(A)":                      "$(A)",
		"$$":                         "$",
		"$A ${A}":                    "$A ${A}",
		"$(A":                        "$(A",
		"tail$":                      "tail$",
		"$()":                        "$()",
	} {
		assert.Equal(t, want, expand(in, lookup), "expand(%q)", in)
	}
}

func TestRepository(t *testing.T) {
	for ref, want := range map[string]string{
		"habitat/redis:latest":                    "habitat/redis",
		"habitat/hab-sup@sha256:0123456789abcdef": "habitat/hab-sup",
		"habring:local":                           "habring",
		"localhost:5000/habring:v1@sha256:01":     "localhost:5000/habring",
		"localhost:5000/habring":                  "localhost:5000/habring",
		"busybox":                                 "busybox",
	} {
		assert.Equal(t, want, Repository(ref), ref)
	}
}

func TestFieldValue(t *testing.T) {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "redis-0", Namespace: "shop", UID: "u1",
		Labels: map[string]string{"app": "redis"}, Annotations: map[string]string{"habitat.sh/ring": "main"}},
		Spec:   corev1.PodSpec{NodeName: NodeName, ServiceAccountName: "habitat"},
		Status: corev1.PodStatus{PodIP: "10.1.2.3", HostIP: "10.1.2.1", PodIPs: []corev1.PodIP{{IP: "10.1.2.3"}}}}
	for field, want := range map[string]string{
		"metadata.name": "redis-0", "metadata.namespace": "shop", "metadata.uid": "u1",
		"metadata.labels['app']": "redis", "metadata.annotations['habitat.sh/ring']": "main",
		"spec.nodeName": NodeName, "spec.serviceAccountName": "habitat",
		"status.podIP": "10.1.2.3", "status.podIPs": "10.1.2.3", "status.hostIP": "10.1.2.1",
	} {
		got, err := fieldValue(p, field)
		assert.NoError(t, err, field)
		assert.Equal(t, want, got, field)
	}
	_, err := fieldValue(p, "status.phase")
	assert.ErrorContains(t, err, `"status.phase"`)
}

// What the container's shell script receives is the value, whatever it holds.
func TestQuoteSurvivesTheShell(t *testing.T) {
	for _, s := range []string{`it's $(x) "y"`, "a\nb", "`id`", "'", "", "; rm -rf /tmp/nothing"} {
		out, err := exec.Command("sh", "-c", "printf %s "+quote(s)).Output()
		require.NoError(t, err)
		assert.Equal(t, s, string(out))
	}
}

// Addresses are given round-robin, as host-local IPAM gives them: a released address
// goes to a new pod only once every other free one has been given.
func TestAllocateRoundRobin(t *testing.T) {
	t.Parallel()
	p := netip.MustParsePrefix("10.0.0.0/29") // .1 the gateway, .2-.6 for pods, .7 broadcast
	r := &Runner{bridge: &podnet.Bridge{Prefix: p, Gateway: netip.MustParseAddr("10.0.0.1")}, ips: map[netip.Addr]bool{}}
	next := func() string {
		a, err := r.allocate()
		require.NoError(t, err)
		return a.String()
	}
	require.Equal(t, "10.0.0.2", next())
	require.Equal(t, "10.0.0.3", next())
	r.release(netip.MustParseAddr("10.0.0.2"))
	require.Equal(t, "10.0.0.4", next(), "not the address just released")
	require.Equal(t, "10.0.0.5", next())
	require.Equal(t, "10.0.0.6", next())
	require.Equal(t, "10.0.0.2", next(), "wrapped around to the one free")
	_, err := r.allocate()
	require.EqualError(t, err, "runner: no free address left in 10.0.0.0/29")
}
