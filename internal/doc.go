// Package internal holds habring's product packages: the admission core (patch), the
// ring's live state (ring), the webhook server (webhook), the labeler sidecar (labeler),
// `habring render` (render) and `habring check` (check), and what they share (certs,
// connlimit, logging). They are internal on purpose: their Go API changes with habring and
// is no one's to build on. What a program may rely on is the names habring reads and
// writes on pods and workloads, package contract, and the commands' flags and outputs.
package internal
