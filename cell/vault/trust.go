package vault

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/storage"
)

// MaxTrustKeys bounds how many keys the cell trusts.
const MaxTrustKeys = 100

// DefaultPurpose is a trust key's purpose when none is given.
const DefaultPurpose = "general"

var purposeRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// TrustKey is a trusted public key as the API shows it.
type TrustKey struct {
	Name        string    `json:"name"`
	PublicKey   string    `json:"public_key"` // standard base64 of the 32 bytes
	Purpose     string    `json:"purpose"`
	Fingerprint string    `json:"sha256_fingerprint"` // "SHA256:" and unpadded base64, as ssh-keygen -l shows keys
	CreatedAt   time.Time `json:"created_at"`
}

// NewTrustKey is the body of POST /api/vault/trust-keys.
type NewTrustKey struct {
	Name      string `json:"name"`       // required: a DNS label
	PublicKey string `json:"public_key"` // required: base64, PEM or ssh-ed25519 (see the package doc)
	Purpose   string `json:"purpose"`    // optional: a word, "general" by default
}

func trustKeyOf(t storage.TrustKey) TrustKey {
	raw, _ := base64.StdEncoding.DecodeString(t.PublicKey)
	return TrustKey{Name: t.Name, PublicKey: t.PublicKey, Purpose: t.Purpose, Fingerprint: keyFingerprint(raw),
		CreatedAt: t.CreatedAt.UTC()}
}

// keyFingerprint is "SHA256:" and the unpadded base64 of the SHA-256 of the
// key's OpenSSH encoding: what ssh-keygen -l prints for the same key.
func keyFingerprint(pub []byte) string {
	sum := sha256.Sum256(sshBlob(pub))
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

func sshBlob(pub []byte) []byte {
	var b bytes.Buffer
	for _, part := range [][]byte{[]byte("ssh-ed25519"), pub} {
		binary.Write(&b, binary.BigEndian, uint32(len(part)))
		b.Write(part)
	}
	return b.Bytes()
}

// ParseTrustKey reads an ed25519 public key in any of the accepted forms.
func ParseTrustKey(s string) (ed25519.PublicKey, error) {
	bad := func(why string) error {
		return fault.Invalid("invalid_public_key", "public_key must be an ed25519 public key: standard base64 of its 32 bytes (as cellctl keygen prints it), a PEM PUBLIC KEY block or an ssh-ed25519 line; %s", why)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, bad("it is empty")
	}
	if len(s) > 4096 {
		return nil, bad("this one is far too long")
	}
	if strings.HasPrefix(s, "-----BEGIN") {
		blk, rest := pem.Decode([]byte(s))
		if blk == nil || blk.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
			return nil, bad("this PEM is not one PUBLIC KEY block")
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, bad("this PEM block does not hold a public key")
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, bad("this PEM block holds a key of another kind")
		}
		return pub, nil
	}
	if rest, ok := strings.CutPrefix(s, "ssh-ed25519 "); ok {
		b64, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		blob, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, bad("the ssh-ed25519 line's key is not base64")
		}
		pub, err := fromSSHBlob(blob)
		if err != nil {
			return nil, bad(err.Error())
		}
		return pub, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err := enc.DecodeString(s); err == nil {
			if len(raw) != ed25519.PublicKeySize {
				return nil, bad("this base64 decodes to " + strconv.Itoa(len(raw)) + " bytes, not 32")
			}
			return ed25519.PublicKey(raw), nil
		}
	}
	return nil, bad("this is none of them")
}

func fromSSHBlob(blob []byte) (ed25519.PublicKey, error) {
	var parts [][]byte
	for len(blob) > 0 && len(parts) < 3 {
		if len(blob) < 4 {
			return nil, errors.New("the ssh-ed25519 key is truncated")
		}
		n := binary.BigEndian.Uint32(blob)
		if uint64(n) > uint64(len(blob)-4) {
			return nil, errors.New("the ssh-ed25519 key is truncated")
		}
		parts, blob = append(parts, blob[4:4+n]), blob[4+n:]
	}
	if len(parts) != 2 || len(blob) != 0 || string(parts[0]) != "ssh-ed25519" || len(parts[1]) != ed25519.PublicKeySize {
		return nil, errors.New("the ssh-ed25519 line does not hold one ed25519 key")
	}
	return ed25519.PublicKey(parts[1]), nil
}

func trustNotFound(name string) error {
	return fault.Errorf(fault.ErrNotFound, "trust_key_not_found", "no trust key is named %s", names.Quote(name))
}

// TrustKeys lists the trusted keys, by name.
func (v *Vault) TrustKeys() ([]TrustKey, error) {
	ks, err := v.db.TrustKeys().List()
	if err != nil {
		return nil, err
	}
	out := make([]TrustKey, 0, len(ks))
	for _, k := range ks {
		out = append(out, trustKeyOf(k))
	}
	return out, nil
}

// TrustKey returns the named trust key.
func (v *Vault) TrustKey(name string) (TrustKey, error) {
	if !names.ValidLabel(name) {
		return TrustKey{}, trustNotFound(name)
	}
	k, err := v.db.TrustKeys().Get(name)
	if errors.Is(err, storage.ErrNotFound) {
		return TrustKey{}, trustNotFound(name)
	}
	if err != nil {
		return TrustKey{}, err
	}
	return trustKeyOf(k), nil
}

// AddTrustKey validates and stores a trust key with its audit entry.
func (v *Vault) AddTrustKey(in NewTrustKey, audit storage.Entry) (TrustKey, error) {
	if err := names.CheckLabel("name", in.Name); err != nil {
		return TrustKey{}, err
	}
	if in.Purpose == "" {
		in.Purpose = DefaultPurpose
	}
	if !purposeRe.MatchString(in.Purpose) {
		return TrustKey{}, fault.Invalid("invalid_purpose", "purpose must be a word of 1-32 of a-z, 0-9 and '-', such as update or general (got %s)", names.Quote(in.Purpose))
	}
	pub, err := ParseTrustKey(in.PublicKey)
	if err != nil {
		return TrustKey{}, err
	}
	k := storage.TrustKey{Name: in.Name, PublicKey: base64.StdEncoding.EncodeToString(pub), Purpose: in.Purpose, CreatedAt: v.now().UTC()}
	view := trustKeyOf(k)
	audit.TargetType, audit.TargetID, audit.Result = "trust_key", k.Name, "ok"
	audit.Details = map[string]string{"purpose": k.Purpose, "sha256": view.Fingerprint}
	err = v.db.TrustKeys().Create(k, func(tx *storage.Tx) error {
		others, err := v.db.TrustKeys().ListTx(tx)
		if err != nil {
			return err
		}
		if len(others) > MaxTrustKeys {
			return fault.Errorf(fault.ErrConflict, "too_many_trust_keys", "the cell trusts at most %d keys: delete one first", MaxTrustKeys)
		}
		for _, o := range others {
			if o.Name != k.Name && o.PublicKey == k.PublicKey {
				return fault.Errorf(fault.ErrConflict, "key_already_trusted", "this key is trusted already, as %q", o.Name)
			}
		}
		return v.audit.Within(audit)(tx)
	})
	if errors.Is(err, storage.ErrExists) {
		return TrustKey{}, fault.Errorf(fault.ErrConflict, "name_taken", "a trust key is named %q already", k.Name)
	}
	if err != nil {
		return TrustKey{}, err
	}
	return view, nil
}

// DeleteTrustKey removes the named trust key with its audit entry.
func (v *Vault) DeleteTrustKey(name string, audit storage.Entry) error {
	if !names.ValidLabel(name) {
		return trustNotFound(name)
	}
	audit.TargetType, audit.TargetID, audit.Result = "trust_key", name, "ok"
	_, err := v.db.TrustKeys().Delete(name, func(tx *storage.Tx) error { return v.audit.Within(audit)(tx) })
	if errors.Is(err, storage.ErrNotFound) {
		return trustNotFound(name)
	}
	return err
}
