package contract

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Member is one ready address of the ring, from an EndpointSlice labelled habitat.sh/ring.
type Member struct {
	IP      string
	PodName string // the endpoint's targetRef name; "" when it has none
}

// BootstrapSet is a StatefulSet of the ring, whose pods have stable DNS names.
type BootstrapSet struct {
	Name        string
	ServiceName string
	Replicas    int32
	// Ready is how many of the lowest ordinals are ready, so that their stable names
	// resolve: a Supervisor fails to start on a --peer name that does not.
	Ready int32
}

// Ring is the live state of one ring in one namespace, as the webhook or a labeler found it.
type Ring struct {
	Members      []Member
	StatefulSets []BootstrapSet
}

// AddressTypeIPv4 is the EndpointSlice address type habring reads.
const AddressTypeIPv4 = "IPv4"

// EndpointMember is the member an EndpointSlice endpoint stands for, and whether it is
// one: a ready endpoint (an unset ready condition counts as ready, as the EndpointSlice
// API says) of an IPv4 slice (Habitat's --sys-ip-address and --peer resolution are
// IPv4-only) with an address; its pod is the targetRef when that is a Pod.
func EndpointMember(addressType string, addresses []string, ready *bool, targetKind, targetName string) (Member, bool) {
	if addressType != AddressTypeIPv4 || len(addresses) == 0 || (ready != nil && !*ready) {
		return Member{}, false
	}
	m := Member{IP: addresses[0]}
	if targetKind == "Pod" {
		m.PodName = targetName
	}
	return m, true
}

// LiveMembers orders the ring's ready members: StatefulSet pods of the ring by ordinal,
// then everything else by pod name, then IP; the pod itself and repeated IPs (a pod behind
// two labelled Services) are dropped. The webhook's peer list and the labeler's peer
// watch file both follow it.
func LiveMembers(podName string, ring Ring) []Member {
	type keyed struct {
		Member
		ordinal int // -1 when not a pod of a ring StatefulSet
	}
	ks := make([]keyed, 0, len(ring.Members))
	for _, m := range ring.Members {
		if podName != "" && m.PodName == podName {
			continue
		}
		k := keyed{Member: m, ordinal: -1}
		for _, s := range ring.StatefulSets {
			if n := Ordinal(s.Name, m.PodName); n >= 0 {
				k.ordinal = n
				break
			}
		}
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		if (a.ordinal < 0) != (b.ordinal < 0) {
			if a.ordinal >= 0 {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.ordinal, b.ordinal), cmp.Compare(a.PodName, b.PodName), cmp.Compare(a.IP, b.IP))
	})
	out := make([]Member, 0, len(ks))
	seen := make(map[string]bool, len(ks))
	for _, k := range ks {
		if !seen[k.IP] {
			seen[k.IP] = true
			out = append(out, k.Member)
		}
	}
	return out
}

// Ordinal is the ordinal in podName of a pod of the StatefulSet named sts (the suffix
// after "<sts>-", without leading zeros), or -1 when podName is not one of its pods.
func Ordinal(sts, podName string) int {
	suffix, ok := strings.CutPrefix(podName, sts+"-")
	if !ok || suffix == "" || (len(suffix) > 1 && suffix[0] == '0') {
		return -1
	}
	n, err := strconv.Atoi(suffix)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// Bootstraps reports whether a pod with these annotations was admitted to start its ring,
// as the webhook recorded it in AnnotationBootstrap: injected, with no peer, as pod 0 of
// a StatefulSet whose ring had no live member. A pod admitted before that annotation
// existed reports false (README "Migration").
func Bootstraps(podAnnotations map[string]string) bool {
	return podAnnotations[AnnotationStatus] == StatusInjected && podAnnotations[AnnotationPeers] == "" &&
		podAnnotations[AnnotationBootstrap] == BootstrapTrue
}
