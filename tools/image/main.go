// Command image writes habring's container image as an OCI image layout in a tar (an
// "oci-archive"): one index for several platforms, each image a static habring on an
// empty base, run as user 65532, with the OCI labels a registry shows. It needs no
// container engine: go-containerregistry assembles the layout. `make image` runs it.
//
//	go run ./tools/image --out bin/habring.oci.tar
//	skopeo copy --all oci-archive:bin/habring.oci.tar docker://<registry>/habring:<tag>
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := Options{}
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch to build for")
	fs.StringVar(&o.Out, "out", "bin/habring.oci.tar", "the OCI image layout tar to write")
	binaries := fs.String("binaries", "/habring=./cmd/habring,/habring-labeler=./cmd/habring-labeler", "the image's programs, path=Go main package, comma-separated; the first is the entrypoint")
	fs.StringVar(&o.Repository, "repository", "ghcr.io/habring/habring", "the image's name, recorded in the layout's index for docker load and skopeo")
	fs.StringVar(&o.Version, "version", gitOr(ctx, "dev", "describe", "--tags", "--always", "--dirty"), "org.opencontainers.image.version and the tag")
	fs.StringVar(&o.Revision, "revision", gitOr(ctx, "unknown", "rev-parse", "HEAD"), "org.opencontainers.image.revision")
	fs.StringVar(&o.Source, "source", "https://github.com/habring/habring", "org.opencontainers.image.source")
	created := fs.String("created", "", "image creation time (RFC 3339); default $SOURCE_DATE_EPOCH, else the commit's time: the same commit gives the same image")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "image: build habring's multi-platform OCI image without a container engine\n\nUsage: go run ./tools/image [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	for p := range strings.SplitSeq(*platforms, ",") {
		osName, arch, ok := strings.Cut(strings.TrimSpace(p), "/")
		if !ok || osName == "" || arch == "" {
			fmt.Fprintf(stderr, "image: --platforms %q: want os/arch[,os/arch...], e.g. linux/amd64,linux/arm64\n", *platforms)
			return 2
		}
		o.Platforms = append(o.Platforms, Platform{OS: osName, Arch: arch})
	}
	for b := range strings.SplitSeq(*binaries, ",") {
		path, pkg, ok := strings.Cut(strings.TrimSpace(b), "=")
		if !ok || !strings.HasPrefix(path, "/") || pkg == "" {
			fmt.Fprintf(stderr, "image: --binaries %q: want /path=./package[,...], e.g. /habring=./cmd/habring\n", *binaries)
			return 2
		}
		o.Binaries = append(o.Binaries, Binary{Path: path, Package: pkg})
	}
	var err error
	if o.Created, err = createdTime(ctx, *created); err != nil {
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 2
	}
	o.Progress = stdout
	digest, err := Build(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s: %s:%s, index %s\n", o.Out, o.Repository, o.Version, digest)
	fmt.Fprintf(stdout, "push it: skopeo copy --all oci-archive:%s docker://<registry>/habring:%s\n", o.Out, o.Version)
	fmt.Fprintf(stdout, "     or: mkdir layout && tar -xf %s -C layout && crane push layout <registry>/habring:%s\n", o.Out, o.Version)
	fmt.Fprintf(stdout, "load it: docker load -i %s (Docker 25+)\n", o.Out)
	return 0
}

func gitOr(ctx context.Context, fallback string, args ...string) string {
	out, err := exec.CommandContext(ctx, "git", args...).Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		return fallback
	}
	return strings.TrimSpace(string(out))
}

func createdTime(ctx context.Context, flagValue string) (time.Time, error) {
	if flagValue != "" {
		t, err := time.Parse(time.RFC3339, flagValue)
		if err != nil {
			return time.Time{}, fmt.Errorf("--created %q: want RFC 3339, e.g. 2026-12-01T00:00:00Z", flagValue)
		}
		return t.UTC(), nil
	}
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		epoch = gitOr(ctx, "", "log", "-1", "--format=%ct")
	}
	if epoch == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since 1970", epoch)
	}
	return time.Unix(sec, 0).UTC(), nil
}
