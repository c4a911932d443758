// Package kubeconfig is how habring's commands find their API server: the kubeconfig file
// given, or with none the in-cluster config (the pod's service account token, which
// client-go reads again as kubelet rotates it). The webhook, `habring render` and `check`
// (package ring) and the labeler share it; it imports client-go's rest and clientcmd only,
// not package ring's informers.
package kubeconfig

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Load loads the kubeconfig at path, or with path empty the in-cluster config, and sets
// its User-Agent.
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
