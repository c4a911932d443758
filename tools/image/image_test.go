package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/require"
)

func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(t, err)
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		require.True(t, strings.HasPrefix(p, dir+string(filepath.Separator)), "entry %q escapes the layout", h.Name)
		if h.Typeflag == tar.TypeDir {
			require.NoError(t, os.MkdirAll(p, 0o755))
			continue
		}
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p, b, 0o644))
	}
}

// The archive is an OCI image layout: index.json names one multi-platform index (as
// docker load, containerd and skopeo look for it), whose images are each one layer with a
// static /habring for their architecture, user 65532, entrypoint /habring and the OCI
// labels. The same inputs give the same digest, and the index loads into a registry (what
// crane push does) and back unchanged.
func TestImage(t *testing.T) {
	dir := t.TempDir()
	o := Options{Binaries: []Binary{{"/habring", "./testdata/hello"}, {"/habring-labeler", "./testdata/hello"}}, Platforms: []Platform{{"linux", "amd64"}, {"linux", "arm64"}},
		Repository: "ghcr.io/habring/habring", Version: "v9.9.9", Revision: "0123abc", Source: "https://github.com/habring/habring",
		Created: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Progress: io.Discard, Out: filepath.Join(dir, "a.oci.tar")}
	digest, err := Build(t.Context(), o)
	require.NoError(t, err)
	o.Out = filepath.Join(dir, "b.oci.tar")
	again, err := Build(t.Context(), o)
	require.NoError(t, err)
	require.Equal(t, digest, again, "same inputs, same image")
	a, _ := os.ReadFile(filepath.Join(dir, "a.oci.tar"))
	b, _ := os.ReadFile(o.Out)
	require.True(t, bytes.Equal(a, b), "same inputs, same archive bytes")

	lp := filepath.Join(dir, "layout")
	untar(t, o.Out, lp)
	top, err := layout.ImageIndexFromPath(lp)
	require.NoError(t, err)
	m, err := top.IndexManifest()
	require.NoError(t, err)
	require.Len(t, m.Manifests, 1)
	require.Equal(t, types.OCIImageIndex, m.Manifests[0].MediaType)
	require.Equal(t, digest, m.Manifests[0].Digest)
	require.Equal(t, "v9.9.9", m.Manifests[0].Annotations["org.opencontainers.image.ref.name"])
	require.Equal(t, "ghcr.io/habring/habring:v9.9.9", m.Manifests[0].Annotations["io.containerd.image.name"])

	idx, err := top.ImageIndex(digest)
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Len(t, im.Manifests, 2)
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for _, d := range im.Manifests {
		require.Equal(t, types.OCIManifestSchema1, d.MediaType)
		require.Empty(t, d.ArtifactType, "an image, not an artifact: tools before OCI 1.1 would drop the field and change the digest")
		require.NotNil(t, d.Platform)
		img, err := idx.Image(d.Digest)
		require.NoError(t, err)
		cf, err := img.ConfigFile()
		require.NoError(t, err)
		require.Equal(t, d.Platform.Architecture, cf.Architecture)
		require.Equal(t, "linux", cf.OS)
		require.Equal(t, "65532:65532", cf.Config.User)
		require.Equal(t, []string{"/habring"}, cf.Config.Entrypoint)
		require.Equal(t, map[string]string{
			"org.opencontainers.image.source": "https://github.com/habring/habring", "org.opencontainers.image.revision": "0123abc",
			"org.opencontainers.image.version": "v9.9.9", "org.opencontainers.image.title": "habring",
			"org.opencontainers.image.created": "2026-12-01T00:00:00Z",
		}, cf.Config.Labels)
		layers, err := img.Layers()
		require.NoError(t, err)
		require.Len(t, layers, 1, "an empty base: habring's layer only")
		rc, err := layers[0].Uncompressed()
		require.NoError(t, err)
		tr := tar.NewReader(rc)
		var names []string
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			names = append(names, h.Name)
			require.Equal(t, int64(0o755), h.Mode)
			bin, err := io.ReadAll(tr)
			require.NoError(t, err)
			ef, err := elf.NewFile(bytes.NewReader(bin))
			require.NoError(t, err)
			require.Equal(t, machines[d.Platform.Architecture], ef.Machine)
			for _, p := range ef.Progs {
				require.NotEqual(t, elf.PT_INTERP, p.Type, "static: no dynamic loader")
			}
		}
		require.Equal(t, []string{"habring", "habring-labeler"}, names, "the webhook and the labeler, nothing else")
		_ = rc.Close()
	}

	// A registry (go-containerregistry's own, as crane push talks to) takes the index as is.
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/habring/habring:v9.9.9")
	require.NoError(t, err)
	require.NoError(t, remote.WriteIndex(ref, idx))
	pulled, err := remote.Index(ref)
	require.NoError(t, err)
	pd, err := pulled.Digest()
	require.NoError(t, err)
	require.Equal(t, digest, pd)
	arm, err := remote.Image(ref, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"}))
	require.NoError(t, err)
	acf, err := arm.ConfigFile()
	require.NoError(t, err)
	require.Equal(t, "arm64", acf.Architecture)
}
