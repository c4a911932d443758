// Package check is `habring check`: like `linkerd check`, a catalogue of checks of a live
// cluster (catalogue.go), each a piece of data (ID, description, hint, severity, fatal,
// retried by --wait) run by one runner (runner.go) for each scope of its category: the
// Kubernetes API; the installation (webhook configuration, Service, endpoints,
// certificate, the labeler's RBAC and policies); each selected namespace (its labeler
// RoleBinding, the labelers' denials, ring pods not injected and why); each ring (ready
// pods, dead members, pods labelled leader per service group). Reads are shared by the
// checks of a run (cached) and made once, not per pod. `--pod` explains one pod's
// admission with patch.Injector.Admit, the webhook's own decision, on the live state and
// with the installed webhook's options. Reports are text or -o json (SchemaVersion).
package check
