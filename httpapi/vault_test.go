package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pic-cell/cell/firmware/bundle"
	apiclient "github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/storage"
)

func init() {
	for k, v := range map[string]routeCase{
		"GET /api/vault/ca":                    {path: "/api/vault/ca"},
		"GET /api/vault/crl":                   {path: "/api/vault/crl"},
		"GET /api/vault/certs":                 {path: "/api/vault/certs"},
		"POST /api/vault/certs":                {path: "/api/vault/certs", body: map[string]any{"common_name": "table.home.example.org"}},
		"POST /api/vault/certs/:serial/revoke": {path: "/api/vault/certs/abc123/revoke"},
		"GET /api/vault/trust-keys":            {path: "/api/vault/trust-keys"},
		"POST /api/vault/trust-keys":           {path: "/api/vault/trust-keys", body: map[string]any{"name": "table", "public_key": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}},
		"GET /api/vault/trust-keys/:name":      {path: "/api/vault/trust-keys/nobody"},
		"DELETE /api/vault/trust-keys/:name":   {path: "/api/vault/trust-keys/nobody"},
		"GET /api/vault/age":                   {path: "/api/vault/age"},
	} {
		routeCases[k] = v
	}
}

type issuedCert struct {
	Serial      string   `json:"serial"`
	Kind        string   `json:"kind"`
	CommonName  string   `json:"common_name"`
	SANs        []string `json:"sans"`
	Status      string   `json:"status"`
	Certificate string   `json:"certificate"`
	PrivateKey  string   `json:"private_key"`
	CA          string   `json:"ca"`
}

type certList struct {
	Certs []issuedCert `json:"certs"`
}

func caFingerprint(t *testing.T, c *client) [32]byte {
	t.Helper()
	r := c.must(200, "GET", "/api/vault/ca?format=der", nil)
	if _, err := x509.ParseCertificate(r.body); err != nil {
		t.Fatalf("GET /api/vault/ca?format=der: %v", err)
	}
	return sha256.Sum256(r.body)
}

// TestVaultCertificates issues a certificate through the API and has openssl
// verify it against the CA the API serves, revokes it and has openssl refuse
// it with the CRL the API serves; the key handed out once is never seen again.
func TestVaultCertificates(t *testing.T) {
	e := newEnv(t)
	anon := e.client()
	// Before setup the root and the CRL are there for a new device; the rest is not.
	caPEM := anon.must(200, "GET", "/api/vault/ca", nil)
	blk, rest := pem.Decode(caPEM.body)
	if blk == nil || blk.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 || caPEM.header.Get("Content-Type") != "application/x-pem-file" {
		t.Fatalf("GET /api/vault/ca: %s %q", caPEM.header.Get("Content-Type"), caPEM.body)
	}
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || !root.IsCA || !strings.HasPrefix(root.Subject.CommonName, "Personal Internet Cell CA ") {
		t.Fatalf("root: %v %+v", err, root.Subject)
	}
	if fp := caFingerprint(t, anon); fp != sha256.Sum256(blk.Bytes) {
		t.Error("the DER root is not the PEM's")
	}
	if r := anon.do("GET", "/api/vault/ca?format=xml", nil); r.status != 400 || r.code() != "invalid_format" {
		t.Errorf("format=xml: %d %s", r.status, r.body)
	}
	anon.must(200, "GET", "/api/vault/crl", nil)
	if r := anon.do("GET", "/api/vault/certs", nil); r.status != 409 || r.code() != "setup_required" {
		t.Errorf("certs before setup: %d %s", r.status, r.body)
	}
	e.setup()
	admin := e.login("admin", adminPassword)

	var good, bad issuedCert
	admin.must(201, "POST", "/api/vault/certs", map[string]any{"common_name": "nas.home.example.org", "sans": []string{"10.77.0.5"}, "days": 30}).json(t, &good)
	first := len(e.bodies)
	admin.must(201, "POST", "/api/vault/certs", map[string]any{"common_name": "old-phone.home.example.org"}).json(t, &bad)
	handedOut := len(e.bodies)
	if good.Serial == "" || good.Kind != "issued" || good.Status != "valid" || !strings.Contains(good.PrivateKey, "BEGIN PRIVATE KEY") || good.CA != string(caPEM.body) {
		t.Fatalf("issued = %+v", good)
	}
	if strings.Join(good.SANs, ",") != "nas.home.example.org,10.77.0.5" {
		t.Errorf("sans = %v", good.SANs)
	}

	// Revoke one; an unknown serial is 404, a second revoke 409.
	var revoked issuedCert
	admin.must(200, "POST", "/api/vault/certs/"+bad.Serial+"/revoke", nil).json(t, &revoked)
	if revoked.Status != "revoked" || revoked.PrivateKey != "" {
		t.Errorf("revoked = %+v", revoked)
	}
	for _, s := range []string{"abcdef0123456789", "not-a-serial", strings.Repeat("f", 200)} {
		if r := admin.do("POST", "/api/vault/certs/"+s+"/revoke", nil); r.status != 404 || r.code() != "cert_not_found" {
			t.Errorf("revoke %.20s: %d %s", s, r.status, r.body)
		}
	}
	if r := admin.do("POST", "/api/vault/certs/"+bad.Serial+"/revoke", nil); r.status != 409 || r.code() != "already_revoked" {
		t.Errorf("second revoke: %d %s", r.status, r.body)
	}
	crl := anon.must(200, "GET", "/api/vault/crl", nil)
	crlDER := anon.must(200, "GET", "/api/vault/crl?format=der", nil)
	if list, err := x509.ParseRevocationList(crlDER.body); err != nil || len(list.RevokedCertificateEntries) != 1 || list.RevokedCertificateEntries[0].SerialNumber.Text(16) != bad.Serial {
		t.Fatalf("CRL: %v", err)
	}

	t.Run("openssl", func(t *testing.T) {
		openssl, err := exec.LookPath("openssl")
		if err != nil {
			t.Skipf("openssl is not installed (Debian: apt-get install openssl): %v", err)
		}
		dir := t.TempDir()
		files := map[string]string{"ca.pem": string(caPEM.body), "good.pem": good.Certificate, "bad.pem": bad.Certificate,
			"crl.pem": string(crl.body), "good.key": good.PrivateKey}
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		run := func(args ...string) (string, error) {
			cmd := exec.Command(openssl, args...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		for _, f := range []string{"good.pem", "bad.pem"} {
			if out, err := run("verify", "-CAfile", "ca.pem", f); err != nil || !strings.Contains(out, f+": OK") {
				t.Errorf("openssl verify -CAfile ca.pem %s: %v\n%s", f, err, out)
			}
		}
		if out, err := run("verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "ca.pem", "good.pem"); err != nil || !strings.Contains(out, "good.pem: OK") {
			t.Errorf("the certificate not revoked, with the CRL: %v\n%s", err, out)
		}
		out, err := run("verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "ca.pem", "bad.pem")
		if err == nil || !strings.Contains(out, "certificate revoked") {
			t.Errorf("openssl accepted the revoked certificate (%v):\n%s", err, out)
		}
		// The key handed out is the certificate's.
		certPub, err1 := run("x509", "-in", "good.pem", "-noout", "-pubkey")
		keyPub, err2 := run("pkey", "-in", "good.key", "-pubout")
		if err1 != nil || err2 != nil || certPub != keyPub || !strings.Contains(keyPub, "PUBLIC KEY") {
			t.Errorf("the key does not match the certificate: %v %v\n%s\n%s", err1, err2, certPub, keyPub)
		}
	})

	// Hostile input: 400 and nothing stored.
	before := len(listCerts(t, admin).Certs)
	for _, c := range []struct {
		name string
		body map[string]any
		code string
	}{
		{"shell in the CN", map[string]any{"common_name": "$(reboot)"}, "invalid_common_name"},
		{"a semicolon", map[string]any{"common_name": "nas;reboot"}, "invalid_common_name"},
		{"dot-dot-slash", map[string]any{"common_name": "../../etc/shadow"}, "invalid_common_name"},
		{"NUL", map[string]any{"common_name": "nas\x00x"}, "invalid_common_name"},
		{"newline", map[string]any{"common_name": "nas\nx"}, "invalid_common_name"},
		{"4 KB of Unicode", map[string]any{"common_name": strings.Repeat("é", 2048)}, "invalid_common_name"},
		{"no CN", map[string]any{"sans": []string{"nas"}}, "invalid_common_name"},
		{"shell in a SAN", map[string]any{"common_name": "nas", "sans": []string{"$(reboot)"}}, "invalid_san"},
		{"a semicolon in a SAN", map[string]any{"common_name": "nas", "sans": []string{"a;b"}}, "invalid_san"},
		{"a path SAN", map[string]any{"common_name": "nas", "sans": []string{"../x"}}, "invalid_san"},
		{"NUL in a SAN", map[string]any{"common_name": "nas", "sans": []string{"a\x00b"}}, "invalid_san"},
		{"newline in a SAN", map[string]any{"common_name": "nas", "sans": []string{"a\nb"}}, "invalid_san"},
		{"Unicode SAN", map[string]any{"common_name": "nas", "sans": []string{strings.Repeat("é", 2048)}}, "invalid_san"},
		{"a URL SAN", map[string]any{"common_name": "nas", "sans": []string{"http://nas/"}}, "invalid_san"},
		{"too many SANs", map[string]any{"common_name": "nas", "sans": manySANs(40)}, "too_many_sans"},
		{"0 days is the default, -1 is not", map[string]any{"common_name": "nas", "days": -1}, "invalid_days"},
		{"826 days", map[string]any{"common_name": "nas", "days": 826}, "invalid_days"},
		{"days as text", map[string]any{"common_name": "nas", "days": "30"}, "invalid_field"},
		{"a private key sent in", map[string]any{"common_name": "nas", "private_key": "x"}, "invalid_body"},
	} {
		if r := admin.do("POST", "/api/vault/certs", c.body); r.status != 400 || r.code() != c.code {
			t.Errorf("%s: %d %s, want 400 %s", c.name, r.status, r.body, c.code)
		}
	}
	if after := len(listCerts(t, admin).Certs); after != before {
		t.Errorf("%d certificates after the refusals, want %d", after, before)
	}

	// Trust keys, in cellctl keygen's format.
	_, pub, err := bundle.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var k struct{ Name, PublicKey, Purpose string }
	admin.must(201, "POST", "/api/vault/trust-keys", map[string]any{"name": "release", "public_key": pub + "\n", "purpose": "update"}).json(t, &k)
	if r := admin.do("POST", "/api/vault/trust-keys", map[string]any{"name": "again", "public_key": pub}); r.status != 409 || r.code() != "key_already_trusted" {
		t.Errorf("the same key twice: %d %s", r.status, r.body)
	}
	for _, bad := range []map[string]any{{"name": "$(reboot)", "public_key": pub}, {"name": "x", "public_key": "not a key"}, {"name": "x", "public_key": pub, "purpose": "a;b"}} {
		if r := admin.do("POST", "/api/vault/trust-keys", bad); r.status != 400 {
			t.Errorf("trust key %v: %d %s", bad, r.status, r.body)
		}
	}
	admin.must(200, "GET", "/api/vault/trust-keys/release", nil)
	var keys struct {
		TrustKeys []map[string]any `json:"trust_keys"`
	}
	admin.must(200, "GET", "/api/vault/trust-keys", nil).json(t, &keys)
	// Beside it, the key the embedded service catalog is signed with, which
	// the cell trusts from its first start (cell/services).
	byName := map[string]map[string]any{}
	for _, k := range keys.TrustKeys {
		byName[k["name"].(string)] = k
	}
	if len(keys.TrustKeys) != 2 || byName["release"]["public_key"] != pub || byName["release"]["purpose"] != "update" || byName["pic-services"]["purpose"] != "catalog" {
		t.Errorf("trust keys = %+v", keys.TrustKeys)
	}
	admin.must(200, "DELETE", "/api/vault/trust-keys/release", nil)
	admin.must(404, "DELETE", "/api/vault/trust-keys/release", nil)
	admin.must(404, "GET", "/api/vault/trust-keys/release", nil)
	var age struct {
		PublicKey string `json:"public_key"`
	}
	admin.must(200, "GET", "/api/vault/age", nil).json(t, &age)
	if age.PublicKey != e.db.Vault.PublicKey() || !strings.HasPrefix(age.PublicKey, "age1") {
		t.Errorf("age = %q", age.PublicKey)
	}

	// Every change audited by the capability, with no key material.
	var audit struct {
		Entries []storage.Entry `json:"entries"`
	}
	admin.must(200, "GET", "/api/audit?limit=1000", nil).json(t, &audit)
	counts := map[string]int{}
	for _, en := range audit.Entries {
		if en.Result == "ok" {
			counts[en.Action]++
		}
	}
	if counts["vault.ca_create"] != 1 || counts["vault.cert_issue"] != 2 || counts["vault.cert_revoke"] != 1 || counts["vault.trust_key_add"] != 2 || counts["vault.trust_key_delete"] != 1 {
		t.Errorf("audited changes: %v", counts)
	}

	// The private keys were in their own response and nowhere after.
	admin.must(200, "GET", "/api/vault/certs", nil)
	admin.must(200, "GET", "/api/audit/export?format=json", nil)
	admin.must(200, "GET", "/api/logs?lines=5000", nil)
	keyLines := pemBodyLines(t, good.PrivateKey)
	keyLines = append(keyLines, pemBodyLines(t, bad.PrivateKey)...)
	var auditText strings.Builder
	e.db.Audit().Each(func(en storage.Entry) error {
		auditText.WriteString(en.Action + " " + en.TargetID + " ")
		auditText.WriteString(strings.Join(mapValues(en.Details), " "))
		return nil
	})
	logged := e.logText()
	for i, b := range e.bodies {
		if i == first-1 || i == handedOut-1 {
			continue // the responses that handed the keys over
		}
		for _, l := range keyLines {
			if strings.Contains(b, l) {
				t.Errorf("a private key's line in response %d: %.200s", i, b)
			}
		}
		if strings.Contains(b, "PRIVATE KEY") {
			t.Errorf("a private key in response %d: %.200s", i, b)
		}
	}
	for _, l := range keyLines {
		if strings.Contains(logged, l) || strings.Contains(auditText.String(), l) {
			t.Errorf("a private key's line in the logs or the audit log")
		}
	}

	// The CA survives a restart unchanged, and what it issued stays listed.
	fp := caFingerprint(t, anon)
	n := len(listCerts(t, admin).Certs)
	dir := e.dir
	e.close()
	e2 := openEnv(t, dir)
	if got := caFingerprint(t, e2.client()); got != fp {
		t.Errorf("the CA changed across a restart: %x, was %x", got, fp)
	}
	if got := len(listCerts(t, e2.login("admin", adminPassword)).Certs); got != n {
		t.Errorf("%d certificates after a restart, want %d", got, n)
	}
}

func listCerts(t *testing.T, c *client) certList {
	t.Helper()
	var l certList
	c.must(200, "GET", "/api/vault/certs", nil).json(t, &l)
	return l
}

func manySANs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "n" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + ".example.org"
	}
	return out
}

// pemBodyLines are the base64 lines of a private key's PEM that hold its
// secret: what it would look like wherever it leaked (a JSON string escapes the
// newlines between them). The last line is left out: in a P-256 PKCS#8 key it
// holds only the public point, which the certificate carries too.
func pemBodyLines(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") {
			out = append(out, l)
		}
	}
	if len(out) < 3 {
		t.Fatalf("not a P-256 PKCS#8 PEM: %d lines", len(out))
	}
	return out[:len(out)-1]
}

func mapValues(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// TestVaultClient drives the vault area through the typed client.
func TestVaultClient(t *testing.T) {
	e := newEnv(t)
	e.setup()
	ctx := context.Background()
	c := apiclient.New(e.srv.URL)
	der, err := c.VaultCA(ctx, "der")
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.VaultCerts(ctx); !apiclient.IsCode(err, "not_logged_in") {
		t.Errorf("certs without a login: %v", err)
	}
	if err := c.Login(ctx, "admin", adminPassword); err != nil {
		t.Fatal(err)
	}
	is, err := c.IssueVaultCert(ctx, apiclient.NewVaultCert{CommonName: "tv.home.example.org", Days: 90})
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%v %+v", is.PrivateKey, is); strings.Contains(s, "PRIVATE KEY") {
		t.Errorf("the key prints: %.100s", s)
	}
	blk, _ := pem.Decode([]byte(is.Certificate))
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || cert.CheckSignatureFrom(root) != nil || !strings.Contains(string(is.PrivateKey), "BEGIN PRIVATE KEY") {
		t.Fatalf("issued: %v", err)
	}
	if _, err := c.IssueVaultCert(ctx, apiclient.NewVaultCert{CommonName: "$(reboot)"}); !apiclient.IsCode(err, "invalid_common_name") {
		t.Errorf("hostile CN: %v", err)
	}
	colons := strings.ToUpper(fmt.Sprintf("%x", cert.SerialNumber.Bytes()))
	var parts []string
	for i := 0; i < len(colons); i += 2 {
		parts = append(parts, colons[i:i+2])
	}
	rc, err := c.RevokeVaultCert(ctx, strings.Join(parts, ":"))
	if err != nil || rc.Status != "revoked" || rc.Serial != is.Serial {
		t.Fatalf("revoke by openssl's spelling: %+v, %v", rc, err)
	}
	if _, err := c.RevokeVaultCert(ctx, "0123abcd"); !apiclient.IsCode(err, "cert_not_found") {
		t.Errorf("unknown serial: %v", err)
	}
	crlDER, err := c.VaultCRL(ctx, "der")
	if err != nil {
		t.Fatal(err)
	}
	if crl, err := x509.ParseRevocationList(crlDER); err != nil || crl.CheckSignatureFrom(root) != nil || len(crl.RevokedCertificateEntries) != 1 {
		t.Fatalf("CRL: %v", err)
	}
	certs, err := c.VaultCerts(ctx)
	if err != nil || len(certs) != 2 || certs[0].Kind != "root" || certs[1].RevokedAt == nil {
		t.Fatalf("certs = %+v, %v", certs, err)
	}
	_, pub, _ := bundle.GenerateKey()
	k, err := c.AddTrustKey(ctx, apiclient.NewTrustKey{Name: "laptop", PublicKey: pub})
	if err != nil || k.Purpose != "general" || !strings.HasPrefix(k.Fingerprint, "SHA256:") {
		t.Fatalf("add trust key: %+v, %v", k, err)
	}
	if got, err := c.TrustKey(ctx, "laptop"); err != nil || got.PublicKey != pub {
		t.Errorf("trust key: %+v, %v", got, err)
	}
	if ks, err := c.TrustKeys(ctx); err != nil || len(ks) != 2 { // laptop, and the catalog's key
		t.Errorf("trust keys: %+v, %v", ks, err)
	}
	if err := c.DeleteTrustKey(ctx, "laptop"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TrustKey(ctx, "laptop"); !apiclient.IsCode(err, "trust_key_not_found") {
		t.Errorf("deleted key: %v", err)
	}
	if age, err := c.VaultAgePublicKey(ctx); err != nil || age != e.db.Vault.PublicKey() {
		t.Errorf("age: %q, %v", age, err)
	}
}
