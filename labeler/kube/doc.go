// Package kube is the labeler's Kubernetes API client: the few requests a labeler makes
// (its own pod, the pods labelled leader, its group's Lease, its ring's EndpointSlices)
// over net/http and encoding/json, with just the fields it reads.
//
// It exists for memory, not for lack of client-go: every ring pod runs a labeler, and a
// labeler on client-go's REST client, scheme and informer idles at 16 MiB resident, most
// of it client-go's and the API types' code, which a Go program keeps mapped and touched
// (README "Performance"). On this package it idles at about 11 MiB. What it keeps of
// client-go's behaviour, each tested here and against a real API server by the e2e
// suite: in-cluster credentials with the token file re-read as it rotates, a kubeconfig's
// server, CA and token or client certificate, Status errors the caller can tell apart,
// and watches that resume from their resourceVersion and relist when it is gone.
// Objects it writes back (a Lease) keep every metadata field it does not model.
package kube
