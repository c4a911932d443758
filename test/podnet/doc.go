// Package podnet gives test pods a network of their own on this machine, as a node's
// container runtime would: a Linux bridge with a gateway address, and per pod a network
// namespace with a veth pair on that bridge, the pod's IP, its own loopback (127.0.0.1 in a
// pod is that pod alone) and an /etc/hosts of its own (`ip netns exec` bind-mounts
// /etc/netns/<name>/hosts over /etc/hosts), so stable names resolve as cluster DNS would.
//
// Everything it creates carries the creating process's id in its name; Close removes it,
// and Sweep removes what a process that died left behind, so a second run on the same
// machine starts clean. Traffic stays on the bridge it made.
//
// It is test equipment (root, iproute2); the product never imports it.
package podnet
