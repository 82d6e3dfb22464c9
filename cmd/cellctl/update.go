package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/image"
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
	fmt.Fprintln(c.Stderr, "usage: cellctl update build -key FILE [-config config.json] [-version V] [-min-version V] -o FILE\n"+
		"       cellctl update push -device URL -bundle FILE [-user admin] [-password-file FILE]")
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
	if err := image.BuildRoot(ctx, cfg, image.Options{Log: log}, root); err != nil {
		return err
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	m := bundle.Manifest{Version: cfg.Version, Target: cfg.Target, MinVersion: *minVersion}
	if err := bundle.Write(f, m, map[string]string{bundle.PartRoot: root}, key); err != nil {
		f.Close()
		os.Remove(*out)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fi, _ := os.Stat(*out)
	fmt.Fprintf(c.Stdout, "wrote %s: %s version %s, %d MiB\n", *out, cfg.Target, cfg.Version, fi.Size()>>20)
	return nil
}

// cellClient is a logged-in admin session on a cell.
type cellClient struct {
	base string
	hc   *http.Client
	csrf string
}

func (cc *cellClient) login(user, password string) error {
	body, _ := json.Marshal(map[string]string{"username": user, "password": password})
	resp, err := cc.hc.Post(cc.base+"/api/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	if err := apiError(resp); err != nil {
		return fmt.Errorf("login: %w", err)
	}
	var tok struct{ Token string }
	if err := cc.getJSON("/api/auth/csrf-token", &tok); err != nil {
		return err
	}
	cc.csrf = tok.Token
	return nil
}

func (cc *cellClient) getJSON(path string, v any) error {
	resp, err := cc.hc.Get(cc.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return apiError(resp)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}

// apiError turns a non-2xx answer into an error carrying the API's message,
// and closes the body.
func apiError(resp *http.Response) error {
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
		return fmt.Errorf("%s: %s (%s)", resp.Status, e.Error.Message, e.Error.Code)
	}
	return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
}

// progress prints how much of the bundle has been sent.
type progress struct {
	r       io.Reader
	w       io.Writer
	total   int64
	done    int64
	lastPct int64
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if pct := p.done * 100 / max(p.total, 1); pct != p.lastPct || err == io.EOF {
		p.lastPct = pct
		bar := strings.Repeat("#", int(pct/4)) + strings.Repeat(".", 25-int(pct/4))
		fmt.Fprintf(p.w, "\r[%s] %3d%% %d/%d MiB", bar, pct, p.done>>20, p.total>>20)
		if err == io.EOF {
			fmt.Fprintln(p.w)
		}
	}
	return n, err
}

func (c *CLI) updatePush(args []string) error {
	fs := c.newFlagSet("update push")
	device := fs.String("device", "", "the cell's API URL, e.g. http://192.168.1.20")
	bundlePath := fs.String("bundle", "cell.bundle", "the bundle to send")
	user := fs.String("user", "admin", "an admin account")
	pwFile := fs.String("password-file", "", "file holding the password (default: $CELL_PASSWORD)")
	wait := fs.Duration("wait", 10*time.Minute, "how long to wait for the cell to come back and report the outcome (0: do not wait)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *device == "" {
		return errors.New("-device is required")
	}
	password := os.Getenv("CELL_PASSWORD")
	if *pwFile != "" {
		b, err := os.ReadFile(*pwFile)
		if err != nil {
			return err
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	jar, _ := cookiejar.New(nil)
	cc := &cellClient{base: strings.TrimRight(*device, "/"), hc: &http.Client{Jar: jar, Timeout: 30 * time.Minute}}
	if err := cc.login(*user, password); err != nil {
		return err
	}
	var before systemUpdate
	if err := cc.getJSON("/api/system/update", &before); err != nil {
		return err
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
	req, err := http.NewRequest(http.MethodPost, cc.base+"/api/system/update", &progress{r: f, w: c.Stderr, total: fi.Size(), lastPct: -1})
	if err != nil {
		return err
	}
	req.ContentLength = fi.Size()
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("X-CSRF-Token", cc.csrf)
	resp, err := cc.hc.Do(req)
	if err != nil {
		return err
	}
	var accepted struct{ Version string }
	if resp.StatusCode/100 == 2 {
		json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&accepted)
	}
	if err := apiError(resp); err != nil {
		return fmt.Errorf("the cell refused the bundle: %w", err)
	}
	fmt.Fprintf(c.Stdout, "accepted version %s; the cell reboots into it on trial (it ran %s)\n", accepted.Version, before.Running)
	if *wait == 0 {
		return nil
	}
	return c.waitOutcome(cc, *user, password, accepted.Version, *wait)
}

// systemUpdate is GET /api/system/update.
type systemUpdate struct {
	Running string `json:"running_version"`
	Slot    int    `json:"root_slot"`
	Update  struct {
		Phase   string `json:"phase"`
		Version string `json:"version"`
		Message string `json:"message"`
	} `json:"update"`
}

// waitOutcome polls until the cell reports the outcome of installing version.
// The cell goes away while it reboots (once or twice), so errors are expected
// for a while.
func (c *CLI) waitOutcome(cc *cellClient, user, password, version string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	cc.hc.Timeout = 5 * time.Second
	var lastErr error
	for time.Now().Before(deadline) {
		time.Sleep(3 * time.Second)
		var st systemUpdate
		err := cc.getJSON("/api/system/update", &st)
		if err != nil && strings.Contains(err.Error(), "401") {
			err = cc.login(user, password)
		}
		if err != nil {
			lastErr = err
			continue
		}
		if st.Update.Version != version {
			continue
		}
		switch st.Update.Phase {
		case "committed":
			fmt.Fprintf(c.Stdout, "updated: version %s runs from root slot %d\n", st.Running, st.Slot)
			return nil
		case "rolled_back", "failed":
			return fmt.Errorf("update %s: %s; the cell runs version %s", st.Update.Phase, st.Update.Message, st.Running)
		}
	}
	return fmt.Errorf("no outcome within %s (last error: %v)", wait, lastErr)
}
