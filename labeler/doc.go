// Package labeler is the sidecar beside each ring Supervisor. It reads the Supervisor's
// /census and keeps its own pod's habitat.sh/role label (leader, follower or none) true,
// so ordinary Services can select the elected leader; in watch-file mode it also keeps the
// Supervisor's --peer-watch-file filled with the ring's live members.
//
// It writes only to its own pod, only that label, and only when the value changes.
package labeler
