// Package ring reads a ring's live state from the cluster: the workloads that own ring pods
// and the ring's ready members, from informer caches (Cache, a patch.Source), and the API
// clients those caches read through (Connect). The webhook admits from it, and
// `habring render --kubeconfig` previews against it.
//
// It decides nothing about peers or pods (package patch does) and serves no HTTP.
package ring
