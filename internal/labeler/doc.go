// Package labeler is the sidecar beside each ring Supervisor. It reads the Supervisor's
// /census and keeps its own pod's habitat.sh/role label (leader, follower or none) true,
// so ordinary Services can select the elected leader; in watch-file mode it also keeps the
// Supervisor's --peer-watch-file filled with the ring's live members.
//
// One file a concern: census.go decides the role from a census, gateway.go reads it,
// role.go is the label loop, fence.go and lease.go the leader Lease (client-go's leader
// election), leasewatch.go the group's Lease as every labeler watches it, joined.go the
// ring-joined condition, peerfile.go the watch file (a client-go reflector on the ring's
// EndpointSlices), events.go the Events on its pod, api.go the client, its informers and
// how failed requests are counted and said, server.go health and metrics, config.go the flags'
// Config, labeler.go wiring and the life cycle.
//
// It writes its own pod's role label and ring-joined condition, only when they change,
// its group's Lease, and another pod's role only from leader to none while it holds the
// Lease.
package labeler
