package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/plan"
)

func TestValidate(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ACME test root"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))

	// The default: off.
	sec := Section()
	def := sec.New().(*plan.TLSSection)
	if def.ACME || sec.Validate(def) != nil {
		t.Errorf("the default %+v is not off and valid", def)
	}
	if err := json.Unmarshal([]byte(`{"acme":true,"acme_ca":"https://acme.example/directory","email":"a@example.org"}`), def); err != nil || sec.Validate(def) != nil {
		t.Errorf("a valid section: %v %v", err, sec.Validate(def))
	}
	for _, ok := range []plan.TLSSection{
		{ACME: true},
		{ACME: true, ACMECA: "https://acme-v02.api.letsencrypt.org/directory", Email: "admin@example.org"},
		{ACME: true, ACMECA: "https://198.18.0.10:443/acme/local/directory", ACMECARoot: root + root},
	} {
		if err := Validate(ok); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	for _, bad := range []plan.TLSSection{
		{ACMECA: "http://acme.example/directory"},
		{ACMECA: "acme.example/directory"},
		{ACMECA: "https:///directory"},
		{ACMECA: "https://user:pw@acme.example/directory"},
		{Email: "admin"},
		{Email: "admin@localhost"},
		{Email: "Admin <admin@example.org>"},
		{Email: "admin@example.org\nBcc: x@example.org"},
		{ACMECARoot: "not a PEM"},
		{ACMECARoot: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
		{ACMECARoot: root + "trailing junk"},
		{ACMECARoot: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
	} {
		if err := Validate(bad); err == nil {
			t.Errorf("%+v: accepted", bad)
		}
	}
}
