// Package certs owns the webhook's serving certificate: it loads a key pair from files
// (cert-manager's Secret, mounted as a volume), keeps serving the last good pair, and
// swaps in a new one when the files change, without a restart.
//
// It must not know about admission or Kubernetes objects.
package certs
