// Package helm tests the Helm chart in deploy/helm/habring with the Helm SDK: lint,
// rendering against deploy/'s kustomize output, and (HABRING_E2E=1) a real install on the
// local control plane whose webhook pods run on the test runner and admit ring pods.
//
// It is a module of its own: the Helm SDK's dependencies (ORAS, a registry, SQL drivers)
// stay out of habring's go.mod.
package helm
