// Command demo brings up the local control plane with habring in front of it, applies
// examples/, and prints what habring injected. make demo runs it in the background and
// make demo-down stops it; see README.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/habring/habring/patch"
	"github.com/habring/habring/test/cluster"
	"github.com/habring/habring/test/harness"
)

func main() {
	dir := flag.String("dir", ".demo", "state directory: cluster, webhook logs, kubeconfig")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		_ = os.WriteFile(filepath.Join(*dir, "failed"), []byte(err.Error()+"\n"), 0o644)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	c, err := cluster.Start(ctx, cluster.Options{Dir: filepath.Join(dir, "cluster"), ControllerQPS: 100})
	if err != nil {
		return err
	}
	defer c.Stop()
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	bin := filepath.Join(dir, "habring")
	fmt.Fprintln(os.Stderr, "demo: building habring")
	if err := harness.BuildHabring(ctx, bin); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "demo: starting habring webhook")
	w, err := harness.StartWebhook(ctx, dir, bin, c.Kubeconfig)
	if err != nil {
		return err
	}
	defer w.Stop()
	if err := harness.InstallWebhookConfiguration(ctx, client, w); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "demo: applying examples/")
	for _, f := range []string{"deploy/labeler-rbac.yaml", "examples/namespace.yaml", "examples/labeler-rolebinding.yaml", "examples/ring.yaml"} {
		if err := harness.ApplyFile(ctx, c.Config, f, ""); err != nil {
			return err
		}
	}
	pods, err := waitForPods(ctx, client, "shop", 6)
	if err != nil {
		return err
	}
	table(pods, c.Kubeconfig, w.Log)
	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(c.Kubeconfig+"\n"), 0o644); err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "demo: stopping")
	return nil
}

func waitForPods(ctx context.Context, client kubernetes.Interface, ns string, n int) ([]corev1.Pod, error) {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			var ready []corev1.Pod
			for _, p := range list.Items {
				if p.Status.PodIP != "" && p.DeletionTimestamp == nil {
					ready = append(ready, p)
				}
			}
			if len(ready) >= n {
				slices.SortFunc(ready, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
				return ready, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("fewer than %d pods in %s after 3 minutes", n, ns)
}

func table(pods []corev1.Pod, kubeconfig, webhookLog string) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tWORKLOAD\tORDINAL\tRING\tIP\tINJECTED PEERS")
	for _, p := range pods {
		owner, _ := patch.OwnerOf(&p)
		ordinal := "-"
		if owner.Kind == patch.KindStatefulSet {
			ordinal = fmt.Sprint(patch.StatefulSetOrdinal(owner.Name, &p))
		}
		peers := p.Annotations[patch.AnnotationPeers]
		if peers == "" {
			peers = "(none: bootstraps the ring)"
		}
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\n", p.Name, owner.Kind, owner.Name, ordinal, p.Labels[patch.LabelRing], p.Status.PodIP, peers)
	}
	_ = tw.Flush()
	fmt.Printf("\nThe cluster keeps running (pods are simulated by kwok; no Supervisor or labeler really runs).\n")
	fmt.Printf("  export KUBECONFIG=%s\n  kubectl -n shop get pods -L habitat.sh/ring -o wide\n", kubeconfig)
	fmt.Printf("  webhook log: %s\n  stop it:     make demo-down\n", webhookLog)
}
