// Package patch is habring's pure core: given a pod, the facts about its workload and its
// ring, it decides what the Habitat Supervisor in that pod must be told (the peer list,
// the flags, the labeler sidecar) and returns the mutated pod and the JSON patch that
// turns the admitted pod into it. The patch is written as Mutate makes each change (add a
// volume, append args, set an annotation), not computed as a diff; every value in the pod
// and the patch is built for that call and shared with nothing else.
//
// It owns the peer algorithm; the names it writes (README "Annotations and labels") and
// the order of live members are package contract's, shared with the labeler. It must not
// touch the network, the API server, a clock or a logger: everything it needs arrives as
// values, so every decision can be golden-tested.
package patch
