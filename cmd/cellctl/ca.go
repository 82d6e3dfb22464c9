package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pic-cell/cell/httpapi/client"
)

// First contact with a cell's HTTPS: its front's certificates come from the
// cell's own CA, whose root anyone may fetch over plain HTTP at
// http://CELL/ca.crt. `cellctl trust` fetches it, shows its SHA-256
// fingerprint for the person to compare with the one the cell shows, and keeps
// it in a per-user file; from then on every command that talks to that cell
// trusts that CA alone for it and refuses any other.

func init() {
	register("trust", "fetch a cell's CA from http://CELL/ca.crt, compare its fingerprint, keep it for HTTPS (also: ca fetch)", (*CLI).trust)
	register("ca", "the cells' CAs this user trusts (ca fetch: as trust)", (*CLI).ca)
}

func (c *CLI) ca(args []string) error {
	if len(args) > 0 && args[0] == "fetch" {
		return c.trust(args[1:])
	}
	fmt.Fprintln(c.Stderr, "usage: cellctl ca fetch -device https://CELL [-fingerprint FP] [-yes] [-ca-url URL]")
	return errUsage
}

// caFileMode: the file says which cells this user administers.
const caFileMode = 0o600

// trustDir is where the trusted CAs are: $XDG_CONFIG_HOME/pic-cell (or the
// platform's user configuration directory).
func trustDir() (string, error) {
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no directory to keep the cell's CA in (%w); pass -ca FILE", err)
	}
	return filepath.Join(d, "pic-cell"), nil
}

// trustFile is the file of the CA trusted for host.
func trustFile(host string) (string, error) {
	d, err := trustDir()
	if err != nil {
		return "", err
	}
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '_'
	}, strings.ToLower(host))
	return filepath.Join(d, name+".ca.pem"), nil
}

// trustedCA is a CA kept for a cell (or given with -ca).
type trustedCA struct {
	cert    *x509.Certificate
	file    string
	trusted string // when it was trusted, as the file says ("" if -ca)
}

// readCA reads the first certificate of a PEM file, and the date a file written
// by trust says it was trusted on.
func readCA(path string) (*trustedCA, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ca, err := parseCA(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t := &trustedCA{cert: ca, file: path}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "# trusted: "); ok {
			t.trusted = strings.TrimSpace(v)
		}
	}
	return t, nil
}

// parseCA parses the first PEM certificate of b, which must be a CA.
func parseCA(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM certificate in it")
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		if !cert.IsCA {
			return nil, fmt.Errorf("the certificate %q is not a certificate authority", cert.Subject.CommonName)
		}
		return cert, nil
	}
}

// loopback reports whether host is this machine: the only place plain http://
// may go.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseDevice reads a cell's address: https:// (the default when there is no
// scheme) or http:// to a loopback address only.
func parseDevice(device string) (*url.URL, error) {
	if device == "" {
		return nil, errors.New("-device is required (https://CELL)")
	}
	if !strings.Contains(device, "://") {
		device = "https://" + device
	}
	u, err := url.Parse(device)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%q is not a cell's address (https://CELL)", device)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !loopback(u.Hostname()) {
			return nil, fmt.Errorf("refusing plain http:// to %s: a password or a bundle would cross the network unencrypted, and the cell answers its API only over HTTPS; "+
				"use https://%s (once: cellctl trust -device https://%s)", u.Host, u.Host, u.Host)
		}
	default:
		return nil, fmt.Errorf("%q: the cell is reached over https://", device)
	}
	return u, nil
}

// cell is a client of a cell and what it trusts for it.
type cell struct {
	*client.Client
	url *url.URL
	ca  *trustedCA // nil: the system's roots (plain http on loopback, or no CA kept)
}

// cellFlags are the flags of every command that talks to a cell.
type cellFlags struct {
	caFile  string
	connect string
}

func (f *cellFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.caFile, "ca", "", "trust only this CA (PEM) for the cell, instead of the one cellctl trust kept")
	fs.StringVar(&f.connect, "connect", "", "HOST:PORT to connect to instead of the cell's address (which the certificate is checked against), e.g. 127.0.0.1:8443 for cellctl vm run")
}

// dial makes a client of the cell at device: over HTTPS it trusts -ca if
// given, else the CA `cellctl trust` kept for the host, and only that; with no
// CA kept it trusts the system's roots (a cell with a public certificate).
func (c *CLI) dial(device string, f cellFlags, timeout time.Duration) (*cell, error) {
	u, err := parseDevice(device)
	if err != nil {
		return nil, err
	}
	caFile := f.caFile
	cl := &cell{url: u}
	opts := []client.Option{client.WithTimeout(timeout)}
	if f.connect != "" {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil
		t.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, f.connect)
		}
		opts = append(opts, client.WithTransport(t))
	}
	if u.Scheme == "https" {
		if caFile == "" {
			f, err := trustFile(u.Hostname())
			if err != nil {
				return nil, err
			}
			if _, err := os.Stat(f); err == nil {
				caFile = f
			}
		}
		if caFile != "" {
			if cl.ca, err = readCA(caFile); err != nil {
				return nil, err
			}
			opts = append(opts, client.WithPinnedCA(cl.ca.cert))
		}
	}
	base := *u
	base.Path, base.RawQuery, base.Fragment = "", "", ""
	cl.Client = client.New(base.String(), opts...)
	return cl, nil
}

// explain turns a refused certificate into what a person can act on.
func (cl *cell) explain(err error) error {
	if err == nil {
		return nil
	}
	host := cl.url.Hostname()
	var m *client.CAMismatchError
	if errors.As(err, &m) {
		got := "a certificate authority with fingerprint " + m.Presented
		if m.Presented == "" {
			got = fmt.Sprintf("a certificate from another certificate authority (%q)", m.Issuer)
		}
		when := "gave with -ca " + cl.ca.file
		if cl.ca.trusted != "" {
			when = "trusted on " + cl.ca.trusted + " (kept in " + cl.ca.file + ")"
		}
		return &trustError{err: err, msg: fmt.Sprintf("the cell at %s presents %s, not the %s you %s; "+
			"it may be another cell, or something in between: nothing was sent. If this cell was reset or reflashed, "+
			"compare the fingerprint its console or setup page shows and run cellctl trust -device https://%s again",
			host, got, m.Pinned, when, cl.url.Host)}
	}
	var ua x509.UnknownAuthorityError
	if cl.ca == nil && errors.As(err, &ua) {
		return &trustError{err: err, msg: fmt.Sprintf("the cell at %s presents a certificate this computer does not trust: "+
			"run cellctl trust -device https://%s once (it fetches the cell's CA and shows its fingerprint to compare), or pass -ca FILE (%v)",
			host, cl.url.Host, ua)}
	}
	return err
}

// trustError is a cell refused for its certificate, said for a person.
type trustError struct {
	msg string
	err error
}

func (e *trustError) Error() string { return e.msg }
func (e *trustError) Unwrap() error { return e.err }

// trust: cellctl trust -device https://CELL [-fingerprint FP] [-yes] [-ca-url URL].
func (c *CLI) trust(args []string) error {
	fs := c.newFlagSet("trust")
	device := fs.String("device", "", "the cell, https://CELL")
	caURL := fs.String("ca-url", "", "where the cell serves its CA over plain HTTP (default http://CELL/ca.crt, port 80)")
	want := fs.String("fingerprint", "", "the CA's SHA-256 fingerprint as the cell shows it; when it matches, nothing is asked")
	yes := fs.Bool("yes", false, "keep the CA without asking (with no -fingerprint: without comparing)")
	out := fs.String("o", "", "write the CA here instead of the per-user file")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the cell")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := parseDevice(*device)
	if err != nil {
		return err
	}
	if *caURL == "" {
		h := u.Hostname()
		if strings.Contains(h, ":") {
			h = "[" + h + "]" // IPv6
		}
		*caURL = "http://" + h + "/ca.crt"
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	pemBytes, err := fetchCA(ctx, *caURL)
	if err != nil {
		return err
	}
	ca, err := parseCA(pemBytes)
	if err != nil {
		return fmt.Errorf("%s: %w", *caURL, err)
	}
	if ca.CheckSignatureFrom(ca) != nil {
		return fmt.Errorf("%s: %q is not a root (not self-signed)", *caURL, ca.Subject.CommonName)
	}
	fp := client.Fingerprint(ca.Raw)
	fmt.Fprintf(c.Stdout, "The cell at %s sent (over plain HTTP, so anyone in between could have changed it) the certificate authority\n  %s\n  SHA-256 %s\n",
		u.Host, ca.Subject.CommonName, fp)
	file := *out
	if file == "" {
		if file, err = trustFile(u.Hostname()); err != nil {
			return err
		}
	}
	if old, err := readCA(file); err == nil && !client.SameFingerprint(client.Fingerprint(old.cert.Raw), fp) {
		fmt.Fprintf(c.Stdout, "It replaces the CA with fingerprint %s trusted on %s.\n", client.Fingerprint(old.cert.Raw), old.trusted)
	}
	switch {
	case *want != "":
		if !client.SameFingerprint(*want, fp) {
			return fmt.Errorf("fingerprint mismatch: %s sent a CA with fingerprint %s, not the %s you gave; nothing is trusted "+
				"(check the fingerprint the cell shows; if they really differ, something other than the cell answered)", *caURL, fp, *want)
		}
		fmt.Fprintln(c.Stdout, "It matches the fingerprint you gave.")
	case *yes:
		fmt.Fprintln(c.Stdout, "Trusted without comparing (-yes).")
	default:
		fmt.Fprint(c.Stdout, "Compare it with the fingerprint the cell shows (its console, its setup page, or the root's sha256_fingerprint in GET /api/vault/certs).\n"+
			"Is it the same? [y/N] ")
		if !c.confirm() {
			return errors.New("not trusted: the fingerprint was not confirmed")
		}
	}
	if err := writeCA(file, u.Host, fp, ca); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "kept in %s; cellctl trusts only it for %s\n", file, u.Hostname())
	return nil
}

// confirm reads a yes from stdin.
func (c *CLI) confirm() bool {
	if c.Stdin == nil {
		return false
	}
	line, _ := bufio.NewReader(c.Stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

// fetchCA fetches the CA over plain HTTP: nothing is trusted yet, so TLS would
// prove nothing; the person's comparison of the fingerprint does.
func fetchCA(ctx context.Context, caURL string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, caURL, nil)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the cell's CA: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the cell's CA: %s answered %s", caURL, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 64<<10))
}

// writeCA keeps ca for the cell in file, mode 0600, with its fingerprint and
// the date in comments (curl --cacert and SSL_CERT_FILE read it as it is).
func writeCA(file, host, fp string, ca *x509.Certificate) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# The certificate authority of the cell at %s, kept by cellctl trust.\n", host)
	fmt.Fprintf(&b, "# SHA-256 fingerprint: %s\n", fp)
	fmt.Fprintf(&b, "# trusted: %s\n", time.Now().UTC().Format(time.RFC3339))
	b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}))
	tmp, err := os.CreateTemp(filepath.Dir(file), ".ca-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(caFileMode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := io.WriteString(tmp, b.String()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}
