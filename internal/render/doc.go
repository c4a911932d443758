// Package render is `habring render`: given StatefulSet and Deployment manifests, it
// builds the pods their controllers would create and admits them through the same
// patch.Injector.Admit the webhook uses, so users see their pods as admitted before applying
// anything (as `istioctl kube-inject` and `linkerd inject` show theirs).
//
// It reads nothing itself: the command hands it bytes, and a live ring when asked.
package render

// DefaultImage is the labeler image render shows when none is given.
const DefaultImage = "ghcr.io/habring/habring:v0.1.0"
