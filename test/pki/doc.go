// Package pki is test equipment: an in-memory certificate authority that issues
// short-lived serving certificates, and a writer that updates a directory the way kubelet
// updates a Secret volume (timestamped directory, one "..data" symlink swap). In a real
// cluster cert-manager and kubelet play these parts (deploy/).
//
// The product never imports it.
package pki
