package ring

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/habring/habring/internal/kubeconfig"
)

// Clients are the API clients a Cache reads through.
type Clients struct {
	Kube kubernetes.Interface
	Meta metadata.Interface
	// Host is the API server's address, for messages that say where a problem is.
	Host string
}

// Connect builds the clients from the kubeconfig at path (in-cluster when empty).
func Connect(path, userAgent string) (*Clients, error) {
	rc, err := kubeconfig.Load(path, userAgent)
	if err != nil {
		return nil, err
	}
	return connect(rc)
}

// ConnectAsKubectl builds the clients as kubectl finds its cluster: the kubeconfig at
// path, else $KUBECONFIG, else ~/.kube/config, else the in-cluster config; kubeContext,
// when set, picks the context.
func ConnectAsKubectl(path, kubeContext, userAgent string) (*Clients, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("find the cluster: %w (pass --kubeconfig, set KUBECONFIG, or run in a pod)", err)
	}
	rc.UserAgent = userAgent
	return connect(rc)
}

func connect(rc *rest.Config) (*Clients, error) {
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	meta, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("metadata client: %w", err)
	}
	return &Clients{Kube: kube, Meta: meta, Host: rc.Host}, nil
}

// Live starts a Cache on c and returns it once synced, for a one-shot reader such as
// `habring render --kubeconfig`. Its informers run until ctx ends.
func (c *Clients) Live(ctx context.Context, timeout time.Duration) (*Cache, error) {
	cache, err := NewCache(c.Kube, c.Meta)
	if err != nil {
		return nil, err
	}
	cache.Start(ctx)
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !cache.WaitForSync(sctx) {
		return nil, fmt.Errorf("caches of %s did not sync in %s: is the API server reachable, and may this user list statefulsets, deployments and endpointslices?", c.Host, timeout)
	}
	return cache, nil
}
