// Package vault owns the cell's certificate authority and the keys it trusts:
// the CA root, the certificates it issues (to the front, the cell's TLS server,
// for the cell's own names; and through the API, for the household's devices
// and services), their revocation and the CRL, the trust keys (ed25519 public
// keys the cell trusts, such as the one that signs firmware updates), and the
// vault's age public key. Every change is audited in the transaction that
// stores it (vault.ca_create, vault.cert_issue, vault.cert_revoke,
// vault.trust_key_add, vault.trust_key_delete) and every certificate made or
// revoked is announced as a storage.ChangeCert, so the front can be rebuilt.
// No audit entry, log line or stored record ever holds a private key.
//
// The API (httpapi/vault.go): GET /api/vault/ca (PEM, ?format=der) and GET
// /api/vault/crl (PEM, ?format=der) are public, before setup too; GET and POST
// /api/vault/certs, POST /api/vault/certs/:serial/revoke, GET and POST
// /api/vault/trust-keys, GET and DELETE /api/vault/trust-keys/:name and GET
// /api/vault/age are the admin's.
//
// The choices, where the API reference says nothing:
//
//   - The root is made by Open, at the cell's first start (before setup, so a
//     new device can fetch it from GET /api/vault/ca at once): ECDSA P-256,
//     valid from an hour before it was made until 10 years after, path length
//     0 (it signs leaves only), key usages certificate and CRL signing. Its
//     name is "Personal Internet Cell CA <cell name>" when the cell was set up
//     already (a cell upgraded to this version), else "Personal Internet Cell
//     CA <8 random hex digits>": at first start there is no name yet, and the
//     root never changes afterwards, since every device that trusts it would
//     have to trust it again. Its private key is a vault secret
//     (storage.CAKeyName, age-encrypted with the cell's identity), its
//     certificate a storage.Cert of kind "root", both written in one
//     transaction with the audit entry (actor "cell"). A root whose key cannot
//     be read makes Open fail, as a damaged audit key does: the cell never
//     quietly makes a second root.
//   - Serials are 127 random bits, shown as lowercase hex without leading
//     zeros; a serial in a path may also be upper case and carry the colons
//     openssl prints (3F:9A:...). Fingerprints are the SHA-256 of the DER,
//     upper-case hex pairs joined by colons, as openssl and phones show them.
//   - Every certificate starts 5 minutes in the past (a device whose clock is
//     slightly behind accepts it at once) and never outlives the root: its end
//     is cut to the root's.
//   - A certificate made through the API (IssueCert, POST /api/vault/certs)
//     gets a new ECDSA P-256 key made by the cell, returned once as PKCS#8 PEM
//     in that response and never stored, logged or audited; it serves both as
//     a TLS server and a TLS client certificate. Its common name is required:
//     a DNS name, an IP address, or a plain name of 1-64 letters, digits,
//     spaces, '.', '_' and '-' (a client such as "Alice Laptop"). A common
//     name that is a DNS name or an address is also a SAN (clients read only
//     SANs). A SAN must be a DNS name (a leading "*." makes a wildcard) or an
//     IP address; at most 32 in all, duplicates dropped, names lower-cased.
//     days is 1-825 (825 is what Apple devices accept for a certificate under
//     a root a user installed), 0 or left out meaning 365.
//   - Issue (the front's Signer) takes the front's own public key (ECDSA
//     P-256/384/521, RSA of 2048 bits or more, ed25519) and the names it
//     serves, checked like the API's SANs; ttl 0 means 30 days, at most 825
//     days. The certificate is a TLS server certificate (kind "front"),
//     audited with actor "front". The names are not limited to the cell's
//     domain: the front decides what it serves.
//   - Revoking an unknown serial is 404 (cert_not_found); revoking one that is
//     revoked already, or the root, is 409 (already_revoked, root_not_revocable).
//     A revoked certificate stays listed, with its revoked_at.
//   - The CRL lists every revoked certificate, is signed by the root, valid 7
//     days, and is remade after each revocation or once a day old; its number
//     is the Unix time it was made (and above the last one this process
//     made), so a newer CRL always has a larger number.
//   - A trust key is an ed25519 public key in any of the forms a user has at
//     hand: standard base64 of the 32 bytes (what cellctl keygen prints and
//     writes to STEM.pub), a PEM "PUBLIC KEY" block (openssl pkey -pubout), or
//     an OpenSSH "ssh-ed25519 AAAA... comment" line. It is stored as base64
//     and shown with the fingerprint ssh-keygen -l prints. Its name is a DNS
//     label (1-63 of a-z, 0-9, '-'); its purpose a word of 1-32 of a-z, 0-9
//     and '-' ("general" when left out). The same key cannot be trusted twice
//     under two names (409 key_already_trusted); at most 100 keys.
package vault

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/storage"
)

// Bounds and defaults (see the package doc).
const (
	RootYears       = 10
	DefaultDays     = 365
	MaxDays         = 825
	MaxSANs         = 32
	DefaultFrontTTL = 30 * 24 * time.Hour
	MaxTTL          = MaxDays * 24 * time.Hour
	Backdate        = 5 * time.Minute
	CRLValidity     = 7 * 24 * time.Hour
	crlRemake       = 24 * time.Hour
	// RootNamePrefix starts the root's common name.
	RootNamePrefix = "Personal Internet Cell CA "
)

// Auditor writes a change's audit entry in the transaction that stores it.
type Auditor interface {
	Within(e storage.Entry) storage.Within
}

// Options are what the vault is built over.
type Options struct {
	DB    *storage.DB // required
	Audit Auditor     // required
	Log   *slog.Logger
	Now   func() time.Time
	Rand  io.Reader
}

// Vault is the capability.
type Vault struct {
	db    *storage.DB
	audit Auditor
	log   *slog.Logger
	now   func() time.Time
	rand  io.Reader

	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey

	crlMu   sync.Mutex
	crlDER  []byte
	crlAt   time.Time
	crlNum  int64
	revoked uint64 // revocations by this process; the CRL is remade when it moved
	crlRev  uint64
}

// Open returns the vault, making the CA root when the database has none.
func Open(o Options) (*Vault, error) {
	if o.DB == nil || o.Audit == nil {
		return nil, errors.New("vault: DB and Audit are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	v := &Vault{db: o.DB, audit: o.Audit, log: o.Log, now: o.Now, rand: o.Rand}
	var made bool
	err := o.DB.View(func(tx *storage.Tx) error {
		found, err := v.loadRoot(tx)
		made = found
		return err
	})
	if err == nil && !made {
		err = o.DB.Update(func(tx *storage.Tx) error {
			if found, err := v.loadRoot(tx); err != nil || found {
				return err
			}
			return v.makeRoot(tx)
		})
		if err == nil {
			v.log.Info("made the CA root", "serial", serialOf(v.root), "name", v.root.Subject.CommonName, "sha256", Fingerprint(v.root.Raw))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	return v, nil
}

// loadRoot reads the root and its key inside tx; found is false when there is none.
func (v *Vault) loadRoot(tx *storage.Tx) (bool, error) {
	c, found, err := v.db.Certs().RootTx(tx)
	if err != nil || !found {
		return false, err
	}
	cert, err := x509.ParseCertificate(c.DER)
	if err != nil {
		return true, fmt.Errorf("the CA root %s is damaged: %w", c.Serial, err)
	}
	raw, err := v.db.Vault.GetTx(tx, storage.CAKeyName)
	if err != nil {
		return true, fmt.Errorf("the CA root's private key cannot be read: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(raw)
	clear(raw)
	if err != nil {
		return true, errors.New("the CA root's private key in the vault is damaged")
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return true, errors.New("the CA root's private key in the vault does not match its certificate")
	}
	v.root, v.rootKey = cert, key
	return true, nil
}

// makeRoot makes the root, stores its certificate, its key and the audit entry in tx.
func (v *Vault) makeRoot(tx *storage.Tx) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), v.rand)
	if err != nil {
		return err
	}
	serial, err := v.serial()
	if err != nil {
		return err
	}
	label := ""
	if d, found, err := config.LoadTx(v.db, tx); err == nil && found && d.Cell().Name != "" {
		label = d.Cell().Name
	} else {
		var b [4]byte
		if _, err := io.ReadFull(v.rand, b[:]); err != nil {
			return err
		}
		label = hex.EncodeToString(b[:])
	}
	now := v.now().UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: RootNamePrefix + label, Organization: []string{"Personal Internet Cell"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(RootYears, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(v.rand, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	defer clear(keyDER)
	rec := storage.Cert{Serial: serialOf(cert), Kind: storage.CertRoot, CommonName: cert.Subject.CommonName, SANs: []string{},
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, DER: der}
	if err := v.db.Certs().CreateTx(tx, rec); err != nil {
		return err
	}
	if err := v.db.Vault.PutTx(tx, storage.CAKeyName, keyDER); err != nil {
		return err
	}
	e := storage.Entry{Actor: "cell", Action: "vault.ca_create", TargetType: "ca", TargetID: rec.Serial, Result: "ok",
		Details: map[string]string{"common_name": rec.CommonName, "sha256": Fingerprint(der), "not_after": rec.NotAfter.Format(time.RFC3339)}}
	if err := v.audit.Within(e)(tx); err != nil {
		return err
	}
	v.root, v.rootKey = cert, key
	return nil
}

// Root is the CA's root certificate (parsed; do not modify it).
func (v *Vault) Root() *x509.Certificate { return v.root }

// RootDER is the root certificate, DER.
func (v *Vault) RootDER() []byte { return bytes.Clone(v.root.Raw) }

// RootPEM is the root certificate, PEM.
func (v *Vault) RootPEM() []byte { return pemOf("CERTIFICATE", v.root.Raw) }

// RootInfo is the root as GET /api/vault/certs lists it.
func (v *Vault) RootInfo() Cert {
	return v.view(storage.Cert{Serial: serialOf(v.root), Kind: storage.CertRoot, CommonName: v.root.Subject.CommonName, SANs: []string{},
		NotBefore: v.root.NotBefore, NotAfter: v.root.NotAfter, DER: v.root.Raw})
}

// AgePublicKey is the age recipient of the cell's vault (safe to show): what a
// backup or a secret for this cell is encrypted to.
func (v *Vault) AgePublicKey() string { return v.db.Vault.PublicKey() }

// Fingerprint is the SHA-256 of der, upper-case hex pairs joined by colons.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// serial is a new random positive serial of 127 bits.
func (v *Vault) serial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := io.ReadFull(v.rand, b[:]); err != nil {
			return nil, err
		}
		b[0] &= 0x7f
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
}

func serialOf(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// normalSerial reads a serial as a path gives it; ok is false when it cannot be one.
func normalSerial(s string) (string, bool) {
	s = strings.ToLower(strings.ReplaceAll(s, ":", ""))
	if s == "" || len(s) > 40 {
		return "", false
	}
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 {
		return "", false
	}
	return n.Text(16), true
}

// Cert is a certificate as the API shows it: never its private key.
type Cert struct {
	Serial      string     `json:"serial"`
	Kind        string     `json:"kind"` // root, issued (through the API), front (the cell's TLS server)
	CommonName  string     `json:"common_name"`
	SANs        []string   `json:"sans"`
	NotBefore   time.Time  `json:"not_before"`
	NotAfter    time.Time  `json:"not_after"`
	RevokedAt   *time.Time `json:"revoked_at"`
	Status      string     `json:"status"` // valid, revoked, expired
	Fingerprint string     `json:"sha256_fingerprint"`
	Certificate string     `json:"certificate"` // PEM
}

func (v *Vault) view(c storage.Cert) Cert {
	st := "valid"
	switch {
	case c.RevokedAt != nil:
		st = "revoked"
	case v.now().After(c.NotAfter):
		st = "expired"
	}
	sans := c.SANs
	if sans == nil {
		sans = []string{}
	}
	return Cert{Serial: c.Serial, Kind: c.Kind, CommonName: c.CommonName, SANs: sans, NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(),
		RevokedAt: c.RevokedAt, Status: st, Fingerprint: Fingerprint(c.DER), Certificate: string(pemOf("CERTIFICATE", c.DER))}
}

// Certs lists every certificate the CA made, the root first, then by age.
func (v *Vault) Certs() ([]Cert, error) {
	cs, err := v.db.Certs().List()
	if err != nil {
		return nil, err
	}
	out := make([]Cert, 0, len(cs))
	for _, c := range cs {
		if c.Kind == storage.CertRoot {
			out = append([]Cert{v.view(c)}, out...)
			continue
		}
		out = append(out, v.view(c))
	}
	return out, nil
}

// Cert returns one certificate by its serial (as Revoke reads it).
func (v *Vault) Cert(serial string) (Cert, error) {
	s, ok := normalSerial(serial)
	if !ok {
		return Cert{}, notFound(serial)
	}
	c, err := v.db.Certs().Get(s)
	if errors.Is(err, storage.ErrNotFound) {
		return Cert{}, notFound(serial)
	}
	if err != nil {
		return Cert{}, err
	}
	return v.view(c), nil
}

func notFound(serial string) error {
	return fault.Errorf(fault.ErrNotFound, "cert_not_found", "no certificate of this cell's CA has the serial %s", names.Quote(serial))
}

// NewCert is the body of POST /api/vault/certs.
type NewCert struct {
	CommonName string   `json:"common_name"` // required: a DNS name, an address or a plain name
	SANs       []string `json:"sans"`        // DNS names and IP addresses, at most 32
	Days       int      `json:"days"`        // 1-825; 0 means 365
}

// Issued is the answer to POST /api/vault/certs: the certificate, the root
// that signed it, and its private key, shown only here.
type Issued struct {
	Cert
	PrivateKey string `json:"private_key"` // PKCS#8 PEM; the cell keeps no copy
	CA         string `json:"ca"`          // the root, PEM
}

// IssueCert makes a key pair and a certificate for it (see the package doc),
// stores the certificate with its audit entry, and returns both; the private
// key exists nowhere else.
func (v *Vault) IssueCert(ctx context.Context, in NewCert, audit storage.Entry) (Issued, error) {
	if err := ctx.Err(); err != nil {
		return Issued{}, err
	}
	cn, err := checkCommonName(in.CommonName)
	if err != nil {
		return Issued{}, err
	}
	sans := append([]string{}, in.SANs...)
	if isName(cn) {
		sans = append([]string{cn}, sans...)
	}
	dnsNames, ips, err := parseSANs("sans", sans)
	if err != nil {
		return Issued{}, err
	}
	days := in.Days
	if days == 0 {
		days = DefaultDays
	}
	if days < 1 || days > MaxDays {
		return Issued{}, fault.Invalid("invalid_days", "days must be from 1 to %d (0 or left out means %d; got %d)", MaxDays, DefaultDays, in.Days)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), v.rand)
	if err != nil {
		return Issued{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Issued{}, err
	}
	defer clear(keyDER)
	rec, err := v.sign(&key.PublicKey, cn, dnsNames, ips, time.Duration(days)*24*time.Hour, storage.CertIssued,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, audit,
		map[string]string{"days": fmt.Sprint(days)})
	if err != nil {
		return Issued{}, err
	}
	return Issued{Cert: v.view(rec), PrivateKey: string(pemOf("PRIVATE KEY", keyDER)), CA: string(v.RootPEM())}, nil
}

// Issue signs a TLS server certificate for the front (the cell's TLS server)
// over pub, its own key (*ecdsa.PublicKey, *rsa.PublicKey of 2048 bits or more,
// or ed25519.PublicKey), for dnsNames and ips (at least one name in all, at
// most 32; DNS names may start with "*."), valid ttl (0: 30 days; at most 825
// days, and never past the root). It returns the certificate (DER) and the
// chain above it: the root alone, for a front that serves the full chain. It is
// stored (kind "front") and audited in one transaction, and announced as a
// storage.ChangeCert.
func (v *Vault) Issue(pub crypto.PublicKey, dnsNames []string, ips []net.IP, ttl time.Duration) (certDER []byte, chain [][]byte, err error) {
	if err := checkPublicKey(pub); err != nil {
		return nil, nil, err
	}
	if ttl == 0 {
		ttl = DefaultFrontTTL
	}
	if ttl < time.Minute || ttl > MaxTTL {
		return nil, nil, fault.Invalid("invalid_ttl", "a certificate's lifetime must be from a minute to %d days (got %s)", MaxDays, ttl)
	}
	all := append([]string{}, dnsNames...)
	for _, ip := range ips {
		if ip == nil {
			return nil, nil, fault.Invalid("invalid_san", "an IP address is empty")
		}
		all = append(all, ip.String())
	}
	dns, addrs, err := parseSANs("names", all)
	if err != nil {
		return nil, nil, err
	}
	if len(dns)+len(addrs) == 0 {
		return nil, nil, fault.Invalid("invalid_san", "a certificate for the front needs at least one DNS name or IP address")
	}
	cn := ""
	if len(dns) > 0 {
		cn = dns[0]
	} else {
		cn = addrs[0].String()
	}
	e := storage.Entry{Actor: "front", Action: "vault.cert_issue"}
	rec, err := v.sign(pub, cn, dns, addrs, ttl, storage.CertFront, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, e,
		map[string]string{"ttl": ttl.String()})
	if err != nil {
		return nil, nil, err
	}
	return rec.DER, [][]byte{v.RootDER()}, nil
}

// sign makes a leaf certificate over pub, stores it and its audit entry in one
// transaction, and returns what it stored.
func (v *Vault) sign(pub crypto.PublicKey, cn string, dnsNames []string, ips []net.IP, ttl time.Duration, kind string,
	eku []x509.ExtKeyUsage, audit storage.Entry, details map[string]string) (storage.Cert, error) {
	serial, err := v.serial()
	if err != nil {
		return storage.Cert{}, err
	}
	now := v.now().UTC().Truncate(time.Second)
	notAfter := now.Add(ttl)
	if notAfter.After(v.root.NotAfter) {
		notAfter = v.root.NotAfter
	}
	ku := x509.KeyUsageDigitalSignature
	if _, isRSA := pub.(*rsa.PublicKey); isRSA {
		ku |= x509.KeyUsageKeyEncipherment // TLS 1.2's RSA key exchange
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(v.rand, tmpl, v.root, pub, v.rootKey)
	if err != nil {
		return storage.Cert{}, fmt.Errorf("vault: sign: %w", err)
	}
	sans := make([]string, 0, len(dnsNames)+len(ips))
	sans = append(sans, dnsNames...)
	for _, ip := range ips {
		sans = append(sans, ip.String())
	}
	rec := storage.Cert{Serial: serial.Text(16), Kind: kind, CommonName: cn, SANs: sans, NotBefore: tmpl.NotBefore, NotAfter: notAfter, DER: der}
	audit.TargetType, audit.TargetID, audit.Result = "cert", rec.Serial, "ok"
	d := map[string]string{"kind": kind, "common_name": cn, "sans": abbreviate(strings.Join(sans, " "), 256),
		"not_after": notAfter.Format(time.RFC3339), "sha256": Fingerprint(der)}
	for k, val := range details {
		d[k] = val
	}
	audit.Details = d
	if err := v.db.Certs().Create(rec, v.audit.Within(audit)); err != nil {
		return storage.Cert{}, err
	}
	v.log.Info("issued a certificate", "serial", rec.Serial, "kind", kind, "common_name", cn)
	return rec, nil
}

func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Revoke marks a certificate revoked (the CRL lists it from now on) and
// returns it; the audit entry is stored with the change.
func (v *Vault) Revoke(ctx context.Context, serial string, audit storage.Entry) (Cert, error) {
	s, ok := normalSerial(serial)
	if !ok {
		return Cert{}, notFound(serial)
	}
	audit.TargetType, audit.TargetID, audit.Result = "cert", s, "ok"
	var cn string
	c, err := v.db.Certs().Revoke(s, v.now(), func(tx *storage.Tx) error {
		c, err := v.db.Certs().GetTx(tx, s)
		if err != nil {
			return err
		}
		cn = c.CommonName
		audit.Details = map[string]string{"common_name": cn, "kind": c.Kind}
		return v.audit.Within(audit)(tx)
	})
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return Cert{}, notFound(serial)
	case errors.Is(err, storage.ErrConflict):
		if s == serialOf(v.root) {
			return Cert{}, fault.Errorf(fault.ErrConflict, "root_not_revocable", "%s is the CA's root: it cannot be revoked (every certificate the cell issued hangs on it)", s)
		}
		return Cert{}, fault.Errorf(fault.ErrConflict, "already_revoked", "the certificate %s is revoked already", s)
	case err != nil:
		return Cert{}, err
	}
	v.crlMu.Lock()
	v.revoked++
	v.crlMu.Unlock()
	v.log.Info("revoked a certificate", "serial", s, "common_name", cn)
	return v.view(c), nil
}

// CRL is the certificate revocation list signed by the root, DER and PEM (see
// the package doc for when it is remade).
func (v *Vault) CRL() (der, pemBytes []byte, err error) {
	v.crlMu.Lock()
	defer v.crlMu.Unlock()
	now := v.now().UTC().Truncate(time.Second)
	if v.crlDER != nil && v.crlRev == v.revoked && now.Sub(v.crlAt) < crlRemake && !now.Before(v.crlAt) {
		return bytes.Clone(v.crlDER), pemOf("X509 CRL", v.crlDER), nil
	}
	rev := v.revoked
	cs, err := v.db.Certs().List()
	if err != nil {
		return nil, nil, err
	}
	var entries []x509.RevocationListEntry
	for _, c := range cs {
		if c.RevokedAt == nil {
			continue
		}
		n, ok := new(big.Int).SetString(c.Serial, 16)
		if !ok {
			return nil, nil, fmt.Errorf("vault: stored serial %q is not hex", c.Serial)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: c.RevokedAt.UTC()})
	}
	num := max(now.Unix(), v.crlNum+1)
	der, err = x509.CreateRevocationList(v.rand, &x509.RevocationList{
		Number:                    big.NewInt(num),
		ThisUpdate:                now,
		NextUpdate:                now.Add(CRLValidity),
		RevokedCertificateEntries: entries,
	}, v.root, v.rootKey)
	if err != nil {
		return nil, nil, fmt.Errorf("vault: CRL: %w", err)
	}
	v.crlDER, v.crlAt, v.crlNum, v.crlRev = der, now, num, rev
	return bytes.Clone(der), pemOf("X509 CRL", der), nil
}
