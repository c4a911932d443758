// Package check is `habring check`: like `linkerd check`, a list of checks of a live
// cluster, each passed (✓), failed (×, with the command that fixes it) or a warning (‼):
// the webhook configuration and the Service, endpoints and certificate behind it, the
// labeler's RBAC and policies, and per selected namespace its labeler RoleBinding and its
// rings (members, dead members, pods labelled leader per service group, ring pods not
// injected and why). `--pod` explains one pod's admission with patch.Injector.Admit, the
// webhook's own decision, on the live state and with the installed webhook's options.
package check
