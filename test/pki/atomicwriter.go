package pki

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// WriteAtomic writes files into dir the way kubelet updates a Secret volume: into a new
// timestamped directory, then one rename of the "..data" symlink, with each file a
// symlink through "..data". Tests and the local cluster use it to rotate certificates
// exactly as cert-manager and kubelet do.
func WriteAtomic(dir string, files map[string][]byte) error {
	ts, err := os.MkdirTemp(dir, ".."+time.Now().UTC().Format("2006_01_02_15_04_05."))
	if err != nil {
		return fmt.Errorf("make data directory: %w", err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(ts, name), data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	data := filepath.Join(dir, "..data")
	old, _ := os.Readlink(data)
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return fmt.Errorf("link new data: %w", err)
	}
	if err := os.Rename(tmp, data); err != nil {
		return fmt.Errorf("swap ..data: %w", err)
	}
	for name := range files {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				return fmt.Errorf("link %s: %w", name, err)
			}
		}
	}
	if old != "" {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}
