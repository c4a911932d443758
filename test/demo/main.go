// Command demo brings up the local control plane with habring in front of it and a node
// whose pods really run (test/runner: the Supervisor double running examples/redis with
// this machine's redis-server, and the real labeler), applies examples/, waits for the
// ring to form, elect and replicate, and prints per pod what habring injected, the role
// the labeler set, what its Supervisor says, its Redis's ROLE and offset and the ring it is
// in, then a write through redis-master read back from a replica, then `habring check`'s
// report, which must pass: a demo that fails its own check fails. make demo runs it in the
// background and make demo-down stops it; see README.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
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
	"github.com/habring/habring/internal/patch"
	"github.com/habring/habring/test/harness"
	"github.com/habring/habring/test/runner"
	"github.com/habring/habring/test/supervisor"
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
	if err := harness.RedisSupported(); err != nil {
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
	password, err := runHere(ctx, client, "shop")
	if err != nil {
		return err
	}
	for _, f := range []string{"examples/labeler-rolebinding.yaml", "examples/ring.yaml"} {
		if err := harness.ApplyFile(ctx, c.Config, f, ""); err != nil {
			return err
		}
	}
	fmt.Fprintln(os.Stderr, "demo: waiting for 6 pods, one ring, one leader and its Redis replicated")
	pods, err := waitForRing(ctx, client, "shop", 6, password)
	if err != nil {
		return err
	}
	table(ctx, st, pods, password, c.Kubeconfig, dir)
	if err := selfCheck(ctx, st.Habring, c.Kubeconfig); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(c.Kubeconfig+"\n"), 0o644); err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "demo: stopping")
	return nil
}

// selfCheck runs `habring check` on the demo as a user would, prints its report after the
// table, and fails the demo when the check fails.
func selfCheck(ctx context.Context, habring, kubeconfig string) error {
	fmt.Fprintln(os.Stderr, "demo: habring check")
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, habring, "check", "--kubeconfig="+kubeconfig)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	fmt.Printf("\n$ habring check --kubeconfig=%s\n%s", kubeconfig, out.String())
	if err != nil {
		_, _ = os.Stderr.Write(out.Bytes())
		return fmt.Errorf("the demo fails its own habring check (%w); its report is above", err)
	}
	return nil
}

// runHere sends the namespace's pods to the runner's node and creates the Secrets
// examples/ring.yaml names, as its comments tell a user to; it returns the Redis password.
func runHere(ctx context.Context, client kubernetes.Interface, ns string) (string, error) {
	n, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	maps.Copy(n.Annotations, runner.NamespaceAnnotations())
	if _, err := client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		return "", err
	}
	return harness.ExampleSecrets(ctx, client, ns)
}

// waitForRing waits until n pods are Ready, their Supervisors see one ring, one pod is
// labelled leader and its Redis is a master with the other redis pods as replicas, for up
// to 4 minutes; then it returns the pods as they are, formed or not: the table shows what
// happened either way.
func waitForRing(ctx context.Context, client kubernetes.Interface, ns string, n int, password string) ([]corev1.Pod, error) {
	deadline := time.Now().Add(4 * time.Minute)
	last := time.Now()
	for {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		var ready []corev1.Pod
		leaders, replicas := 0, -1
		if err == nil {
			for _, p := range list.Items {
				if p.Status.PodIP != "" && p.DeletionTimestamp == nil && harness.PodReady(&p) {
					ready = append(ready, p)
					if p.Labels[contract.LabelRole] == contract.RoleLeader {
						leaders++
						if r, err := harness.Role(ctx, p.Status.PodIP, password); err == nil && r.Role == "master" {
							replicas = len(r.Replicas)
						}
					}
				}
			}
		}
		slices.SortFunc(ready, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
		rings, _ := views(ctx, ready)
		done := len(ready) == n && leaders == 1 && len(rings) == 1 && replicas == redisPods(ready)-1
		if done || time.Now().After(deadline) {
			return ready, nil
		}
		if time.Since(last) > 10*time.Second {
			fmt.Fprintf(os.Stderr, "demo: %d of %d pods ready, %d ring(s), %d leader(s), %d replica(s) of its Redis\n", len(ready), n, len(rings), leaders, max(replicas, 0))
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

// redisPods counts the pods of the redis Deployment.
func redisPods(pods []corev1.Pod) int {
	n := 0
	for _, p := range pods {
		if p.Labels["app"] == "redis" {
			n++
		}
	}
	return n
}

// supervisorView is what a pod's Supervisor says of its own service group: leader,
// follower, or the election's status.
func supervisorView(ctx context.Context, ip string) string {
	c, err := harness.Gateway[supervisor.Census](ctx, ip, "/census")
	if err != nil {
		return "(gateway: " + err.Error() + ")"
	}
	for _, g := range c.CensusGroups {
		if _, ok := g.Population[c.LocalMemberID]; !ok || g.ElectionStatus == supervisor.ElectionNone {
			continue
		}
		switch {
		case g.ElectionStatus != supervisor.ElectionFinished:
			return g.ElectionStatus
		case g.LeaderID != nil && *g.LeaderID == c.LocalMemberID:
			return "leader"
		default:
			return "follower"
		}
	}
	return "-"
}

func table(ctx context.Context, st *harness.Stack, pods []corev1.Pod, password, kubeconfig, dir string) {
	rings, of := views(ctx, pods)
	ringName := func(pod string) string {
		i := slices.Index(rings, of[pod])
		if i < 0 {
			return of[pod]
		}
		return fmt.Sprintf("%c (%d alive)", 'A'+i, strings.Count(of[pod], ",")+1)
	}
	var leader, replica, master corev1.Pod
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tWORKLOAD\tORDINAL\tIP\tLABEL\tSUPERVISOR\tREDIS ROLE\tOFFSET\tIN RING\tINJECTED PEERS")
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
		redisRole, offset := "-", "-"
		if p.Labels["app"] == "redis" {
			if r, err := harness.Role(ctx, p.Status.PodIP, password); err != nil {
				redisRole = "(" + err.Error() + ")"
			} else {
				redisRole, offset = r.String(), fmt.Sprint(r.Offset)
				if r.Role == "master" {
					master = p
				} else if replica.Name == "" {
					replica = p
				}
			}
		}
		if role == contract.RoleLeader {
			leader = p
		}
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, owner.Kind, owner.Name, ordinal, p.Status.PodIP, role,
			supervisorView(ctx, p.Status.PodIP), redisRole, offset, ringName(p.Name), peers)
	}
	_ = tw.Flush()
	fmt.Printf("\n%d ring(s) as the Supervisors see them (IN RING: pods with the same letter hold the same members alive).\n", len(rings))
	fmt.Printf("LABEL is habitat.sh/role as the labeler set it; SUPERVISOR what the pod's Supervisor says; REDIS ROLE its redis-server's ROLE.\n")
	fmt.Printf("Every pod runs: its Supervisor is the double (test/supervisor) running examples/redis with redis-server, its labeler the real habring-labeler.\n\n")
	if leader.Name != "" && replica.Name != "" && master.Name == leader.Name {
		fmt.Println(writeThrough(ctx, leader, replica, password))
		fmt.Println()
	}
	fmt.Printf("  export KUBECONFIG=%s\n", kubeconfig)
	fmt.Printf("  kubectl -n shop get pods -L habitat.sh/role -o wide\n")
	fmt.Printf("  curl -s http://%s:9631/census          # a Supervisor's census, from this machine\n", firstIP(pods))
	fmt.Printf("By hand, with the password from the Secret (pod IPs are on this machine's bridge; no kube-proxy here, so use the address redis-master's EndpointSlice lists):\n")
	fmt.Printf("  export REDISCLI_AUTH=$(kubectl -n shop get secret %s -o jsonpath='{.data.password}' | base64 -d)\n", harness.RedisAuthSecret)
	if leader.Name != "" {
		fmt.Printf("  kubectl -n shop get endpointslices -l kubernetes.io/service-name=redis-master -o jsonpath='{..addresses}'   # %s\n", leader.Status.PodIP)
		fmt.Printf("  redis-cli -h %s SET greeting hello       # through redis-master\n", leader.Status.PodIP)
	}
	if replica.Name != "" {
		if n, err := st.Runner.Network("shop", replica.Name); err == nil {
			fmt.Printf("  ip netns exec %s redis-cli GET greeting   # inside replica %s, on its own 127.0.0.1\n", n.Name, replica.Name)
			fmt.Printf("  ip netns exec %s redis-cli ROLE\n", n.Name)
		}
	}
	if leader.Name != "" {
		fmt.Printf("Watch redis-master and the master follow the leader:\n")
		fmt.Printf("  kubectl -n shop get endpointslices -l kubernetes.io/service-name=redis-master -w &\n")
		fmt.Printf("  kubectl -n shop delete pod %s\n", leader.Name)
	}
	fmt.Printf("Logs: %s/webhook.log, %s/runner.log, %s/runner/logs/ (every container; redis-server's lines are in the redis container's)\n", dir, dir, dir)
	fmt.Printf("Stop it: make demo-down\n")
}

// writeThrough writes a key through redis-master (its one ready endpoint, the leader),
// waits for a replica's acknowledgement and reads the key back from a replica.
func writeThrough(ctx context.Context, leader, replica corev1.Pod, password string) string {
	value := "written at " + time.Now().UTC().Format(time.RFC3339)
	m := harness.Redis(leader.Status.PodIP, password)
	defer func() { _ = m.Close() }()
	if err := m.Set(ctx, "habring:demo", value, 0).Err(); err != nil {
		return "write through redis-master: " + err.Error()
	}
	acked, err := m.Wait(ctx, 1, 5*time.Second).Result()
	if err != nil {
		return "WAIT 1 through redis-master: " + err.Error()
	}
	r := harness.Redis(replica.Status.PodIP, password)
	defer func() { _ = r.Close() }()
	got, err := r.Get(ctx, "habring:demo").Result()
	if err != nil {
		return "read back from " + replica.Name + ": " + err.Error()
	}
	return fmt.Sprintf("SET habring:demo %q through redis-master (%s, %s): %d replica(s) acknowledged; GET from replica %s: %q",
		value, leader.Name, leader.Status.PodIP, acked, replica.Name, got)
}

func firstIP(pods []corev1.Pod) string {
	if len(pods) == 0 {
		return "<pod IP>"
	}
	return pods[0].Status.PodIP
}
