package kube

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// A kubeconfig written by client-go is read as client-go reads it: the current context's
// server, CA (data or a file relative to the kubeconfig) and token, token file or client
// certificate; a TLS server signed by that CA is trusted, with the token sent.
func TestKubeconfig(t *testing.T) {
	t.Parallel()
	var auth string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		_, _ = w.Write([]byte(`{"metadata":{"name":"p"}}`))
	}))
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.crt"), caPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "token"), []byte("from-file\n"), 0o600))

	write := func(cluster *clientcmdapi.Cluster, user *clientcmdapi.AuthInfo) string {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["c"] = cluster
		cfg.AuthInfos["u"] = user
		cfg.Contexts["other"] = &clientcmdapi.Context{Cluster: "missing", AuthInfo: "u"}
		cfg.Contexts["ctx"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
		cfg.CurrentContext = "ctx"
		f, err := os.CreateTemp(dir, "kubeconfig-")
		require.NoError(t, err)
		require.NoError(t, f.Close())
		require.NoError(t, clientcmd.WriteToFile(*cfg, f.Name()))
		return f.Name()
	}
	get := func(path string) string {
		t.Helper()
		cfg, err := Load(path, "test")
		require.NoError(t, err)
		c, err := New(cfg, "ns", "")
		require.NoError(t, err)
		p, err := c.GetPod(t.Context(), "p")
		require.NoError(t, err)
		require.Equal(t, "p", p.Metadata.Name)
		return auth
	}
	require.Equal(t, "Bearer inline", get(write(&clientcmdapi.Cluster{Server: srv.URL, CertificateAuthorityData: caPEM}, &clientcmdapi.AuthInfo{Token: "inline"})))
	require.Equal(t, "Bearer from-file", get(write(&clientcmdapi.Cluster{Server: srv.URL, CertificateAuthority: "ca.crt"}, &clientcmdapi.AuthInfo{TokenFile: "token"})),
		"paths relative to the kubeconfig")

	// A client certificate is presented.
	cert := srv.TLS.Certificates[0]
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	cfg, err := Load(write(&clientcmdapi.Cluster{Server: srv.URL, InsecureSkipTLSVerify: true},
		&clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM(t, cert)}), "test")
	require.NoError(t, err)
	require.Len(t, cfg.TLS.Certificates, 1)
	require.True(t, cfg.TLS.InsecureSkipVerify)

	// Without the CA, the server is not trusted.
	cfg, err = Load(write(&clientcmdapi.Cluster{Server: srv.URL}, &clientcmdapi.AuthInfo{Token: "x"}), "test")
	require.NoError(t, err)
	c, err := New(cfg, "ns", "")
	require.NoError(t, err)
	_, err = c.GetPod(t.Context(), "p")
	require.ErrorContains(t, err, "certificate")

	for name, c := range map[string]struct {
		cluster *clientcmdapi.Cluster
		user    *clientcmdapi.AuthInfo
		want    string
	}{
		"exec plugin":   {&clientcmdapi.Cluster{Server: srv.URL}, &clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{Command: "aws", APIVersion: "client.authentication.k8s.io/v1"}}, "exec plugins and auth providers are not supported"},
		"basic auth":    {&clientcmdapi.Cluster{Server: srv.URL}, &clientcmdapi.AuthInfo{Username: "u", Password: "p"}, "basic auth is not supported"},
		"proxy":         {&clientcmdapi.Cluster{Server: srv.URL, ProxyURL: "http://proxy:3128"}, &clientcmdapi.AuthInfo{}, "proxy-url is not supported"},
		"not a URL":     {&clientcmdapi.Cluster{Server: "api:6443"}, &clientcmdapi.AuthInfo{}, `server "api:6443" is not an http(s) URL`},
		"CA not PEM":    {&clientcmdapi.Cluster{Server: srv.URL, CertificateAuthorityData: []byte("nope")}, &clientcmdapi.AuthInfo{}, "no PEM certificate"},
		"CA file gone":  {&clientcmdapi.Cluster{Server: srv.URL, CertificateAuthority: "gone.crt"}, &clientcmdapi.AuthInfo{}, "gone.crt"},
		"key not match": {&clientcmdapi.Cluster{Server: srv.URL}, &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: []byte("x")}, "user \"u\""},
	} {
		_, err := Load(write(c.cluster, c.user), "test")
		require.ErrorContains(t, err, c.want, name)
		require.ErrorContains(t, err, "kubeconfig "+dir, name)
	}
	_, err = Load(filepath.Join(dir, "absent"), "test")
	require.ErrorContains(t, err, "absent")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "no-context"), []byte("apiVersion: v1\nkind: Config\n"), 0o600))
	_, err = Load(filepath.Join(dir, "no-context"), "test")
	require.ErrorContains(t, err, "no current-context")
}

func keyPEM(t *testing.T, cert tls.Certificate) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// Outside a pod, the in-cluster config says so and what to do.
func TestInClusterOutsideAPod(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	_, err := Load("", "test")
	require.ErrorContains(t, err, "not running in a pod")
	require.ErrorContains(t, err, "pass --kubeconfig")
}
