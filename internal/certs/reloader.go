package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// ErrNoCertificate is returned by GetCertificate before a key pair was loaded.
var ErrNoCertificate = errors.New("no serving certificate loaded")

// Reloader serves the key pair in CertFile/KeyFile and reloads it when either changes.
//
// A Secret volume is updated by kubelet's atomic writer: the files are symlinks through
// "..data", which is swapped to a new timestamped directory with one rename. A watch on
// the files themselves would keep following the old, deleted inode, so Reloader watches
// the directories and reloads on any event there; a periodic reload covers file systems
// where inotify says nothing. A pair that fails to load (say, certificate written but key
// not yet) is ignored and the last good one kept: requests never see a broken pair.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger
	// Poll is the backstop reload interval (default one minute).
	Poll time.Duration
	// OnLoad, when set, is told about every pair that was loaded (for metrics).
	OnLoad func(leaf *x509.Certificate)

	current atomic.Pointer[tls.Certificate]
}

// NewReloader loads the pair once; an error here means the files are missing or invalid.
func NewReloader(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log, Poll: time.Minute}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := r.current.Load()
	if c == nil {
		return nil, ErrNoCertificate
	}
	return c, nil
}

// Leaf is the certificate being served.
func (r *Reloader) Leaf() *x509.Certificate {
	if c := r.current.Load(); c != nil {
		return c.Leaf
	}
	return nil
}

// Run watches the files until ctx ends.
func (r *Reloader) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch certificate files: %w", err)
	}
	defer func() { _ = w.Close() }()
	for _, dir := range uniq(filepath.Dir(r.certFile), filepath.Dir(r.keyFile)) {
		if err := w.Add(dir); err != nil {
			return fmt.Errorf("watch %s: %w", dir, err)
		}
	}
	poll := time.NewTicker(r.Poll)
	defer poll.Stop()
	// Events come in bursts (a rotation is several creates, renames and removes); wait
	// for the burst to settle before reading the files.
	const settle = 100 * time.Millisecond
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			r.log.Debug("certificate directory changed", "event", ev.String())
			debounce.Reset(settle)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			r.log.Warn("certificate watch error; relying on periodic reload", "err", err)
		case <-debounce.C:
			r.reload()
		case <-poll.C:
			r.reload()
		}
	}
}

func (r *Reloader) reload() {
	before := r.Leaf()
	if err := r.load(); err != nil {
		r.log.Warn("certificate reload failed; still serving the previous one", "err", err)
		return
	}
	if after := r.Leaf(); before == nil || !before.Equal(after) {
		r.log.Info("serving certificate loaded", "serial", after.SerialNumber.String(), "notAfter", after.NotAfter)
	}
}

func (r *Reloader) load() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load key pair %s, %s: %w", r.certFile, r.keyFile, err)
	}
	// LoadX509KeyPair fills Leaf since Go 1.23.
	if c.Leaf == nil {
		return fmt.Errorf("load key pair %s: no leaf certificate", r.certFile)
	}
	r.current.Store(&c)
	if r.OnLoad != nil {
		r.OnLoad(c.Leaf)
	}
	return nil
}

func uniq(a, b string) []string {
	if a == b {
		return []string{a}
	}
	return []string{a, b}
}
