package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/httpapi/client"
)

func init() {
	register("update", "build a signed update bundle or push one to a cell (update build|push)", (*CLI).update)
}

func (c *CLI) update(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "build":
			return c.updateBuild(args[1:])
		case "push":
			return c.updatePush(args[1:])
		}
	}
	fmt.Fprintln(c.Stderr, "usage: cellctl update build -key FILE [-config config.json] [-version V] [-min-version V] [-images DIR] [-kernel] -o FILE\n"+
		"       cellctl update push -device https://CELL -bundle FILE [-user admin] [-password-file FILE] [-ca FILE] [-connect HOST:PORT]")
	return errUsage
}

func (c *CLI) updateBuild(args []string) error {
	fs := c.newFlagSet("update build")
	cfgPath := fs.String("config", "config.json", "the instance definition")
	target := fs.String("target", "", "board: amd64 or rpi (default: the config's)")
	version := fs.String("version", "", "the bundle's version (default: the config's); must be newer than the device's")
	minVersion := fs.String("min-version", "", "the oldest running version that may install this bundle")
	keyPath := fs.String("key", "cell-update.key", "the private signing key (cellctl keygen)")
	out := fs.String("o", "cell.bundle", "the bundle to write")
	imagesDir := fs.String("images", "images/out", "the services' OCI archives (cellctl images build) to pack into the root")
	kernel := fs.Bool("kernel", false, "also carry the kernel (go.mod's, with its command line; on the Pi its device trees and overlays): "+
		"the device boots it once on trial through the boot firmware, which falls back to the running kernel if it never starts the system")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath, *target, *version)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(*keyPath)
	if err != nil {
		return err
	}
	key, err := bundle.ParsePrivateKey(keyPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", *keyPath, err)
	}
	// A bundle signed by a key the image does not trust would only be refused
	// on the device; say so here.
	if cfg.UpdatePublicKey != "" {
		if pub, err := cfg.PublicKey(); err == nil && !pub.Equal(key.Public()) {
			return fmt.Errorf("%s does not match update_public_key in %s", *keyPath, *cfgPath)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tmp, err := os.MkdirTemp("", "cell-bundle-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root.squashfs")
	log := slog.New(slog.NewTextHandler(c.Stderr, nil)).With("component", "update")
	archives, err := image.ArchivesIn(*imagesDir)
	if err != nil {
		return err
	}
	if err := image.BuildRoot(ctx, cfg, image.Options{Log: log, Images: archives}, root); err != nil {
		return err
	}
	parts := map[string]string{}
	if *kernel {
		if parts, err = image.BundleBootFiles(cfg, image.Options{Log: log}, tmp); err != nil {
			return err
		}
	}
	parts[bundle.PartRoot] = root
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	m := bundle.Manifest{Version: cfg.Version, Target: cfg.Target, MinVersion: *minVersion}
	if err := bundle.Write(f, m, parts, key); err != nil {
		f.Close()
		os.Remove(*out)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fi, _ := os.Stat(*out)
	what := "root only"
	if *kernel {
		what = "root and kernel"
	}
	fmt.Fprintf(c.Stdout, "wrote %s: %s version %s, %s, %d MiB\n", *out, cfg.Target, cfg.Version, what, fi.Size()>>20)
	return nil
}

// progress prints how much of the bundle (or image) has been sent.
type progress struct {
	r       io.Reader
	w       io.Writer
	total   int64
	done    int64
	lastPct int64
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.add(int64(n), err == io.EOF)
	return n, err
}

// add counts n more bytes and redraws the bar; end finishes its line.
func (p *progress) add(n int64, end bool) {
	p.done += n
	if pct := p.done * 100 / max(p.total, 1); pct != p.lastPct || end {
		p.lastPct = pct
		bar := strings.Repeat("#", int(pct/4)) + strings.Repeat(".", 25-int(pct/4))
		fmt.Fprintf(p.w, "\r[%s] %3d%% %d/%d MiB", bar, pct, p.done>>20, p.total>>20)
		if end {
			fmt.Fprintln(p.w)
		}
	}
}

func (c *CLI) updatePush(args []string) error {
	fs := c.newFlagSet("update push")
	device := fs.String("device", "", "the cell, e.g. https://192.168.1.20 (its CA kept by cellctl trust; http:// only on this machine)")
	var cf cellFlags
	cf.register(fs)
	bundlePath := fs.String("bundle", "cell.bundle", "the bundle to send")
	user := fs.String("user", "admin", "an admin account")
	pwFile := fs.String("password-file", "", "file holding the password (default: $CELL_PASSWORD)")
	wait := fs.Duration("wait", 10*time.Minute, "how long to wait for the cell to come back and report the outcome (0: do not wait)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cc, err := c.dial(*device, cf, time.Minute)
	if err != nil {
		return err
	}
	password := os.Getenv("CELL_PASSWORD")
	if *pwFile != "" {
		b, err := os.ReadFile(*pwFile)
		if err != nil {
			return err
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	ctx := context.Background()
	if err := cc.explain(cc.Login(ctx, *user, password)); err != nil {
		var refused *trustError
		if errors.As(err, &refused) {
			return err
		}
		return fmt.Errorf("login: %w", err)
	}
	before, err := cc.SystemUpdateStatus(ctx)
	if err != nil {
		return cc.explain(err)
	}
	f, err := os.Open(*bundlePath)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	push, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	bar := &progress{w: c.Stderr, total: fi.Size(), lastPct: -1}
	accepted, err := cc.PushUpdate(push, f, func(sent, total int64) { bar.add(sent-bar.done, sent == total) })
	if err != nil {
		if !isAPIError(err) {
			return fmt.Errorf("sending the bundle: %w", cc.explain(err))
		}
		return fmt.Errorf("the cell refused the bundle: %w", err)
	}
	fmt.Fprintf(c.Stdout, "accepted version %s; the cell reboots into it on trial (it ran %s)\n", accepted.Version, before.Running)
	if *wait == 0 {
		return nil
	}
	return c.waitOutcome(cc, *user, password, accepted.Version, *wait)
}

// waitOutcome polls until the cell reports the outcome of installing version.
// The cell goes away while it reboots (once or twice), so errors are expected
// for a while.
func (c *CLI) waitOutcome(cc *cell, user, password, version string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	var lastErr error
	for time.Now().Before(deadline) {
		time.Sleep(3 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := cc.SystemUpdateStatus(ctx)
		if client.IsStatus(err, http.StatusUnauthorized) {
			err = cc.Login(ctx, user, password)
		}
		cancel()
		if err != nil {
			lastErr = cc.explain(err)
			var refused *trustError
			if errors.As(lastErr, &refused) {
				return lastErr // the cell came back as another: ask it nothing more
			}
			continue
		}
		if st.Update.Version != version {
			continue
		}
		switch st.Update.Phase {
		case client.PhaseCommitted:
			fmt.Fprintf(c.Stdout, "updated: version %s runs from root slot %d\n", st.Running, st.Slot)
			return nil
		case client.PhaseRolledBack, client.PhaseFailed:
			return fmt.Errorf("update %s: %s; the cell runs version %s", st.Update.Phase, st.Update.Message, st.Running)
		}
	}
	return fmt.Errorf("no outcome within %s (last error: %v)", wait, lastErr)
}

// isAPIError reports whether err is an answer of the cell (not a failure to
// reach it).
func isAPIError(err error) bool {
	var e *client.Error
	return errors.As(err, &e)
}
