// Package connlimit caps the connections an HTTP server holds open, so a flood of idle or
// slow clients cannot grow its memory without bound, while the requests that matter (the
// API server's AdmissionReviews, kubelet's probes) still get in.
//
// At the cap, a new connection first sheds the oldest connection that is not serving a
// request (never sent one, or idle between keep-alive requests); a connection in the
// middle of a request is never cut by the cap, so a caller's request in flight always
// completes. Only when every held connection is serving a request is the new one closed.
// The server's own timeouts (http.Server's ReadHeaderTimeout, ReadTimeout, WriteTimeout,
// IdleTimeout) bound how long any of them may take; this package bounds how many.
//
// It knows nothing about admission or Kubernetes.
package connlimit
