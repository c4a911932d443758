// Command demo brings up the local control plane with habring in front of it and a node
// whose pods really run (test/runner: the Supervisor double and the real labeler), applies
// examples/, waits for the ring to form and elect, and prints per pod what habring
// injected, the role the labeler set and the ring the Supervisor is in. make demo runs it
// in the background and make demo-down stops it; see README.
package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
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

	"github.com/habring/habring/contract"
	"github.com/habring/habring/patch"
	"github.com/habring/habring/test/harness"
	"github.com/habring/habring/test/runner"
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
	st, err := harness.StartStack(ctx, dir, 100, os.Stderr)
	if err != nil {
		return err
	}
	defer st.Stop()
	c, client := st.Cluster, st.Client
	fmt.Fprintln(os.Stderr, "demo: applying examples/")
	if err := harness.ApplyFile(ctx, c.Config, "examples/namespace.yaml", ""); err != nil {
		return err
	}
	if err := runHere(ctx, client, "shop"); err != nil {
		return err
	}
	for _, f := range []string{"examples/labeler-rolebinding.yaml", "examples/ring.yaml"} {
		if err := harness.ApplyFile(ctx, c.Config, f, ""); err != nil {
			return err
		}
	}
	fmt.Fprintln(os.Stderr, "demo: waiting for 6 pods, one ring and one leader")
	pods, err := waitForRing(ctx, client, "shop", 6)
	if err != nil {
		return err
	}
	table(ctx, pods, c.Kubeconfig, dir)
	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(c.Kubeconfig+"\n"), 0o644); err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "demo: stopping")
	return nil
}

// runHere sends the namespace's pods to the runner's node and creates the ring key Secret
// examples/ring.yaml names, as its comment tells a user to.
func runHere(ctx context.Context, client kubernetes.Interface, ns string) error {
	n, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	maps.Copy(n.Annotations, runner.NamespaceAnnotations())
	if _, err := client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		return err
	}
	key := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ring-key", Namespace: ns},
		StringData: map[string]string{"ring-key": "SYM-SEC-1\nmain-20261201000000\n\nc2VjcmV0IG9mIHRoZSBkZW1vIHJpbmc="}}
	_, err = client.CoreV1().Secrets(ns).Create(ctx, key, metav1.CreateOptions{})
	return err
}

// waitForRing waits until n pods are Ready, their Supervisors see one ring and one pod is
// labelled leader, for up to 4 minutes; then it returns the pods as they are, formed or
// not: the table shows what happened either way.
func waitForRing(ctx context.Context, client kubernetes.Interface, ns string, n int) ([]corev1.Pod, error) {
	deadline := time.Now().Add(4 * time.Minute)
	last := time.Now()
	for {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		var ready []corev1.Pod
		leaders := 0
		if err == nil {
			for _, p := range list.Items {
				if p.Status.PodIP != "" && p.DeletionTimestamp == nil && harness.PodReady(&p) {
					ready = append(ready, p)
					if p.Labels[contract.LabelRole] == contract.RoleLeader {
						leaders++
					}
				}
			}
		}
		slices.SortFunc(ready, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
		rings, _ := views(ctx, ready)
		done := len(ready) == n && leaders == 1 && len(rings) == 1
		if done || time.Now().After(deadline) {
			return ready, nil
		}
		if time.Since(last) > 10*time.Second {
			fmt.Fprintf(os.Stderr, "demo: %d of %d pods ready, %d ring(s), %d leader(s)\n", len(ready), n, len(rings), leaders)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// views asks every pod's Supervisor which members it holds alive; pods with the same view
// are one ring. It returns the distinct views and each pod's, by pod name.
func views(ctx context.Context, pods []corev1.Pod) ([]string, map[string]string) {
	var rings []string
	of := map[string]string{}
	for _, p := range pods {
		v, err := harness.RingView(ctx, p.Status.PodIP)
		if err != nil {
			of[p.Name] = "(gateway: " + err.Error() + ")"
			continue
		}
		key := strings.Join(v, ",")
		if !slices.Contains(rings, key) {
			rings = append(rings, key)
		}
		of[p.Name] = key
	}
	return rings, of
}

func table(ctx context.Context, pods []corev1.Pod, kubeconfig, dir string) {
	rings, of := views(ctx, pods)
	ringName := func(pod string) string {
		i := slices.Index(rings, of[pod])
		if i < 0 {
			return of[pod]
		}
		return fmt.Sprintf("%c (%d alive)", 'A'+i, strings.Count(of[pod], ",")+1)
	}
	leader := ""
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tWORKLOAD\tORDINAL\tIP\tROLE\tIN RING\tINJECTED PEERS")
	for _, p := range pods {
		owner, _ := patch.OwnerOf(&p)
		ordinal := "-"
		if owner.Kind == patch.KindStatefulSet {
			ordinal = fmt.Sprint(patch.StatefulSetOrdinal(owner.Name, &p))
		}
		peers := p.Annotations[contract.AnnotationPeers]
		if peers == "" {
			peers = "(none: bootstraps the ring)"
		}
		role := p.Labels[contract.LabelRole]
		if role == "" {
			role = "-"
		}
		if role == contract.RoleLeader {
			leader = p.Name
		}
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, owner.Kind, owner.Name, ordinal, p.Status.PodIP, role, ringName(p.Name), peers)
	}
	_ = tw.Flush()
	fmt.Printf("\n%d ring(s) as the Supervisors see them (IN RING: pods with the same letter hold the same members alive).\n", len(rings))
	fmt.Printf("Every pod runs: its Supervisor is the double (test/supervisor), its labeler the real habring-labeler.\n\n")
	fmt.Printf("  export KUBECONFIG=%s\n", kubeconfig)
	fmt.Printf("  kubectl -n shop get pods -L habitat.sh/role -o wide\n")
	fmt.Printf("  curl -s http://%s:9631/census          # a Supervisor's census, from this machine\n", firstIP(pods))
	if leader != "" {
		fmt.Printf("Watch redis-master follow the leader:\n")
		fmt.Printf("  kubectl -n shop get endpointslices -l kubernetes.io/service-name=redis-master -w &\n")
		fmt.Printf("  kubectl -n shop delete pod %s\n", leader)
	}
	fmt.Printf("Logs: %s/webhook.log, %s/runner.log, %s/runner/logs/ (every container)\n", dir, dir, dir)
	fmt.Printf("Stop it: make demo-down\n")
}

func firstIP(pods []corev1.Pod) string {
	if len(pods) == 0 {
		return "<pod IP>"
	}
	return pods[0].Status.PodIP
}
