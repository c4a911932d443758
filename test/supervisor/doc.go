// Package supervisor is the Habitat Supervisor double of habring's tests: the `hab sup run`
// arguments and environment habring injects (Parse), a member on a real SWIM layer
// (github.com/hashicorp/memberlist) with butterfly's membership rumors, timers, suspicion,
// departure timeout, quorum and leader election on top (Start), the service it supervises
// from a plan directory as the Supervisor does (LoadPlan, Service: templates rendered
// every tick, hooks, restarts, health, suitability), and the HTTP gateway's /census,
// /butterfly and /services (Gateway). README.md lists each behaviour, the Habitat source
// file it follows, its test, and what is not modelled.
//
// It is test equipment: the product never imports it. cmd/hab-sup-double is its binary.
package supervisor
