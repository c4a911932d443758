// Package patch is habring's pure core: given a pod, the facts about its workload and its
// ring, it decides what the Habitat Supervisor in that pod must be told (the peer list,
// the flags, the labeler sidecar) and returns the JSON patch that does it. The patch is
// written as Mutate makes each change (add a volume, append args, set an annotation),
// reading the pod and never changing it, not computed as a diff; the pod as admitted is
// that patch applied (Apply), the same way the API server applies it. An Injector holds
// the options and what every pod of them shares (the labeler container, encoded once);
// nothing in it changes after NewInjector, and nothing a caller gets back is shared.
//
// It owns the peer algorithm; the names it writes (README "Annotations and labels") and
// the order of live members are package contract's, shared with the labeler. It must not
// touch the network, the API server, a clock or a logger: everything it needs arrives as
// values, so every decision can be golden-tested.
package patch
