// Package contract holds what habring's parts agree on without any Kubernetes types: the
// names that are its API (README "Annotations and labels"), the Supervisor's defaults, and
// the order of a ring's live members. It imports only the standard library, so the
// labeler sidecar, which every ring pod runs, links no Kubernetes client machinery
// (docs/performance.md); package patch builds the webhook's decisions on it.
package contract
