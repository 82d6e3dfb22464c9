package vault

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

// auditor appends entries in the storing transaction, as cell/audit does.
type auditor struct{ db *storage.DB }

func (a auditor) Within(e storage.Entry) storage.Within {
	e.Time = time.Now().UTC().Format(storage.TimeFormat)
	return func(tx *storage.Tx) error { _, err := a.db.Audit().AppendTx(tx, e); return err }
}

type world struct {
	t    *testing.T
	dir  string
	db   *storage.DB
	v    *Vault
	now  time.Time
	seen []storage.Change
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), now: time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)}
	w.open()
	return w
}

func (w *world) open() {
	w.t.Helper()
	db, err := storage.Open(w.dir)
	if err != nil {
		w.t.Fatal(err)
	}
	db.OnCommit(func(c storage.Change) { w.seen = append(w.seen, c) })
	w.db = db
	w.t.Cleanup(func() { db.Close() })
	v, err := Open(Options{DB: db, Audit: auditor{db}, Now: func() time.Time { return w.now }})
	if err != nil {
		w.t.Fatal(err)
	}
	w.v = v
}

func (w *world) reopen() {
	w.t.Helper()
	if err := w.db.Check(); err != nil {
		w.t.Fatal(err)
	}
	w.db.Close()
	w.open()
}

func (w *world) audit() []storage.Entry {
	var out []storage.Entry
	w.db.Audit().Each(func(e storage.Entry) error { out = append(out, e); return nil })
	return out
}

func (w *world) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(w.v.Root())
	return p
}

func isKind(err, kind error, code string) bool {
	var fe *fault.Error
	return errors.Is(err, kind) && errors.As(err, &fe) && fe.Code == code
}

func TestRootMadeOnceAndKept(t *testing.T) {
	w := newWorld(t)
	root := w.v.Root()
	if !root.IsCA || !root.MaxPathLenZero || root.MaxPathLen != 0 || root.KeyUsage&x509.KeyUsageCertSign == 0 || root.KeyUsage&x509.KeyUsageCRLSign == 0 {
		t.Errorf("root constraints: CA %v, pathlen %d/%v, usage %b", root.IsCA, root.MaxPathLen, root.MaxPathLenZero, root.KeyUsage)
	}
	if k, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("root key %T, want ECDSA P-256", root.PublicKey)
	}
	if !root.NotAfter.Equal(w.now.AddDate(10, 0, 0)) || !root.NotBefore.Equal(w.now.Add(-time.Hour)) {
		t.Errorf("root valid from %s until %s; want an hour ago to 10 years from now", root.NotBefore, root.NotAfter)
	}
	suffix, ok := strings.CutPrefix(root.Subject.CommonName, RootNamePrefix)
	if !ok || len(suffix) != 8 || strings.Trim(suffix, "0123456789abcdef") != "" {
		t.Errorf("root name %q, want %q and 8 hex digits (no cell name before setup)", root.Subject.CommonName, RootNamePrefix)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	// The key is a vault secret, and it matches.
	raw, err := w.db.Vault.Get(storage.CAKeyName)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(raw)
	if err != nil || !k.(*ecdsa.PrivateKey).PublicKey.Equal(root.PublicKey) {
		t.Fatalf("vault key: %v", err)
	}
	// One audit entry, no key material in it; the commit was announced.
	entries := w.audit()
	if len(entries) != 1 || entries[0].Action != "vault.ca_create" || entries[0].TargetID != serialOf(root) || entries[0].Details["sha256"] != Fingerprint(root.Raw) {
		t.Fatalf("audit = %+v", entries)
	}
	if len(w.seen) != 1 || w.seen[0] != (storage.Change{Kind: storage.ChangeCert, Key: serialOf(root)}) {
		t.Errorf("changes = %+v", w.seen)
	}
	// The database file never holds the key in the clear.
	dbRaw, err := os.ReadFile(filepath.Join(w.dir, "cell.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(dbRaw, raw) || bytes.Contains(dbRaw, k.(*ecdsa.PrivateKey).D.Bytes()) {
		t.Error("the CA's private key is in cell.db in the clear")
	}
	fp := Fingerprint(w.v.RootDER())
	w.reopen()
	if got := Fingerprint(w.v.RootDER()); got != fp {
		t.Fatalf("root after restart %s, want %s", got, fp)
	}
	if n := len(w.audit()); n != 1 {
		t.Errorf("%d audit entries after restart, want still 1", n)
	}
	// A damaged key stops the cell rather than making a second root.
	if err := w.db.Vault.Put(storage.CAKeyName, []byte("damaged")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{DB: w.db, Audit: auditor{w.db}}); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("Open over a damaged key = %v", err)
	}
}

func TestRootNamedAfterASetUpCell(t *testing.T) {
	dir := t.TempDir()
	db, err := storage.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := map[string]any{"cell": map[string]string{"name": "attic", "domain": "attic.example.org"}}
	if _, err := db.Settings().PutConfigAudited(cfg, storage.Entry{Actor: "test", Action: "config"}); err != nil {
		t.Fatal(err)
	}
	v, err := Open(Options{DB: db, Audit: auditor{db}})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Root().Subject.CommonName; got != RootNamePrefix+"attic" {
		t.Errorf("root name %q", got)
	}
}

func TestIssueCert(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	is, err := w.v.IssueCert(ctx, NewCert{CommonName: "NAS.home.example.org", SANs: []string{"nas", "10.77.0.5", "fd77::5", "nas"}}, storage.Entry{Actor: "admin", Action: "vault.cert_issue"})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(is.Certificate))
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: w.pool(), DNSName: "nas.home.example.org", CurrentTime: w.now}); err != nil {
		t.Errorf("verify as a server: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: w.pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: w.now}); err != nil {
		t.Errorf("verify as a client: %v", err)
	}
	wantSANs := []string{"nas.home.example.org", "nas", "10.77.0.5", "fd77::5"}
	if fmt.Sprint(is.SANs) != fmt.Sprint(wantSANs) || cert.Subject.CommonName != "NAS.home.example.org" || len(cert.IPAddresses) != 2 {
		t.Errorf("sans %v (want %v), cn %q, ips %v", is.SANs, wantSANs, cert.Subject.CommonName, cert.IPAddresses)
	}
	if d := cert.NotAfter.Sub(w.now); d != DefaultDays*24*time.Hour {
		t.Errorf("lifetime %s, want the default %d days", d, DefaultDays)
	}
	if cert.NotBefore != w.now.Add(-Backdate) {
		t.Errorf("not before %s", cert.NotBefore)
	}
	// The key handed out is the certificate's, and the cell kept no copy.
	kblk, _ := pem.Decode([]byte(is.PrivateKey))
	if kblk == nil || kblk.Type != "PRIVATE KEY" {
		t.Fatalf("private key %.40q", is.PrivateKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(kblk.Bytes)
	if err != nil || !k.(*ecdsa.PrivateKey).PublicKey.Equal(cert.PublicKey) {
		t.Fatalf("the key does not match the certificate: %v", err)
	}
	if is.CA != string(w.v.RootPEM()) || is.Status != "valid" || is.Kind != storage.CertIssued {
		t.Errorf("issued = %+v", is.Cert)
	}
	w.db.Close()
	dbRaw, _ := os.ReadFile(filepath.Join(w.dir, "cell.db"))
	for _, secret := range [][]byte{kblk.Bytes, k.(*ecdsa.PrivateKey).D.Bytes()} {
		if bytes.Contains(dbRaw, secret) {
			t.Error("the issued private key is in cell.db")
		}
	}
	w.open()
	for _, e := range w.audit() {
		if strings.Contains(fmt.Sprintf("%+v", e), "PRIVATE") || strings.Contains(fmt.Sprintf("%+v", e), base64.StdEncoding.EncodeToString(kblk.Bytes)[:40]) {
			t.Errorf("key material in the audit entry %+v", e)
		}
	}
	list, err := w.v.Certs()
	if err != nil || len(list) != 2 || list[0].Kind != storage.CertRoot || list[1].Serial != is.Serial {
		t.Fatalf("certs = %+v, %v", list, err)
	}
	if got, err := w.v.Cert(strings.ToUpper(is.Serial)); err != nil || got.Serial != is.Serial {
		t.Errorf("Cert by upper-case serial = %+v, %v", got, err)
	}
	// A plain name is a client's: no SAN. days at the bound.
	is2, err := w.v.IssueCert(ctx, NewCert{CommonName: "Alice Laptop", Days: MaxDays}, storage.Entry{})
	if err != nil || len(is2.SANs) != 0 || is2.NotAfter.Sub(w.now) != MaxDays*24*time.Hour {
		t.Errorf("plain name: %+v, %v", is2.Cert, err)
	}
}

func TestIssueCertRefusesHostileInput(t *testing.T) {
	w := newWorld(t)
	for _, c := range []struct {
		name string
		in   NewCert
		code string
	}{
		{"no common name", NewCert{}, "invalid_common_name"},
		{"shell in the CN", NewCert{CommonName: "$(reboot)"}, "invalid_common_name"},
		{"a semicolon", NewCert{CommonName: "nas;rm -rf /"}, "invalid_common_name"},
		{"dot-dot-slash", NewCert{CommonName: "../../etc/passwd"}, "invalid_common_name"},
		{"NUL", NewCert{CommonName: "nas\x00evil"}, "invalid_common_name"},
		{"newline", NewCert{CommonName: "nas\nevil"}, "invalid_common_name"},
		{"4 KB of Unicode", NewCert{CommonName: strings.Repeat("é", 2048)}, "invalid_common_name"},
		{"65 characters", NewCert{CommonName: strings.Repeat("a", 65)}, "invalid_common_name"},
		{"shell in a SAN", NewCert{CommonName: "nas", SANs: []string{"$(reboot)"}}, "invalid_san"},
		{"a semicolon in a SAN", NewCert{CommonName: "nas", SANs: []string{"a;b"}}, "invalid_san"},
		{"a path", NewCert{CommonName: "nas", SANs: []string{"../etc"}}, "invalid_san"},
		{"NUL in a SAN", NewCert{CommonName: "nas", SANs: []string{"a\x00b"}}, "invalid_san"},
		{"newline in a SAN", NewCert{CommonName: "nas", SANs: []string{"a\nb"}}, "invalid_san"},
		{"Unicode SAN", NewCert{CommonName: "nas", SANs: []string{strings.Repeat("é", 2048)}}, "invalid_san"},
		{"a URL", NewCert{CommonName: "nas", SANs: []string{"https://nas"}}, "invalid_san"},
		{"an email", NewCert{CommonName: "nas", SANs: []string{"a@b.org"}}, "invalid_san"},
		{"a zoned address", NewCert{CommonName: "nas", SANs: []string{"fe80::1%eth0"}}, "invalid_san"},
		{"a bare wildcard", NewCert{CommonName: "nas", SANs: []string{"*.org"}}, "invalid_san"},
		{"an empty SAN", NewCert{CommonName: "nas", SANs: []string{""}}, "invalid_san"},
		{"a numeric top label", NewCert{CommonName: "nas", SANs: []string{"10.0.0.256"}}, "invalid_san"},
		{"33 names", NewCert{CommonName: "nas", SANs: manyNames(32)}, "too_many_sans"},
		{"negative days", NewCert{CommonName: "nas", Days: -1}, "invalid_days"},
		{"826 days", NewCert{CommonName: "nas", Days: 826}, "invalid_days"},
	} {
		_, err := w.v.IssueCert(context.Background(), c.in, storage.Entry{})
		if !isKind(err, fault.ErrInvalid, c.code) {
			t.Errorf("%s: %v, want invalid %s", c.name, err, c.code)
		}
	}
	if list, _ := w.v.Certs(); len(list) != 1 {
		t.Errorf("refused certificates were stored: %+v", list)
	}
	if n := len(w.audit()); n != 1 {
		t.Errorf("%d audit entries, want the root's alone", n)
	}
	// 32 names in all (the CN among them) is the bound, not past it.
	if _, err := w.v.IssueCert(context.Background(), NewCert{CommonName: "n0.example.org", SANs: manyNames(32)}, storage.Entry{}); err != nil {
		t.Errorf("32 names: %v", err)
	}
}

func manyNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("n%d.example.org", i)
	}
	return out
}

func TestRevokeAndCRL(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	is, err := w.v.IssueCert(ctx, NewCert{CommonName: "printer.home.example.org"}, storage.Entry{})
	if err != nil {
		t.Fatal(err)
	}
	der, pemCRL, err := w.v.CRL()
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(w.v.Root()); err != nil || len(crl.RevokedCertificateEntries) != 0 {
		t.Fatalf("empty CRL: %v, %d entries", err, len(crl.RevokedCertificateEntries))
	}
	if blk, _ := pem.Decode(pemCRL); blk == nil || blk.Type != "X509 CRL" || !bytes.Equal(blk.Bytes, der) {
		t.Error("the PEM is not the DER's")
	}
	first := crl.Number
	if d, _, _ := w.v.CRL(); !bytes.Equal(d, der) {
		t.Error("an unchanged CRL was remade within the day")
	}

	w.now = w.now.Add(time.Minute)
	// Colons and upper case, as openssl prints a serial.
	withColons := strings.ToUpper(is.Serial)
	if len(withColons)%2 == 1 {
		withColons = "0" + withColons
	}
	var parts []string
	for i := 0; i < len(withColons); i += 2 {
		parts = append(parts, withColons[i:i+2])
	}
	c, err := w.v.Revoke(ctx, strings.Join(parts, ":"), storage.Entry{Actor: "admin", Action: "vault.cert_revoke"})
	if err != nil || c.Status != "revoked" || c.RevokedAt == nil || !c.RevokedAt.Equal(w.now) {
		t.Fatalf("revoke = %+v, %v", c, err)
	}
	der, _, err = w.v.CRL()
	if err != nil {
		t.Fatal(err)
	}
	crl, err = x509.ParseRevocationList(der)
	if err != nil || crl.CheckSignatureFrom(w.v.Root()) != nil {
		t.Fatal(err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Text(16) != is.Serial {
		t.Fatalf("CRL entries = %+v", crl.RevokedCertificateEntries)
	}
	if crl.Number.Cmp(first) <= 0 || crl.NextUpdate.Sub(crl.ThisUpdate) != CRLValidity {
		t.Errorf("CRL number %s after %s, validity %s", crl.Number, first, crl.NextUpdate.Sub(crl.ThisUpdate))
	}
	if _, err := w.v.Revoke(ctx, is.Serial, storage.Entry{}); !isKind(err, fault.ErrConflict, "already_revoked") {
		t.Errorf("second revoke = %v", err)
	}
	if _, err := w.v.Revoke(ctx, serialOf(w.v.Root()), storage.Entry{}); !isKind(err, fault.ErrConflict, "root_not_revocable") {
		t.Errorf("revoking the root = %v", err)
	}
	for _, s := range []string{"abcdef0123", "zz", "", "../x", strings.Repeat("f", 41), "0"} {
		if _, err := w.v.Revoke(ctx, s, storage.Entry{}); !isKind(err, fault.ErrNotFound, "cert_not_found") {
			t.Errorf("revoke %q = %v, want cert_not_found", s, err)
		}
	}
	var revokes int
	for _, e := range w.audit() {
		if e.Action == "vault.cert_revoke" {
			revokes++
			if e.TargetID != is.Serial || e.Details["common_name"] != "printer.home.example.org" {
				t.Errorf("revoke entry %+v", e)
			}
		}
	}
	if revokes != 1 {
		t.Errorf("%d revoke entries, want 1 (refusals are the API's to audit)", revokes)
	}
	// A day later the CRL is remade with a larger number even with nothing new.
	w.now = w.now.Add(25 * time.Hour)
	der2, _, _ := w.v.CRL()
	crl2, _ := x509.ParseRevocationList(der2)
	if crl2.Number.Cmp(crl.Number) <= 0 || len(crl2.RevokedCertificateEntries) != 1 {
		t.Errorf("day-old CRL not remade: number %s after %s", crl2.Number, crl.Number)
	}
}

func TestIssueForTheFront(t *testing.T) {
	w := newWorld(t)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, pub := range []any{&ec.PublicKey, edPub, &rsaKey.PublicKey} {
		der, chain, err := w.v.Issue(pub, []string{"home.example.org", "*.home.example.org"}, []net.IP{net.ParseIP("10.77.0.1")}, 0)
		if err != nil {
			t.Fatalf("%T: %v", pub, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if len(chain) != 1 || !bytes.Equal(chain[0], w.v.RootDER()) {
			t.Errorf("chain = %d certs", len(chain))
		}
		for _, name := range []string{"home.example.org", "files.home.example.org", "10.77.0.1"} {
			if _, err := cert.Verify(x509.VerifyOptions{Roots: w.pool(), DNSName: name, CurrentTime: w.now}); err != nil {
				t.Errorf("%T for %s: %v", pub, name, err)
			}
		}
		if cert.NotAfter.Sub(w.now) != DefaultFrontTTL || len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
			t.Errorf("%T: lifetime %s, usages %v", pub, cert.NotAfter.Sub(w.now), cert.ExtKeyUsage)
		}
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	for _, c := range []struct {
		name string
		pub  any
		dns  []string
		ips  []net.IP
		ttl  time.Duration
		code string
	}{
		{"no key", nil, []string{"home.example.org"}, nil, 0, "invalid_public_key"},
		{"RSA 1024", &small.PublicKey, []string{"home.example.org"}, nil, 0, "invalid_public_key"},
		{"a private key", ec, []string{"home.example.org"}, nil, 0, "invalid_public_key"},
		{"no names", &ec.PublicKey, nil, nil, 0, "invalid_san"},
		{"a hostile name", &ec.PublicKey, []string{"$(reboot)"}, nil, 0, "invalid_san"},
		{"an empty address", &ec.PublicKey, nil, []net.IP{nil}, 0, "invalid_san"},
		{"too many", &ec.PublicKey, manyNames(33), nil, 0, "too_many_sans"},
		{"a second", &ec.PublicKey, []string{"home.example.org"}, nil, time.Second, "invalid_ttl"},
		{"three years", &ec.PublicKey, []string{"home.example.org"}, nil, 3 * 365 * 24 * time.Hour, "invalid_ttl"},
		{"negative", &ec.PublicKey, []string{"home.example.org"}, nil, -time.Hour, "invalid_ttl"},
	} {
		if _, _, err := w.v.Issue(c.pub, c.dns, c.ips, c.ttl); !isKind(err, fault.ErrInvalid, c.code) {
			t.Errorf("%s: %v, want %s", c.name, err, c.code)
		}
	}
	list, _ := w.v.Certs()
	if len(list) != 4 {
		t.Errorf("%d certificates stored, want the root and 3 for the front", len(list))
	}
	var issued int
	for _, e := range w.audit() {
		if e.Action == "vault.cert_issue" && e.Actor == "front" && e.Details["kind"] == storage.CertFront {
			issued++
		}
	}
	if issued != 3 {
		t.Errorf("%d front issues audited, want 3", issued)
	}
	// Near the root's end a certificate ends with it.
	w.now = w.v.Root().NotAfter.Add(-24 * time.Hour)
	der, _, err := w.v.Issue(&ec.PublicKey, []string{"home.example.org"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if cert, _ := x509.ParseCertificate(der); !cert.NotAfter.Equal(w.v.Root().NotAfter) {
		t.Errorf("not after %s, past the root's %s", cert.NotAfter, w.v.Root().NotAfter)
	}
}

func TestTrustKeys(t *testing.T) {
	w := newWorld(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	b64 := base64.StdEncoding.EncodeToString(pub)
	sshPub, _ := ssh.NewPublicKey(pub)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	sshLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " alice@laptop"
	for _, form := range []string{b64, " " + b64 + "\n", strings.TrimRight(b64, "="), pemKey, sshLine} {
		got, err := ParseTrustKey(form)
		if err != nil || !got.Equal(pub) {
			t.Errorf("ParseTrustKey(%.30q) = %v", form, err)
		}
	}
	k, err := w.v.AddTrustKey(NewTrustKey{Name: "update-key", PublicKey: sshLine, Purpose: "update"}, storage.Entry{Actor: "admin", Action: "vault.trust_key_add"})
	if err != nil {
		t.Fatal(err)
	}
	if k.PublicKey != b64 || k.Fingerprint != ssh.FingerprintSHA256(sshPub) || k.Purpose != "update" {
		t.Errorf("stored %+v; want base64 %s and ssh-keygen's fingerprint %s", k, b64, ssh.FingerprintSHA256(sshPub))
	}
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	otherB64 := base64.StdEncoding.EncodeToString(other)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	for _, c := range []struct {
		name string
		in   NewTrustKey
		kind error
		code string
	}{
		{"the same name", NewTrustKey{Name: "update-key", PublicKey: otherB64}, fault.ErrConflict, "name_taken"},
		{"the same key", NewTrustKey{Name: "again", PublicKey: pemKey}, fault.ErrConflict, "key_already_trusted"},
		{"no name", NewTrustKey{PublicKey: otherB64}, fault.ErrInvalid, "invalid_name"},
		{"shell in the name", NewTrustKey{Name: "$(reboot)", PublicKey: otherB64}, fault.ErrInvalid, "invalid_name"},
		{"a path", NewTrustKey{Name: "../x", PublicKey: otherB64}, fault.ErrInvalid, "invalid_name"},
		{"NUL", NewTrustKey{Name: "a\x00b", PublicKey: otherB64}, fault.ErrInvalid, "invalid_name"},
		{"a hostile purpose", NewTrustKey{Name: "k", PublicKey: otherB64, Purpose: "x; rm -rf /"}, fault.ErrInvalid, "invalid_purpose"},
		{"a newline purpose", NewTrustKey{Name: "k", PublicKey: otherB64, Purpose: "a\nb"}, fault.ErrInvalid, "invalid_purpose"},
		{"no key", NewTrustKey{Name: "k"}, fault.ErrInvalid, "invalid_public_key"},
		{"31 bytes", NewTrustKey{Name: "k", PublicKey: base64.StdEncoding.EncodeToString(other[:31])}, fault.ErrInvalid, "invalid_public_key"},
		{"an ECDSA key", NewTrustKey{Name: "k", PublicKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER}))}, fault.ErrInvalid, "invalid_public_key"},
		{"a private key", NewTrustKey{Name: "k", PublicKey: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}, fault.ErrInvalid, "invalid_public_key"},
		{"an RSA ssh key", NewTrustKey{Name: "k", PublicKey: "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x"}, fault.ErrInvalid, "invalid_public_key"},
		{"a truncated ssh key", NewTrustKey{Name: "k", PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== x"}, fault.ErrInvalid, "invalid_public_key"},
		{"4 KB of Unicode", NewTrustKey{Name: "k", PublicKey: strings.Repeat("é", 2048)}, fault.ErrInvalid, "invalid_public_key"},
	} {
		if _, err := w.v.AddTrustKey(c.in, storage.Entry{}); !isKind(err, c.kind, c.code) {
			t.Errorf("%s: %v, want %s", c.name, err, c.code)
		}
	}
	list, err := w.v.TrustKeys()
	if err != nil || len(list) != 1 {
		t.Fatalf("keys = %+v, %v (a refused one was stored)", list, err)
	}
	if got, err := w.v.TrustKey("update-key"); err != nil || got.PublicKey != b64 {
		t.Errorf("TrustKey = %+v, %v", got, err)
	}
	if k2, err := w.v.AddTrustKey(NewTrustKey{Name: "other", PublicKey: otherB64}, storage.Entry{}); err != nil || k2.Purpose != DefaultPurpose {
		t.Errorf("default purpose: %+v, %v", k2, err)
	}
	if err := w.v.DeleteTrustKey("update-key", storage.Entry{Actor: "admin", Action: "vault.trust_key_delete"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"update-key", "../x", ""} {
		if err := w.v.DeleteTrustKey(name, storage.Entry{}); !isKind(err, fault.ErrNotFound, "trust_key_not_found") {
			t.Errorf("delete %q = %v", name, err)
		}
		if _, err := w.v.TrustKey(name); !isKind(err, fault.ErrNotFound, "trust_key_not_found") {
			t.Errorf("get %q = %v", name, err)
		}
	}
	var actions []string
	for _, e := range w.audit() {
		actions = append(actions, e.Action+" "+e.TargetID)
	}
	want := "[vault.ca_create " + serialOf(w.v.Root()) + " vault.trust_key_add update-key  other vault.trust_key_delete update-key]"
	if fmt.Sprint(actions) != want {
		t.Errorf("audit = %v, want %s", actions, want)
	}
	if got := w.v.AgePublicKey(); !strings.HasPrefix(got, "age1") || got != w.db.Vault.PublicKey() {
		t.Errorf("age key %q", got)
	}
}

// The front (netstack/front) signs its certificates through this method; its
// Signer interface is spelled the same way there.
var _ interface {
	Issue(pub crypto.PublicKey, dnsNames []string, ips []net.IP, ttl time.Duration) (certDER []byte, chain [][]byte, err error)
} = (*Vault)(nil)
