package catalog

import (
	"crypto/ed25519"
	_ "embed"
	"fmt"
	"strings"
)

// The default catalog ships in the binary, with its signature and the key
// that signs it. `make catalog` rewrites default.json and default.json.sig
// (pinning the digests `make images` builds) with the private key
// pic-catalog.key, which stays out of git.
var (
	//go:embed default.json
	defaultIndex []byte
	//go:embed default.json.sig
	defaultSig []byte
	//go:embed catalog.pub
	publicKey string
)

// PublicKey is the key the default catalog is signed with. It is nil only
// if the embedded key file is broken, which a test rules out.
func PublicKey() ed25519.PublicKey {
	k, err := ParsePublicKey(publicKey)
	if err != nil {
		return nil
	}
	return k
}

// PublicKeyText is the key as catalog.pub holds it: base64, as `cellctl
// keygen` prints keys and the vault's trust keys accept them.
func PublicKeyText() string { return strings.TrimSpace(publicKey) }

// Default is the embedded catalog, verified against the embedded key.
func Default() (Index, error) {
	k := PublicKey()
	if k == nil {
		return Index{}, fmt.Errorf("the embedded catalog key: %w", ErrBadSignature)
	}
	return Verify(defaultIndex, defaultSig, []ed25519.PublicKey{k})
}

// DefaultBytes are the embedded index and its signature, exactly as signed:
// for a cell that passes the catalog on.
func DefaultBytes() (index, sig []byte) {
	return append([]byte(nil), defaultIndex...), append([]byte(nil), defaultSig...)
}
