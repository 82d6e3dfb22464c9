// Package bundle is the update bundle: a tar file whose first entry is a JSON
// manifest (version, target, minimum running version, size and SHA-256 of each
// part), whose second entry is the manifest's ed25519 signature, and whose
// further entries are the parts the manifest lists: first "root", the new root
// squashfs, then, in a bundle that carries a kernel, its boot files, each a part
// named "boot/" + its path in the slot's boot files ("boot/vmlinuz",
// "boot/cmdline.txt", on the Pi also "boot/bcm2711-rpi-4-b.dtb",
// "boot/overlays/..."). A bundle without boot parts is a root-only bundle, the
// only kind there was before kernels were updated, and is read as before. The
// signature covers the manifest's exact bytes, and the manifest pins every part
// by hash, so one check of the signature and one streaming pass over the parts
// prove the whole bundle before the device writes anything: a tampered kernel is
// refused like a tampered root.
//
// A boot file's path is checked here, not only where it is written: it is
// relative, its components are plain names (letters, digits, '.', '_', '-',
// '+'; no "." or ".."), at most three deep, so a signed manifest still cannot
// name a file outside the slot's directory of the boot partition.
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
	"sort"
	"strings"
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
	PartRoot = "root"
	// BootPrefix starts the name of every boot file part.
	BootPrefix = "boot/"
	// MaxBootParts bounds a bundle's boot files (a Pi kernel with its device
	// trees and overlays has a few hundred).
	MaxBootParts = 1000
	maxManifest  = 512 << 10
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

// BootParts returns the boot file parts, in the manifest's order.
func (m *Manifest) BootParts() []Part {
	var out []Part
	for _, p := range m.Parts {
		if strings.HasPrefix(p.Name, BootPrefix) {
			out = append(out, p)
		}
	}
	return out
}

// HasKernel reports whether the bundle carries boot files (a kernel).
func (m *Manifest) HasKernel() bool { return len(m.BootParts()) > 0 }

// BootPath is a boot part's path inside the slot's boot files ("vmlinuz").
func (p Part) BootPath() string { return strings.TrimPrefix(p.Name, BootPrefix) }

// CheckBootPath reports whether rel may name a boot file (see the package doc).
func CheckBootPath(rel string) error {
	parts := strings.Split(rel, "/")
	if rel == "" || len(rel) > 120 || len(parts) > 3 {
		return fmt.Errorf("boot file %q: want a relative path of at most three names", rel)
	}
	for _, c := range parts {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("boot file %q: empty, \".\" or \"..\" in the path", rel)
		}
		for _, r := range c {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-+", r)
			if !ok {
				return fmt.Errorf("boot file %q: %q is not allowed in a name", rel, r)
			}
		}
	}
	return nil
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
// with key, to w: PartRoot, and for a kernel bundle the boot files as
// BootPrefix + path (sorted, so that two builds write the same bundle).
func Write(w io.Writer, m Manifest, parts map[string]string, key ed25519.PrivateKey) error {
	m.Format = FormatVersion
	if m.Created.IsZero() {
		m.Created = time.Now().UTC()
	}
	m.Parts = nil
	if _, ok := parts[PartRoot]; !ok {
		return errors.New("bundle: no root part")
	}
	names := []string{PartRoot}
	var boot []string
	for name := range parts {
		switch {
		case name == PartRoot:
		case strings.HasPrefix(name, BootPrefix):
			if err := CheckBootPath(strings.TrimPrefix(name, BootPrefix)); err != nil {
				return fmt.Errorf("bundle: %w", err)
			}
			boot = append(boot, name)
		default:
			return fmt.Errorf("bundle: unknown part %q", name)
		}
	}
	if len(boot) > MaxBootParts {
		return fmt.Errorf("bundle: %d boot files, at most %d", len(boot), MaxBootParts)
	}
	sort.Strings(boot)
	for _, name := range append(names, boot...) {
		size, sum, err := hashFile(parts[name])
		if err != nil {
			return err
		}
		file := name
		if name == PartRoot {
			file = name + ".img"
		}
		m.Parts = append(m.Parts, Part{Name: name, File: file, Size: size, SHA256: sum})
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
	if err := checkParts(m.Parts); err != nil {
		return nil, err
	}
	return &Reader{tr: tr, Manifest: &m}, nil
}

// checkParts: the root first, then only boot files with allowed, distinct
// paths and their tar entries named after them.
func checkParts(parts []Part) error {
	if len(parts) == 0 || parts[0].Name != PartRoot || parts[0].File != PartRoot+".img" {
		return fmt.Errorf("%w: a bundle carries the root as its first part", ErrFormat)
	}
	if len(parts)-1 > MaxBootParts {
		return fmt.Errorf("%w: %d boot files, at most %d", ErrFormat, len(parts)-1, MaxBootParts)
	}
	seen := map[string]bool{}
	for _, p := range parts[1:] {
		if !strings.HasPrefix(p.Name, BootPrefix) || p.File != p.Name {
			return fmt.Errorf("%w: unknown part %q", ErrFormat, p.Name)
		}
		if err := CheckBootPath(p.BootPath()); err != nil {
			return fmt.Errorf("%w: %v", ErrFormat, err)
		}
		key := strings.ToLower(p.Name) // FAT compares names without case
		if seen[key] {
			return fmt.Errorf("%w: boot file %q twice", ErrFormat, p.BootPath())
		}
		seen[key] = true
		if p.Size < 0 {
			return fmt.Errorf("%w: boot file %q has a negative size", ErrFormat, p.BootPath())
		}
	}
	return nil
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
