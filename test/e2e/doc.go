// Package e2e proves habring against a real control plane (../cluster): a real API
// server applies the webhook configuration from deploy/ and our patches, real
// controllers create, retry and publish endpoints. It runs only with HABRING_E2E=1
// (make e2e); the first run builds the control plane, which takes about 15 minutes.
package e2e
