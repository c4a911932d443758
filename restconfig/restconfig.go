// Package restconfig loads a client-go rest.Config from a kubeconfig or the pod's service
// account. It is its own package so that the labeler can link it without client-go's
// typed clients (package ring links those).
package restconfig

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Load loads the kubeconfig at path, or the in-cluster config (the pod's service account
// token) when path is empty, and names the caller in userAgent.
func Load(path, userAgent string) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if path == "" {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w (outside a cluster, pass --kubeconfig)", err)
		}
	} else if rc, err = clientcmd.BuildConfigFromFlags("", path); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	rc.UserAgent = userAgent
	return rc, nil
}
