package kube

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/habring/habring/contract"
)

// Config says how to reach the API server and as whom.
type Config struct {
	// Host is the API server's URL, e.g. https://10.96.0.1:443.
	Host string
	// TLS verifies the server and may carry a client certificate.
	TLS *tls.Config
	// Token is a bearer token; TokenFile a file holding one, read again as it rotates
	// (a projected service-account token is replaced before it expires).
	Token, TokenFile string
	// UserAgent names the caller in the API server's logs and audit.
	UserAgent string
}

// Load reads the kubeconfig at path, or the in-cluster config (the pod's service account)
// when path is empty.
func Load(path, userAgent string) (*Config, error) {
	var c *Config
	var err error
	if path == "" {
		if c, err = InCluster(); err != nil {
			return nil, fmt.Errorf("in-cluster config: %w (outside a cluster, pass --kubeconfig)", err)
		}
	} else if c, err = Kubeconfig(path); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	c.UserAgent = userAgent
	return c, nil
}

// InCluster is the config of a pod: the API server from KUBERNETES_SERVICE_HOST and
// KUBERNETES_SERVICE_PORT, the token and CA the kubelet mounts at
// /var/run/secrets/kubernetes.io/serviceaccount (rest.InClusterConfig's rules).
func InCluster() (*Config, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: not running in a pod")
	}
	tokenFile := filepath.Join(contract.ServiceAccountDir, "token")
	if _, err := os.Stat(tokenFile); err != nil {
		return nil, fmt.Errorf("service account token: %w", err)
	}
	pool, err := caPool(filepath.Join(contract.ServiceAccountDir, "ca.crt"), "")
	if err != nil {
		return nil, err
	}
	return &Config{Host: "https://" + net.JoinHostPort(host, port), TokenFile: tokenFile,
		TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}, nil
}

// kubeconfig is the part of a kubeconfig file the labeler understands.
type kubeconfig struct {
	CurrentContext string         `json:"current-context"`
	Contexts       []namedContext `json:"contexts"`
	Clusters       []namedCluster `json:"clusters"`
	Users          []namedUser    `json:"users"`
}

type namedContext struct {
	Name    string `json:"name"`
	Context struct {
		Cluster string `json:"cluster"`
		User    string `json:"user"`
	} `json:"context"`
}

type namedCluster struct {
	Name    string `json:"name"`
	Cluster struct {
		Server                   string `json:"server"`
		CertificateAuthority     string `json:"certificate-authority"`
		CertificateAuthorityData string `json:"certificate-authority-data"`
		InsecureSkipTLSVerify    bool   `json:"insecure-skip-tls-verify"`
		TLSServerName            string `json:"tls-server-name"`
		ProxyURL                 string `json:"proxy-url"`
	} `json:"cluster"`
}

type namedUser struct {
	Name string `json:"name"`
	User struct {
		Token                 string `json:"token"`
		TokenFile             string `json:"tokenFile"`
		ClientCertificate     string `json:"client-certificate"`
		ClientCertificateData string `json:"client-certificate-data"`
		ClientKey             string `json:"client-key"`
		ClientKeyData         string `json:"client-key-data"`
		Username              string `json:"username"`
		Exec                  any    `json:"exec"`
		AuthProvider          any    `json:"auth-provider"`
	} `json:"user"`
}

// Kubeconfig reads the current context of the kubeconfig at path: its cluster's server, CA
// (file or data) and TLS server name, its user's token (or token file) or client
// certificate. Paths in it are relative to its directory. Exec plugins, auth providers,
// basic auth and proxies are refused by name: the labeler runs in a pod, on its own token.
func Kubeconfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	if kc.CurrentContext == "" {
		return nil, errors.New("no current-context")
	}
	ci := slices.IndexFunc(kc.Contexts, func(c namedContext) bool { return c.Name == kc.CurrentContext })
	if ci < 0 {
		return nil, fmt.Errorf("current-context %q is not among its contexts", kc.CurrentContext)
	}
	clusterName, userName := kc.Contexts[ci].Context.Cluster, kc.Contexts[ci].Context.User
	i := slices.IndexFunc(kc.Clusters, func(c namedCluster) bool { return c.Name == clusterName })
	if i < 0 {
		return nil, fmt.Errorf("context %q names cluster %q, which it does not define", kc.CurrentContext, clusterName)
	}
	cl := kc.Clusters[i].Cluster
	if cl.ProxyURL != "" {
		return nil, fmt.Errorf("cluster %q: proxy-url is not supported by the labeler", clusterName)
	}
	u, err := url.Parse(cl.Server)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("cluster %q: server %q is not an http(s) URL", clusterName, cl.Server)
	}
	cfg := &Config{Host: strings.TrimSuffix(cl.Server, "/"),
		TLS: &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cl.TLSServerName, InsecureSkipVerify: cl.InsecureSkipTLSVerify}} //nolint:gosec // the kubeconfig's own choice, as client-go honours it
	if cl.CertificateAuthority != "" || cl.CertificateAuthorityData != "" {
		if cfg.TLS.RootCAs, err = caPool(rel(cl.CertificateAuthority), cl.CertificateAuthorityData); err != nil {
			return nil, fmt.Errorf("cluster %q: %w", clusterName, err)
		}
	}
	if userName == "" {
		return cfg, nil
	}
	i = slices.IndexFunc(kc.Users, func(u namedUser) bool { return u.Name == userName })
	if i < 0 {
		return nil, fmt.Errorf("context %q names user %q, which it does not define", kc.CurrentContext, userName)
	}
	usr := kc.Users[i].User
	switch {
	case usr.Exec != nil, usr.AuthProvider != nil:
		return nil, fmt.Errorf("user %q: exec plugins and auth providers are not supported by the labeler; use a token or a client certificate", userName)
	case usr.Username != "":
		return nil, fmt.Errorf("user %q: basic auth is not supported by the labeler; use a token or a client certificate", userName)
	}
	cfg.Token, cfg.TokenFile = usr.Token, rel(usr.TokenFile)
	if usr.ClientCertificate != "" || usr.ClientCertificateData != "" {
		cert, err := clientCert(rel(usr.ClientCertificate), usr.ClientCertificateData, rel(usr.ClientKey), usr.ClientKeyData)
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", userName, err)
		}
		cfg.TLS.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// pemOf is data (base64, as a kubeconfig holds it) or the file at path.
func pemOf(path, data string) ([]byte, error) {
	if data != "" {
		return base64.StdEncoding.DecodeString(data)
	}
	return os.ReadFile(path)
}

func caPool(path, data string) (*x509.CertPool, error) {
	b, err := pemOf(path, data)
	if err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("certificate authority: no PEM certificate in it")
	}
	return pool, nil
}

func clientCert(certPath, certData, keyPath, keyData string) (tls.Certificate, error) {
	c, err := pemOf(certPath, certData)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("client certificate: %w", err)
	}
	k, err := pemOf(keyPath, keyData)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("client key: %w", err)
	}
	return tls.X509KeyPair(c, k)
}
