// Package cluster builds and runs a real Kubernetes control plane on loopback for the
// end-to-end tests and `make demo`: kube-apiserver, kube-controller-manager and
// kube-scheduler from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3/embed (all
// built from the Go module in ./components, so the product's go.mod never imports
// k8s.io/kubernetes), and kwok for kubelets whose pods get IPs and turn Ready.
//
// See ../../../shared/cluster/README.md for how this was worked out on these machines.
package cluster
