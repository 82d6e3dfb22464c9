package httpapi

import (
	"crypto/sha256"
	"encoding/pem"
	"strings"
	"testing"
)

// The wizard shows the fingerprint of the CA the cell serves, so the person at
// first contact can compare it with what their browser shows before they type
// the admin's password.
func TestSetupStatusShowsTheCAFingerprint(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	var st struct {
		CAFingerprint string `json:"ca_fingerprint"`
	}
	c.must(200, "GET", "/api/setup/status", nil).json(t, &st)
	r := c.must(200, "GET", "/api/vault/ca", nil)
	block, _ := pem.Decode(r.body)
	if block == nil {
		t.Fatalf("GET /api/vault/ca is not PEM: %s", r.body)
	}
	sum := sha256.Sum256(block.Bytes)
	got := strings.ToLower(strings.NewReplacer(":", "", "SHA256", "", " ", "").Replace(st.CAFingerprint))
	if want := hexString(sum[:]); got != want {
		t.Errorf("setup status ca_fingerprint = %q, want the SHA-256 of the served CA %s", st.CAFingerprint, want)
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, x := range b {
		out = append(out, digits[x>>4], digits[x&15])
	}
	return string(out)
}
