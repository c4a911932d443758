package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/habring/habring/internal/check"
	"github.com/habring/habring/internal/patch"
	"github.com/habring/habring/internal/render"
	"github.com/habring/habring/internal/webhook"
)

func TestWebhookFlags(t *testing.T) {
	t.Parallel()
	var got webhook.Config
	r := runners{webhook: func(_ context.Context, c webhook.Config, _ *slog.Logger) error { got = c; return nil }}
	var out, errb bytes.Buffer
	code := cli(t.Context(), []string{"webhook", "--tls-cert-file=c", "--tls-key-file=k", "--labeler-image=img", "--max-peers=3",
		"--cluster-domain=corp.example", "--sidecar-mode=container", "--request-timeout=2s", "--shutdown-delay=0s"}, &out, &errb, r)
	require.Equal(t, 0, code, errb.String())
	want := webhook.Defaults()
	want.TLSCertFile, want.TLSKeyFile, want.LabelerImage, want.MaxPeers = "c", "k", "img", 3
	want.ClusterDomain, want.SidecarMode, want.RequestTimeout, want.ShutdownDelay = "corp.example", patch.SidecarContainer, 2*time.Second, 0
	require.Equal(t, want, got)
}

func TestCLIErrors(t *testing.T) {
	t.Parallel()
	never := runners{webhook: func(context.Context, webhook.Config, *slog.Logger) error { panic("must not run") }}
	tests := map[string]struct {
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		"no command":      {args: nil, code: 2, stdout: "Commands:\n  webhook"},
		"help":            {args: []string{"--help"}, code: 0, stdout: "Run 'habring <command> --help'"},
		"unknown command": {args: []string{"serve"}, code: 2, stderr: `unknown command "serve"; run 'habring --help' for the list`},
		"webhook help":    {args: []string{"webhook", "--help"}, code: 0, stdout: "-max-peers int\n    \tmost --peer addresses given to one Supervisor (1-64) (default 5)"},
		"unknown flag":    {args: []string{"webhook", "--nope"}, code: 2, stderr: "flag provided but not defined: -nope"},
		"missing required": {args: []string{"webhook"}, code: 2,
			stderr: "--tls-cert-file and --tls-key-file are required (cert-manager's Secret mount: tls.crt, tls.key)\n--labeler-image is required"},
		"bad values": {args: []string{"webhook", "--tls-cert-file=c", "--tls-key-file=k", "--labeler-image=i", "--max-peers=0", "--sidecar-mode=maybe", "--listen=8443"}, code: 2,
			stderr: "--listen \"8443\": want host:port, e.g. :8443\n--max-peers 0: want 1 to 64\n--sidecar-mode \"maybe\": want auto, native or container"},
		"bad log level": {args: []string{"webhook", "--log-level=loud"}, code: 2, stderr: `--log-level "loud": want debug, info, warn or error`},
		"stray args":    {args: []string{"webhook", "extra"}, code: 2, stderr: `unexpected arguments ["extra"]`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			require.Equal(t, tc.code, cli(t.Context(), tc.args, &out, &errb, never), "stderr: %s", errb.String())
			require.Contains(t, out.String(), tc.stdout)
			require.Contains(t, errb.String(), tc.stderr)
		})
	}
}

func TestRunFailureExitsOne(t *testing.T) {
	t.Parallel()
	r := runners{webhook: func(context.Context, webhook.Config, *slog.Logger) error { return errors.New("listen: address in use") }}
	var out, errb bytes.Buffer
	require.Equal(t, 1, cli(t.Context(), []string{"webhook", "--tls-cert-file=c", "--tls-key-file=k", "--labeler-image=i"}, &out, &errb, r))
	require.Contains(t, errb.String(), `"msg":"habring webhook failed","err":"listen: address in use"`)
}

func TestRender(t *testing.T) {
	t.Parallel()
	in, err := os.ReadFile("../../examples/ring.yaml")
	require.NoError(t, err)
	var out, errb bytes.Buffer
	r := runners{render: render.Run, stdin: bytes.NewReader(in), stdout: &out}
	require.Equal(t, 0, cli(t.Context(), []string{"render", "-f", "-", "--max-peers=1", "--sidecar-mode=container"}, &out, &errb, r), errb.String())
	require.Equal(t, 4, strings.Count(out.String(), "kind: Pod\n"))
	require.Contains(t, out.String(), "- --peer=hab-bastion-0.hab-bastion.shop.svc.cluster.local\n    - --permanent-peer")
	require.NotContains(t, out.String(), "--peer=hab-bastion-1", "--max-peers=1 not applied")

	errb.Reset()
	require.Equal(t, 2, cli(t.Context(), []string{"render"}, &out, &errb, r))
	require.Contains(t, errb.String(), "-f is required")
	errb.Reset()
	require.Equal(t, 1, cli(t.Context(), []string{"render", "-f", "no-such-file.yaml"}, &out, &errb, r))
	require.Contains(t, errb.String(), "no-such-file.yaml: no such file or directory")
}

func TestCheckFlags(t *testing.T) {
	t.Parallel()
	var got check.Config
	var out, errb bytes.Buffer
	r := runners{check: func(_ context.Context, c check.Config, _, _ io.Writer, _ *slog.Logger) error { got = c; return nil }}
	code := cli(t.Context(), []string{"check", "--kubeconfig=k", "--context=c", "--namespace=shop", "--pod=shop/redis-0", "--min-cert-validity=24h",
		"--wait=5m", "-o", "json"}, &out, &errb, r)
	require.Equal(t, 0, code, errb.String())
	want := check.Defaults()
	want.Kubeconfig, want.Context, want.Namespace, want.Pod, want.MinCertValidity = "k", "c", "shop", "shop/redis-0", 24*time.Hour
	want.Wait, want.Output = 5*time.Minute, "json"
	require.Equal(t, want, got)

	errb.Reset()
	require.Equal(t, 2, cli(t.Context(), []string{"check", "--output=yaml", "--wait=-1s"}, &out, &errb, r))
	require.Contains(t, errb.String(), `-o "yaml": want text or json`)
	require.Contains(t, errb.String(), `--wait -1s: want 0 or more`)

	errb.Reset()
	require.Equal(t, 2, cli(t.Context(), []string{"check", "--pod=redis-0"}, &out, &errb, r))
	require.Contains(t, errb.String(), `--pod "redis-0": want namespace/name`)

	// A failed check exits 1 without an error log: the report printed on stdout says it all.
	errb.Reset()
	r.check = func(context.Context, check.Config, io.Writer, io.Writer, *slog.Logger) error {
		return check.ErrChecksFailed
	}
	require.Equal(t, 1, cli(t.Context(), []string{"check"}, &out, &errb, r))
	require.Empty(t, errb.String())
}

// Installed as kubectl-habring, kubectl runs it as a plugin: every message names
// "kubectl habring".
func TestKubectlPlugin(t *testing.T) {
	t.Parallel()
	require.Equal(t, "kubectl habring", progName("/usr/local/bin/kubectl-habring"))
	require.Equal(t, "habring", progName("./habring"))
	var out, errb bytes.Buffer
	r := runners{prog: progName("kubectl-habring")}
	require.Equal(t, 0, cli(t.Context(), []string{"--help"}, &out, &errb, r))
	require.Contains(t, out.String(), "Usage: kubectl habring <command> [flags]")
	out.Reset()
	require.Equal(t, 0, cli(t.Context(), []string{"check", "--help"}, &out, &errb, r))
	require.Contains(t, out.String(), "Usage: kubectl habring check [--kubeconfig K]")
	require.Contains(t, out.String(), "Exit status: 0 when no check failed")
	require.Equal(t, 2, cli(t.Context(), []string{"chek"}, &out, &errb, r))
	require.Contains(t, errb.String(), `kubectl habring: unknown command "chek"; run 'kubectl habring --help' for the list`)
}
