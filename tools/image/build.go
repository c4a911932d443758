package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Platform is one os/arch the image is built for.
type Platform struct{ OS, Arch string }

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// Binary is one program of the image: the Go main package built to Path in the image.
type Binary struct{ Path, Package string }

// Options say what to build and how to label it.
type Options struct {
	Out string
	// Binaries are the image's programs; the first is its entrypoint.
	Binaries                              []Binary
	Platforms                             []Platform
	Repository, Version, Revision, Source string
	// Created is every timestamp in the image: the same inputs give the same digests.
	Created  time.Time
	Progress io.Writer
}

// User is the image's user: the nonroot user of distroless, which deploy/'s and the
// chart's securityContext (runAsUser 65532) and the labeler's expect.
const User = "65532:65532"

// Build compiles the package for every platform and writes the OCI layout tar; it
// returns the digest of the image index.
func Build(ctx context.Context, o Options) (v1.Hash, error) {
	work, err := os.MkdirTemp("", "habring-image-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer func() { _ = os.RemoveAll(work) }()
	labels := map[string]string{
		"org.opencontainers.image.source":   o.Source,
		"org.opencontainers.image.revision": o.Revision,
		"org.opencontainers.image.version":  o.Version,
		"org.opencontainers.image.title":    "habring",
		"org.opencontainers.image.created":  o.Created.Format(time.RFC3339),
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range o.Platforms {
		files := map[string]string{}
		for _, b := range o.Binaries {
			out := filepath.Join(work, p.OS+"-"+p.Arch, filepath.Base(b.Path))
			fmt.Fprintf(o.Progress, "building %s for %s\n", b.Package, p)
			if err := goBuild(ctx, b.Package, p, out); err != nil {
				return v1.Hash{}, err
			}
			files[b.Path] = out
		}
		img, err := image(files, o.Binaries[0].Path, p, labels, o.Created)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("image for %s: %w", p, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: noArtifactType{img}, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}}})
	}
	idx = mutate.Annotations(idx, labels).(v1.ImageIndex)
	digest, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	dir := filepath.Join(work, "layout")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	// One entry in index.json, the multi-platform index, named as docker load, containerd
	// and skopeo look for it.
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": o.Version,
		"io.containerd.image.name":          o.Repository + ":" + o.Version,
	})); err != nil {
		return v1.Hash{}, err
	}
	if err := os.MkdirAll(filepath.Dir(o.Out), 0o750); err != nil {
		return v1.Hash{}, err
	}
	return digest, tarDir(dir, o.Out, o.Created)
}

func goBuild(ctx context.Context, pkg string, p Platform, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", pkg, p, err, b)
	}
	return nil
}

// noArtifactType is an image whose index entry carries no artifactType: go-containerregistry
// fills it with the config's media type (OCI 1.1 allows it, for artifacts), and tools that
// predate OCI 1.1 drop the unknown field, which changes the index's digest (skopeo 1.9.3
// did, copying the archive to a registry).
type noArtifactType struct{ v1.Image }

// ArtifactType is empty: this is an image, not an artifact.
func (noArtifactType) ArtifactType() (string, error) { return "", nil }

// image is one platform's image: a single layer holding the files (image path → file
// here), on nothing.
func image(files map[string]string, entrypoint string, p Platform, labels map[string]string, created time.Time) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, path := range slices.Sorted(maps.Keys(files)) {
		data, err := os.ReadFile(files[path])
		if err != nil {
			return nil, err
		}
		h := &tar.Header{Name: strings.TrimPrefix(path, "/"), Mode: 0o755, Size: int64(len(data)), ModTime: created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1),
		mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: created}, CreatedBy: "go build -trimpath (tools/image)"}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = p.OS, p.Arch, v1.Time{Time: created}
	cf.Config.User = User
	cf.Config.Entrypoint = []string{entrypoint}
	cf.Config.Labels = labels
	return mutate.ConfigFile(img, cf)
}

// tarDir writes the layout at dir as a tar at out: sorted, every entry owned by root and
// stamped created, so the same layout gives the same bytes.
func tarDir(dir, out string, created time.Time) error {
	var paths []string
	if err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	}); err != nil {
		return err
	}
	slices.Sort(paths)
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp) }()
	tw := tar.NewWriter(f)
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: created, Mode: 0o644, Format: tar.FormatPAX}
		if fi.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		h.Typeflag, h.Size = tar.TypeReg, fi.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, src)
		_ = src.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
