package harness

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// PreviousRelease is the tree of the release an upgrade starts from: a commit of this
// repository, extracted and built as that release's image would hold it.
type PreviousRelease struct {
	// Ref is the commit; Dir its extracted tree; Chart its deploy/helm/habring.
	Ref, Dir, Chart string
	// Habring is its cmd/habring, with its habring-labeler beside it (LabelerBinary).
	Habring string
}

// ErrShallow is BuildPrevious's answer in a clone without the history that holds the
// previous release.
var ErrShallow = errors.New("this clone is shallow: the previous release's commit is not in it (git fetch --unshallow)")

// BuildPrevious extracts commit ref of this repository into dir (git archive) and builds
// its habring and habring-labeler there, as BuildHabring builds this tree's.
func BuildPrevious(ctx context.Context, ref, dir string) (*PreviousRelease, error) {
	git := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = RepoRoot()
		return cmd
	}
	if err := git("cat-file", "-e", ref+"^{commit}").Run(); err != nil {
		if out, _ := git("rev-parse", "--is-shallow-repository").Output(); strings.TrimSpace(string(out)) == "true" {
			return nil, ErrShallow
		}
		return nil, fmt.Errorf("commit %s is not in this repository: %w", ref, err)
	}
	p := &PreviousRelease{Ref: ref, Dir: filepath.Join(dir, "previous")}
	archive := git("archive", "--format=tar", ref)
	out, err := archive.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := archive.Start(); err != nil {
		return nil, err
	}
	if err := untar(out, p.Dir); err != nil {
		_ = archive.Wait()
		return nil, fmt.Errorf("extract %s: %w", ref, err)
	}
	if err := archive.Wait(); err != nil {
		return nil, fmt.Errorf("git archive %s: %w", ref, err)
	}
	p.Chart = filepath.Join(p.Dir, "deploy", "helm", "habring")
	p.Habring = filepath.Join(dir, "previous-bin", "habring")
	for pkg, dst := range map[string]string{"./cmd/habring": p.Habring, "./cmd/habring-labeler": LabelerBinary(p.Habring)} {
		build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o", dst, pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Dir = p.Dir
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build %s of %s: %w: %s", pkg, ref, err, out)
		}
	}
	return p, nil
}

// untar writes the regular files and directories of a tar stream under dir.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		path := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755|0o644)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				_ = f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
	}
}
