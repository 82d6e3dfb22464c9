// Package bundle is the update bundle: a tar file whose first entry is a JSON
// manifest (version, target, minimum running version, size and SHA-256 of each
// part), whose second entry is the manifest's ed25519 signature, and whose
// further entries are the parts the manifest lists (today: "root", the new root
// squashfs). The signature covers the manifest's exact bytes, and the manifest
// pins every part by hash, so one check of the signature and one streaming pass
// over the parts prove the whole bundle before the device writes anything.
//
// A tar rather than a format of our own: it streams, any operator can list it
// with tar(1), and archive/tar is in the standard library.
package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/pic-cell/cell/firmware/release"
)

// Entry names inside the tar.
const (
	ManifestName  = "manifest.json"
	SignatureName = "manifest.sig"
	// FormatVersion is the manifest format this package writes and accepts.
	FormatVersion = 1
	// PartRoot is the root file system part.
	PartRoot    = "root"
	maxManifest = 64 << 10
)

// Refusal reasons. Verify wraps one of them, so that callers (the API, the audit
// log) can say why without parsing messages.
var (
	ErrFormat    = errors.New("not a well-formed update bundle")
	ErrSignature = errors.New("bad signature")
	ErrTarget    = errors.New("wrong target")
	ErrVersion   = errors.New("version refused")
	ErrHash      = errors.New("part does not match its hash")
	ErrNoKey     = errors.New("no update key configured")
)

// Manifest describes a bundle.
type Manifest struct {
	Format     int       `json:"format"`
	Version    string    `json:"version"`
	Target     string    `json:"target"`
	MinVersion string    `json:"min_version,omitempty"`
	Created    time.Time `json:"created"`
	Parts      []Part    `json:"parts"`
}

// Part is one file of a bundle.
type Part struct {
	Name   string `json:"name"` // "root"
	File   string `json:"file"` // the tar entry
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Part returns the part called name.
func (m *Manifest) Part(name string) (Part, bool) {
	for _, p := range m.Parts {
		if p.Name == name {
			return p, true
		}
	}
	return Part{}, false
}

// Write makes a bundle from the files in parts (part name → file path), signed
// with key, to w.
func Write(w io.Writer, m Manifest, parts map[string]string, key ed25519.PrivateKey) error {
	m.Format = FormatVersion
	if m.Created.IsZero() {
		m.Created = time.Now().UTC()
	}
	m.Parts = nil
	for _, name := range []string{PartRoot} {
		path, ok := parts[name]
		if !ok {
			continue
		}
		size, sum, err := hashFile(path)
		if err != nil {
			return err
		}
		m.Parts = append(m.Parts, Part{Name: name, File: name + ".img", Size: size, SHA256: sum})
	}
	if len(m.Parts) != len(parts) {
		return fmt.Errorf("bundle: unknown part among %v", parts)
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	sig := ed25519.Sign(key, mb)
	tw := tar.NewWriter(w)
	for _, e := range []struct {
		name string
		data []byte
	}{{ManifestName, mb}, {SignatureName, sig}} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: m.Created, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	for _, p := range m.Parts {
		f, err := os.Open(parts[p.Name])
		if err != nil {
			return err
		}
		err = tw.WriteHeader(&tar.Header{Name: p.File, Mode: 0o644, Size: p.Size, ModTime: m.Created, Format: tar.FormatPAX})
		if err == nil {
			_, err = io.Copy(tw, f)
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

// Expect is what the device accepts.
type Expect struct {
	Key     ed25519.PublicKey
	Target  string
	Running string // the running version; the bundle must be newer
}

// Reader reads a bundle.
type Reader struct {
	tr       *tar.Reader
	Manifest *Manifest
	next     int // index of the next part expected
}

// Open reads and checks the manifest and its signature against exp: signature,
// target and versions. The parts are checked as they are read (Next).
func Open(r io.Reader, exp Expect) (*Reader, error) {
	if len(exp.Key) != ed25519.PublicKeySize {
		return nil, ErrNoKey
	}
	tr := tar.NewReader(r)
	mb, err := readEntry(tr, ManifestName, maxManifest)
	if err != nil {
		return nil, err
	}
	sig, err := readEntry(tr, SignatureName, ed25519.SignatureSize)
	if err != nil {
		return nil, err
	}
	// The signature is checked before the manifest is even parsed: nothing an
	// unsigned manifest says is worth acting on.
	if !ed25519.Verify(exp.Key, mb, sig) {
		return nil, ErrSignature
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(mb))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrFormat, err)
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("%w: manifest format %d, want %d", ErrFormat, m.Format, FormatVersion)
	}
	if m.Target != exp.Target {
		return nil, fmt.Errorf("%w: bundle is for %q, this device is %q", ErrTarget, m.Target, exp.Target)
	}
	cmp, err := release.CompareVersions(m.Version, exp.Running)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrVersion, err)
	}
	if cmp <= 0 {
		return nil, fmt.Errorf("%w: bundle version %s is not newer than the running %s", ErrVersion, m.Version, exp.Running)
	}
	if m.MinVersion != "" {
		cmp, err := release.CompareVersions(exp.Running, m.MinVersion)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrVersion, err)
		}
		if cmp < 0 {
			return nil, fmt.Errorf("%w: bundle needs at least version %s running, this device runs %s", ErrVersion, m.MinVersion, exp.Running)
		}
	}
	if _, ok := m.Part(PartRoot); !ok || len(m.Parts) != 1 {
		return nil, fmt.Errorf("%w: a bundle carries exactly one root part", ErrFormat)
	}
	return &Reader{tr: tr, Manifest: &m}, nil
}

func readEntry(tr *tar.Reader, name string, max int64) ([]byte, error) {
	h, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, name, err)
	}
	if h.Name != name || h.Size > max || h.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%w: expected %s, found %q", ErrFormat, name, h.Name)
	}
	b, err := io.ReadAll(io.LimitReader(tr, max))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, name, err)
	}
	return b, nil
}

// Next returns the next part and a reader of its bytes. The reader returns an
// error wrapping ErrHash at its end if the bytes do not match the manifest (too
// few, too many or different), so a caller that copies until EOF has either the
// signed bytes or an error.
func (r *Reader) Next() (Part, io.Reader, error) {
	if r.next >= len(r.Manifest.Parts) {
		return Part{}, nil, io.EOF
	}
	p := r.Manifest.Parts[r.next]
	r.next++
	h, err := r.tr.Next()
	if err != nil {
		return Part{}, nil, fmt.Errorf("%w: part %s: %v", ErrHash, p.Name, err)
	}
	if h.Name != p.File {
		return Part{}, nil, fmt.Errorf("%w: expected %s, found %q", ErrFormat, p.File, h.Name)
	}
	return p, &checkedReader{r: r.tr, part: p, h: sha256.New(), remaining: p.Size}, nil
}

type checkedReader struct {
	r         io.Reader
	part      Part
	h         hash.Hash
	remaining int64
	done      bool
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	if int64(len(p)) > c.remaining+1 {
		// Read one byte past the declared size to notice an overlong part.
		p = p[:c.remaining+1]
	}
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.remaining -= int64(n)
	if c.remaining < 0 {
		return 0, fmt.Errorf("%w: part %s is longer than %d bytes", ErrHash, c.part.Name, c.part.Size)
	}
	if err == io.EOF || (err == nil && n == 0) {
		c.done = true
		if c.remaining != 0 {
			return n, fmt.Errorf("%w: part %s is %d bytes short", ErrHash, c.part.Name, c.remaining)
		}
		if got := hex.EncodeToString(c.h.Sum(nil)); got != c.part.SHA256 {
			return n, fmt.Errorf("%w: part %s has SHA-256 %s, manifest says %s", ErrHash, c.part.Name, got, c.part.SHA256)
		}
		return n, io.EOF
	}
	if err != nil {
		return n, fmt.Errorf("%w: part %s: %v", ErrHash, c.part.Name, err)
	}
	return n, nil
}

// Verify reads the whole bundle and checks everything: signature, target,
// versions and every part's hash. It writes nothing.
func Verify(r io.Reader, exp Expect) (*Manifest, error) {
	br, err := Open(r, exp)
	if err != nil {
		return nil, err
	}
	for {
		_, pr, err := br.Next()
		if err == io.EOF {
			return br.Manifest, nil
		}
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(io.Discard, pr); err != nil {
			return nil, err
		}
	}
}
