// Package labeler is the sidecar beside each ring Supervisor. It reads the Supervisor's
// /census and keeps its own pod's habitat.sh/role label (leader, follower or none) true,
// so ordinary Services can select the elected leader; in watch-file mode it also keeps the
// Supervisor's --peer-watch-file filled with the ring's live members.
//
// One file a concern: census.go decides the role from a census, gateway.go reads it,
// role.go is the label loop, peerfile.go the watch file, server.go health and metrics,
// config.go the flags' Config, labeler.go wiring and the life cycle.
//
// It writes only to its own pod, only that label, and only when the value changes.
package labeler
