package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"k8s.io/client-go/kubernetes"

	"github.com/habring/habring/test/cluster"
	"github.com/habring/habring/test/podnet"
	"github.com/habring/habring/test/runner"
)

// Stack is everything a ring needs to run locally: a pod network, the control plane with
// habring's webhook in front of it, a node whose pods run, and the labelers' cluster-wide
// permissions (deploy/labeler-rbac.yaml, deploy/labeler-policy.yaml).
type Stack struct {
	Bridge  *podnet.Bridge
	Cluster *cluster.Cluster
	Client  kubernetes.Interface
	Webhook *Webhook
	Runner  *runner.Runner
	// Habring is the habring binary the webhook and the labelers run.
	Habring string
}

// StartStack starts a Stack with its state, logs and binaries under dir. Pods run as
// processes in network namespaces: it needs root, iproute2 and util-linux.
func StartStack(ctx context.Context, dir string, controllerQPS int, progress io.Writer, webhookArgs ...string) (_ *Stack, err error) {
	s := &Stack{Habring: filepath.Join(dir, "habring")}
	defer func() { // what started is stopped, whichever step failed
		if err != nil {
			s.Stop()
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if s.Bridge, err = PodNetwork(ctx, progress); err != nil {
		if errors.Is(err, podnet.ErrUnsupported) {
			return nil, fmt.Errorf("pods run as processes in network namespaces of their own: %w", err)
		}
		return nil, err
	}
	if s.Cluster, err = cluster.Start(ctx, cluster.Options{Dir: filepath.Join(dir, "cluster"), ControllerQPS: controllerQPS,
		Progress: progress, APIServerAddresses: []string{s.Bridge.Gateway.String()}}); err != nil {
		return nil, err
	}
	if s.Client, err = kubernetes.NewForConfig(s.Cluster.Config); err != nil {
		return nil, err
	}
	fmt.Fprintln(progress, "building habring")
	if err := BuildHabring(ctx, s.Habring); err != nil {
		return nil, err
	}
	fmt.Fprintln(progress, "starting habring webhook")
	if s.Webhook, err = StartWebhook(ctx, dir, s.Habring, s.Cluster.Kubeconfig, webhookArgs...); err != nil {
		return nil, err
	}
	if err := InstallWebhookConfiguration(ctx, s.Client, s.Webhook); err != nil {
		return nil, err
	}
	fmt.Fprintln(progress, "building the Supervisor double, starting the node that runs pods")
	if s.Runner, err = StartRunner(ctx, s.Cluster, s.Bridge, dir, s.Habring); err != nil {
		return nil, err
	}
	for _, f := range []string{"deploy/labeler-rbac.yaml", "deploy/labeler-policy.yaml"} {
		if err := ApplyFile(ctx, s.Cluster.Config, f, ""); err != nil {
			return nil, fmt.Errorf("apply %s: %w", f, err)
		}
	}
	return s, nil
}

// Stop stops what StartStack started, last first, and removes the pod network.
func (s *Stack) Stop() {
	if s.Runner != nil {
		s.Runner.Close()
	}
	if s.Webhook != nil {
		s.Webhook.Stop()
	}
	if s.Cluster != nil {
		s.Cluster.Stop()
	}
	if s.Bridge != nil {
		_ = s.Bridge.Close(context.Background())
	}
}
