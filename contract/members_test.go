package contract

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEndpointMember(t *testing.T) {
	t.Parallel()
	yes, no := true, false
	for name, c := range map[string]struct {
		addressType string
		addresses   []string
		ready       *bool
		kind, pod   string
		want        Member
		ok          bool
	}{
		"ready pod":               {AddressTypeIPv4, []string{"10.0.0.1", "10.0.0.2"}, &yes, "Pod", "db-0", Member{IP: "10.0.0.1", PodName: "db-0"}, true},
		"ready unset counts":      {AddressTypeIPv4, []string{"10.0.0.1"}, nil, "Pod", "db-0", Member{IP: "10.0.0.1", PodName: "db-0"}, true},
		"not ready":               {AddressTypeIPv4, []string{"10.0.0.1"}, &no, "Pod", "db-0", Member{}, false},
		"IPv6 slice":              {"IPv6", []string{"fd00::1"}, &yes, "Pod", "db-0", Member{}, false},
		"FQDN slice":              {"FQDN", []string{"db.example"}, &yes, "", "", Member{}, false},
		"no address":              {AddressTypeIPv4, nil, &yes, "Pod", "db-0", Member{}, false},
		"target not a pod":        {AddressTypeIPv4, []string{"10.0.0.1"}, &yes, "Node", "n1", Member{IP: "10.0.0.1"}, true},
		"no target: address only": {AddressTypeIPv4, []string{"10.0.0.1"}, nil, "", "", Member{IP: "10.0.0.1"}, true},
	} {
		m, ok := EndpointMember(c.addressType, c.addresses, c.ready, c.kind, c.pod)
		require.Equal(t, c.ok, ok, name)
		require.Equal(t, c.want, m, name)
	}
}

func TestOrdinal(t *testing.T) {
	t.Parallel()
	for pod, want := range map[string]int{"db-0": 0, "db-12": 12, "db-01": -1, "db-": -1, "db-x": -1, "db--1": -1, "dbx-1": -1, "db-web-1": -1, "": -1} {
		require.Equal(t, want, Ordinal("db", pod), pod)
	}
	require.Equal(t, 1, Ordinal("db-web", "db-web-1"))
}

func TestBootstraps(t *testing.T) {
	t.Parallel()
	injected := func(peers, bootstrap string) map[string]string {
		return map[string]string{AnnotationStatus: StatusInjected, AnnotationPeers: peers, AnnotationBootstrap: bootstrap,
			AnnotationPeersReason: "bootstrap: ordinal 0 of StatefulSet db with no live member starts the ring"}
	}
	require.True(t, Bootstraps(injected("", BootstrapTrue)))
	require.False(t, Bootstraps(injected("10.0.0.1", BootstrapTrue)), "given peers")
	require.False(t, Bootstraps(injected("", BootstrapFalse)), "no peers but not admitted as the bootstrap pod")
	require.False(t, Bootstraps(injected("", "")), "admitted by a release that did not record the decision: the prose is not read")
	require.False(t, Bootstraps(map[string]string{AnnotationBootstrap: BootstrapTrue}), "not injected")
	require.False(t, Bootstraps(nil))
}
