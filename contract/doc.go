// Package contract holds what habring's parts agree on without any Kubernetes types: the
// names that are its API (README "Annotations and labels"), the Supervisor's defaults, and
// the order of a ring's live members. It imports only the standard library; package patch
// builds the webhook's decisions on it, and the labeler and `habring check` read pods by it.
//
// It is the one product package outside internal/ on purpose: a program that reads or
// writes habring's annotations and labels (a controller, a policy test) may import it, and
// its names change only as README's "Annotations and labels" does.
package contract
