package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/kubernetes"

	"github.com/habring/habring/test/cluster"
	"github.com/habring/habring/test/harness"
	"github.com/habring/habring/test/podnet"
	"github.com/habring/habring/test/runner"
)

// env is the shared end-to-end environment; nil when HABRING_E2E is unset.
var env *environment

type environment struct {
	cluster *cluster.Cluster
	client  kubernetes.Interface
	dir     string
	binary  string
	webhook *harness.Webhook
	// runner runs the pods of namespaces made by runningNamespace; nil (and those tests
	// skipped) where pod networks cannot be made: not root, or no iproute2.
	runner *runner.Runner
	// noRunner says why runner is nil.
	noRunner error
}

func TestMain(m *testing.M) {
	if os.Getenv("HABRING_E2E") == "" {
		fmt.Println("e2e: skipped; run with HABRING_E2E=1 (make e2e) to start a local control plane")
		os.Exit(m.Run())
	}
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "habring-e2e-")
	if err != nil {
		return 0, err
	}
	// The pod network comes first: the API server's certificate names its gateway, where
	// running pods reach the API server.
	bridge, noRunner := harness.PodNetwork(ctx, os.Stdout)
	switch {
	case errors.Is(noRunner, podnet.ErrUnsupported):
		fmt.Println("e2e: pods will not run (tests of running rings skip):", noRunner)
	case noRunner != nil:
		return 0, fmt.Errorf("make the pod network: %w", noRunner)
	}
	opts := cluster.Options{Dir: filepath.Join(dir, "cluster"), ControllerQPS: 200}
	if bridge != nil {
		defer func() { _ = bridge.Close(context.Background()) }()
		opts.APIServerAddresses = []string{bridge.Gateway.String()}
	}
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		return 0, fmt.Errorf("start the local cluster: %w (state and logs in %s)", err, dir)
	}
	defer c.Stop()
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return 0, err
	}
	env = &environment{cluster: c, client: client, dir: dir, binary: filepath.Join(dir, "habring"), noRunner: noRunner}
	fmt.Println("e2e: building habring")
	if err := harness.BuildHabring(ctx, env.binary); err != nil {
		return 0, err
	}
	env.webhook, err = harness.StartWebhook(ctx, dir, env.binary, c.Kubeconfig, "--log-level=debug")
	if err != nil {
		return 0, err
	}
	defer env.webhook.Stop()
	if err := harness.InstallWebhookConfiguration(ctx, client, env.webhook); err != nil {
		return 0, err
	}
	if bridge != nil {
		if env.runner, err = harness.StartRunner(ctx, c, bridge, dir, env.binary); err != nil {
			return 0, err
		}
		defer env.runner.Close()
	}
	code := m.Run()
	if code == 0 {
		_ = os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: failed; cluster and webhook logs kept in %s\n", dir)
	}
	return code, nil
}

func requireEnv(t *testing.T) *environment {
	t.Helper()
	if env == nil {
		t.Skip("set HABRING_E2E=1 (make e2e)")
	}
	return env
}
