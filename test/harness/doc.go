// Package harness holds what the end-to-end tests and `make demo` share on top of the
// local control plane (../cluster): habring webhook as a host process with its own
// certificates, the webhook configuration from deploy/ pointed at it, and server-side
// apply of the repository's manifests.
package harness
