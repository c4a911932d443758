// Package cluster builds and runs a real Kubernetes control plane on loopback for the
// end-to-end tests and `make demo`: kube-apiserver, kube-controller-manager and
// kube-scheduler from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3/embed (all
// built from the Go module in ./components, so the product's go.mod never imports
// k8s.io/kubernetes), and kwok for kubelets whose pods get IPs and turn Ready.
//
// What it took on machines without a container engine (each fact is in the code where it
// applies): k8s.io/kubernetes imports only from a module that replaces every staging
// module with its published version; kube-apiserver on loopback needs
// --endpoint-reconciler-type=none; kwok needs its stage definitions; the version must be
// stamped with ldflags or the API server reports v0.0.0.
package cluster
