// Package front is the cell's front door: Caddy, embedded as a library, in
// front of everything the cell serves over HTTP. It listens on 443 (TLS, every
// answer with HSTS and the security headers) and 80 (a redirect to https,
// GET /ca.crt with the CA's root, ACME's HTTP-01 challenges); /api/* and
// /health are proxied to the API over its unix socket, everything else is the
// admin UI's page.
//
// Why a library and not a supervised caddy binary: gokrazy runs one Go
// program per package, and one process is one thing to supervise, update and
// roll back; the CA's key never leaves the cell's process (the certificates
// are signed in-process through the Signer, the vault's issuing method, by a
// Caddy issuer module, tls.issuance.pic_vault); and the config is applied by
// caddy.Load from the reconcile loop, like every other part (Set is
// idempotent: the same Config does not reload Caddy). Caddy's admin endpoint
// is off and its config is not persisted: the database is the source of truth.
//
// Certificates: one per name and address (Config.Subjects), managed by
// certmagic (obtained at once, renewed when a third of their life is left,
// kept in Config.StorageDir). For public names listed in Config.ACME a public
// CA is asked first (HTTP-01 on port 80: the name must point at the cell),
// the vault being the fallback (the "tls" section of the config turns it on;
// netstack/system's TestFrontACME runs it against Caddy's acme_server). Caddy is a
// process-wide singleton: one Front runs at a time.
package front

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"

	// The modules the config uses.
	_ "github.com/caddyserver/caddy/v2/modules/caddyevents"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode/gzip"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"
)

// Signer signs the front's certificates: the vault's issuing method
// (cell/vault's Vault.Issue). It gets the certificate's public key and names
// and returns the certificate (DER) and the chain above it (DER, up to the root).
type Signer interface {
	Issue(pub crypto.PublicKey, dnsNames []string, ips []net.IP, ttl time.Duration) (certDER []byte, chain [][]byte, err error)
}

// Options build a Front.
type Options struct {
	Signer Signer
	Log    *slog.Logger
	// Name is the front's key in the modules' registry ("cell" by default).
	Name string
}

// Front runs Caddy.
type Front struct {
	name   string
	signer Signer
	log    *slog.Logger

	mu      sync.Mutex // serializes Set, Close and Renew
	last    []byte     // the JSON Caddy runs
	cfg     Config
	running bool

	stMu   sync.Mutex
	errs   map[string]string // last error per subject, cleared when one is obtained
	magics map[string]*certmagic.Config
}

var (
	registryMu sync.Mutex
	registry   = map[string]*Front{}
)

func lookup(name string) (*Front, error) {
	registryMu.Lock()
	defer registryMu.Unlock()
	f := registry[name]
	if f == nil {
		return nil, fmt.Errorf("front: no front named %q in this process", name)
	}
	return f, nil
}

// New returns a front that serves nothing until Set.
func New(o Options) (*Front, error) {
	if o.Signer == nil {
		return nil, errors.New("front: a Signer is required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Name == "" {
		o.Name = "cell"
	}
	f := &Front{name: o.Name, signer: o.Signer, log: o.Log, errs: map[string]string{}, magics: map[string]*certmagic.Config{}}
	registryMu.Lock()
	defer registryMu.Unlock()
	if registry[o.Name] != nil {
		return nil, fmt.Errorf("front: a front named %q already runs in this process", o.Name)
	}
	registry[o.Name] = f
	return f, nil
}

// Set makes Caddy serve cfg. The same cfg again does nothing.
func (f *Front) Set(cfg Config) error {
	raw, err := BuildJSON(cfg, f.name)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running && string(raw) == string(f.last) {
		return nil
	}
	if cfg.ACME != nil && len(cfg.ACME.RootsPEM) > 0 {
		if err := os.MkdirAll(cfg.StorageDir, 0o700); err != nil {
			return fmt.Errorf("front: %w", err)
		}
		if err := os.WriteFile(cfg.acmeRootsFile(), cfg.ACME.RootsPEM, 0o600); err != nil {
			return fmt.Errorf("front: the ACME CA's roots: %w", err)
		}
	}
	if err := caddy.Load(raw, false); err != nil {
		return fmt.Errorf("front: %w", err)
	}
	f.last, f.cfg, f.running = raw, cfg, true
	f.log.Info("front serving", "https", cfg.HTTPS, "http", cfg.HTTP, "names", cfg.Subjects())
	return nil
}

// JSON is the config Caddy runs (nil before Set).
func (f *Front) JSON() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Close stops Caddy (requests in flight get 5 s) and frees the front's name.
func (f *Front) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var err error
	if f.running {
		err = caddy.Stop()
		f.running, f.last = false, nil
	}
	registryMu.Lock()
	if registry[f.name] == f {
		delete(registry, f.name)
	}
	registryMu.Unlock()
	return err
}

// CertStatus is one name's certificate as Caddy's cache holds it.
type CertStatus struct {
	Name      string    `json:"name"`
	Issuer    string    `json:"issuer,omitempty"` // the issuing CA's common name
	NotAfter  time.Time `json:"not_after,omitzero"`
	DaysLeft  int       `json:"days_left"`
	LastError string    `json:"last_error,omitempty"`
}

// Certificates reports every subject's certificate (none yet: no issuer, the
// last error if one failed), in the order of Config.Subjects.
func (f *Front) Certificates() []CertStatus {
	f.mu.Lock()
	subjects := f.cfg.Subjects()
	running := f.running
	f.mu.Unlock()
	if !running {
		return nil
	}
	out := make([]CertStatus, 0, len(subjects))
	for _, s := range subjects {
		st := CertStatus{Name: s}
		var best *x509.Certificate
		for _, c := range caddytls.AllMatchingCertificates(s) {
			if c.Leaf != nil && (best == nil || c.Leaf.NotAfter.After(best.NotAfter)) {
				best = c.Leaf
			}
		}
		if best != nil {
			st.Issuer, st.NotAfter = best.Issuer.CommonName, best.NotAfter.UTC()
			st.DaysLeft = int(time.Until(best.NotAfter).Hours() / 24)
		}
		f.stMu.Lock()
		st.LastError = f.errs[s]
		f.stMu.Unlock()
		out = append(out, st)
	}
	return out
}

// Renew makes a new certificate for every subject now, whatever their age, and
// serves them at once. It returns every subject's error. A public name whose
// CA fails gets the vault's certificate, yet keeps serving a still valid one
// from the CA: certmagic serves the most recently issued of its issuers'
// certificates, and the vault's are backdated.
func (f *Front) Renew(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return errors.New("front: not running")
	}
	var errs []error
	for _, s := range f.cfg.Subjects() {
		if err := f.renewOne(ctx, s); err != nil {
			f.noteErr(s, err)
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
		}
	}
	return errors.Join(errs...)
}

func (f *Front) renewOne(ctx context.Context, subject string) error {
	policy := "vault"
	if f.cfg.ACME != nil && slices.Contains(f.cfg.acmeSubjects(), subject) {
		policy = "acme"
	}
	f.stMu.Lock()
	magic := f.magics[policy]
	f.stMu.Unlock()
	if magic == nil {
		return errors.New("Caddy has not set its certificate manager up yet")
	}
	var old []string
	for _, c := range caddytls.AllMatchingCertificates(subject) {
		old = append(old, c.Hash())
	}
	if err := magic.RenewCertSync(ctx, subject, true); err != nil {
		return err
	}
	// certmagic stores the new certificate but leaves the cache alone: load
	// it, then drop the ones it replaces, so the next handshake has it.
	cert, err := magic.CacheManagedCertificate(ctx, subject)
	if err != nil {
		return err
	}
	cache, err := cacheOf(magic)
	if err != nil {
		return err
	}
	var drop []string
	for _, h := range old {
		if h != cert.Hash() {
			drop = append(drop, h)
		}
	}
	cache.Remove(drop)
	return nil
}

// cacheOf is the certificate cache a certmagic.Config serves from. certmagic
// keeps it unexported and offers no way to replace a managed certificate
// before it is due, which "renew now" needs; the tests catch a certmagic that
// renames the field.
func cacheOf(cfg *certmagic.Config) (*certmagic.Cache, error) {
	v := reflect.ValueOf(cfg).Elem().FieldByName("certCache")
	if !v.IsValid() || v.Type() != reflect.TypeFor[*certmagic.Cache]() {
		return nil, errors.New("this certmagic has no certCache field: renewing now is not possible")
	}
	return *(**certmagic.Cache)(unsafe.Pointer(v.UnsafeAddr())), nil
}

func (f *Front) noteErr(subject string, err error) {
	f.stMu.Lock()
	defer f.stMu.Unlock()
	if err == nil {
		delete(f.errs, subject)
	} else {
		f.errs[subject] = err.Error()
	}
}

// vaultIssuer is the Caddy issuer module that signs through the front's Signer.
type vaultIssuer struct {
	Front string         `json:"front"`
	TTL   caddy.Duration `json:"ttl,omitempty"`
	// Policy is the automation policy the issuer is in: "acme" (the public
	// names, the vault second) or "vault".
	Policy string `json:"policy"`
}

func (vaultIssuer) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "tls.issuance." + issuerModule, New: func() caddy.Module { return new(vaultIssuer) }}
}

func (i *vaultIssuer) Provision(caddy.Context) error {
	_, err := lookup(i.Front)
	return err
}

// IssuerKey names the vault's certificates in Caddy's storage.
func (i *vaultIssuer) IssuerKey() string { return "pic_vault" }

// Issue signs csr through the Signer; the CA's key stays where it is.
func (i *vaultIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	f, err := lookup(i.Front)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("front: the CSR's signature: %w", err)
	}
	der, chain, err := f.signer.Issue(csr.PublicKey, csr.DNSNames, csr.IPAddresses, time.Duration(i.TTL))
	if err != nil {
		return nil, fmt.Errorf("the vault refused to sign: %w", err)
	}
	var b strings.Builder
	for _, d := range append([][]byte{der}, chain...) {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	return &certmagic.IssuedCertificate{Certificate: []byte(b.String())}, nil
}

// SetConfig hands the issuer the certmagic config it serves (Caddy calls it
// once the automation policy is built): Renew needs it.
func (i *vaultIssuer) SetConfig(cfg *certmagic.Config) {
	f, err := lookup(i.Front)
	if err != nil {
		return
	}
	f.stMu.Lock()
	defer f.stMu.Unlock()
	f.magics[i.Policy] = cfg
}

// events is the Caddy events handler that keeps each subject's last error.
type events struct {
	Front string `json:"front"`
}

func (events) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers." + eventsModule, New: func() caddy.Module { return new(events) }}
}

func (e *events) Handle(_ context.Context, ev caddy.Event) error {
	f, err := lookup(e.Front)
	if err != nil {
		return nil
	}
	id, _ := ev.Data["identifier"].(string)
	if id == "" {
		return nil
	}
	switch ev.Name() {
	case "cert_obtained":
		f.noteErr(id, nil)
	case "cert_failed":
		err, _ := ev.Data["error"].(error)
		if err == nil {
			err = errors.New("failed")
		}
		f.noteErr(id, err)
		f.log.Warn("certificate", "name", id, "err", err)
	}
	return nil
}

// logWriter is Caddy's log output: its JSON lines go to the front's logger.
type logWriter struct {
	Front string `json:"front"`
}

func (logWriter) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.logging.writers." + logModule, New: func() caddy.Module { return new(logWriter) }}
}

func (w *logWriter) String() string    { return "the cell's log book" }
func (w *logWriter) WriterKey() string { return "pic_front:" + w.Front }

func (w *logWriter) OpenWriter() (io.WriteCloser, error) {
	f, err := lookup(w.Front)
	if err != nil {
		return nil, err
	}
	return lineLogger{f.log}, nil
}

type lineLogger struct{ log *slog.Logger }

// Write logs one of Caddy's JSON lines: its info is the cell's debug (Caddy
// says much at info), warnings and errors stay what they are.
func (l lineLogger) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		l.log.Debug(strings.TrimSpace(string(p)))
		return len(p), nil
	}
	level := slog.LevelDebug
	switch m["level"] {
	case "warn":
		level = slog.LevelWarn
	case "error", "panic", "fatal", "dpanic":
		level = slog.LevelError
	}
	msg, _ := m["msg"].(string)
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "msg" && k != "level" && k != "ts" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	attrs := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		attrs = append(attrs, k, m[k])
	}
	l.log.Log(context.Background(), level, msg, attrs...)
	return len(p), nil
}

func (lineLogger) Close() error { return nil }

func init() {
	caddy.RegisterModule(vaultIssuer{})
	caddy.RegisterModule(events{})
	caddy.RegisterModule(logWriter{})
}

// Interface guards.
var (
	_ certmagic.Issuer      = (*vaultIssuer)(nil)
	_ caddytls.ConfigSetter = (*vaultIssuer)(nil)
	_ caddy.Provisioner     = (*vaultIssuer)(nil)
	_ caddy.WriterOpener    = (*logWriter)(nil)
)
