// Command localcluster builds and runs the local control plane from the command line:
//
//	go run ./test/cluster/cmd/localcluster -dir /tmp/habring-cluster   # until ^C
//	go run ./test/cluster/cmd/localcluster -build-only                 # warm the build
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/habring/habring/test/cluster"
)

func main() {
	dir := flag.String("dir", "", "state directory (etcd data, keys, logs, kubeconfig); default a new temporary directory")
	buildOnly := flag.Bool("build-only", false, "build the binaries and exit")
	qps := flag.Int("controller-qps", 100, "kube-controller-manager --kube-api-qps")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *buildOnly, *qps); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string, buildOnly bool, qps int) error {
	opts := cluster.Options{Dir: dir, ControllerQPS: qps}
	if buildOnly {
		return cluster.Build(ctx, opts)
	}
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "habring-cluster-")
		if err != nil {
			return err
		}
		opts.Dir = d
	}
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer c.Stop()
	fmt.Printf("export KUBECONFIG=%s\n", c.Kubeconfig)
	fmt.Fprintln(os.Stderr, "localcluster: running; ^C stops it")
	<-ctx.Done()
	return nil
}
