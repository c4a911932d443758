package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/habring/habring/internal/labeler"
)

// The sidecar's flags (labeler.Config.RegisterFlags), the pod from the downward API's
// environment, the gateway token from the environment only.
func TestFlags(t *testing.T) {
	t.Setenv("HABRING_POD_NAME", "redis-0")
	t.Setenv("HABRING_POD_NAMESPACE", "shop")
	t.Setenv("HAB_SUP_GATEWAY_AUTH_TOKEN", "tok")
	var got labeler.Config
	label := func(_ context.Context, c labeler.Config, _ *slog.Logger) error { got = c; return nil }
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"--ring=main", "--peer-watch-file=/var/run/habring/peers", "--max-peers=3", "--interval=2s", "--log-format=text"}, &out, &errb, label, false)
	require.Equal(t, 0, code, errb.String())
	want := labeler.Defaults()
	want.PodName, want.Namespace, want.GatewayToken = "redis-0", "shop", "tok"
	want.Ring, want.PeerWatchFile, want.MaxPeers, want.Interval = "main", "/var/run/habring/peers", 3, 2*time.Second
	require.Equal(t, want, got)

	require.Equal(t, 0, run(t.Context(), []string{"--help"}, &out, &errb, label, false))
	require.Contains(t, out.String(), "Usage: habring-labeler [flags]")
	require.Contains(t, out.String(), "-lease-duration duration")

	for args, msg := range map[string][]string{
		"--pod-name and --namespace are required": {"--pod-name="},
		`unexpected arguments ["labeler"]`:        {"labeler"},
		`--log-level "loud"`:                      {"--log-level=loud"},
	} {
		errb.Reset()
		require.Equal(t, 2, run(t.Context(), msg, &out, &errb, label, false), args)
		require.Contains(t, errb.String(), args)
	}
	errb.Reset()
	fail := func(context.Context, labeler.Config, *slog.Logger) error { return errors.New("listen: address in use") }
	require.Equal(t, 1, run(t.Context(), nil, &out, &errb, fail, false))
	require.Contains(t, errb.String(), `"msg":"habring-labeler failed","err":"listen: address in use"`)
}
