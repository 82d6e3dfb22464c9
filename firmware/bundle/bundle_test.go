package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type fixture struct {
	key    []byte // PEM
	pub    string
	root   []byte
	bundle []byte
}

func newFixture(t *testing.T, m Manifest) fixture {
	t.Helper()
	privPEM, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	key, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	root := make([]byte, 300_000)
	rand.Read(root)
	rootPath := filepath.Join(t.TempDir(), "root.squashfs")
	if err := os.WriteFile(rootPath, root, 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Write(&buf, m, map[string]string{PartRoot: rootPath}, key); err != nil {
		t.Fatal(err)
	}
	return fixture{key: privPEM, pub: pub, root: root, bundle: buf.Bytes()}
}

func expect(t *testing.T, pub string) Expect {
	k, err := ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return Expect{Key: k, Target: "amd64", Running: "1.0.0"}
}

func TestRoundTrip(t *testing.T) {
	f := newFixture(t, Manifest{Version: "1.1.0", Target: "amd64", MinVersion: "1.0"})
	br, err := Open(bytes.NewReader(f.bundle), expect(t, f.pub))
	if err != nil {
		t.Fatal(err)
	}
	p, r, err := br.Next()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != PartRoot || !bytes.Equal(got, f.root) {
		t.Fatalf("part %q: got %d bytes, want the %d root bytes", p.Name, len(got), len(f.root))
	}
	if _, _, err := br.Next(); err != io.EOF {
		t.Fatalf("after the last part: got %v, want io.EOF", err)
	}
}

// rootOffset finds where the root's bytes start in the tar.
func rootOffset(t *testing.T, f fixture) int {
	i := bytes.Index(f.bundle, f.root[:64])
	if i < 0 {
		t.Fatal("root bytes not found in bundle")
	}
	return i
}

func TestRefusals(t *testing.T) {
	good := Manifest{Version: "1.1.0", Target: "amd64"}
	tests := []struct {
		name    string
		m       Manifest
		mangle  func(t *testing.T, f fixture) []byte
		otherKy bool
		want    error
	}{
		{name: "flipped bit in root", m: good, want: ErrHash, mangle: func(t *testing.T, f fixture) []byte {
			b := bytes.Clone(f.bundle)
			b[rootOffset(t, f)+len(f.root)/2] ^= 0x10
			return b
		}},
		{name: "truncated root", m: good, want: ErrHash, mangle: func(t *testing.T, f fixture) []byte {
			return f.bundle[:rootOffset(t, f)+len(f.root)-1000]
		}},
		{name: "flipped bit in manifest", m: good, want: ErrSignature, mangle: func(t *testing.T, f fixture) []byte {
			b := bytes.Clone(f.bundle)
			i := bytes.Index(b, []byte(`"1.1.0"`))
			b[i+1] = '9' // version 9.1.0, which the signature does not cover
			return b
		}},
		{name: "wrong signing key", m: good, otherKy: true, want: ErrSignature},
		{name: "wrong target", m: Manifest{Version: "1.1.0", Target: "rpi"}, want: ErrTarget},
		{name: "older version", m: Manifest{Version: "0.9.0", Target: "amd64"}, want: ErrVersion},
		{name: "same version", m: Manifest{Version: "1.0.0", Target: "amd64"}, want: ErrVersion},
		{name: "running version below minimum", m: Manifest{Version: "2.0.0", Target: "amd64", MinVersion: "1.5.0"}, want: ErrVersion},
		{name: "not a tar", m: good, want: ErrFormat, mangle: func(*testing.T, fixture) []byte { return []byte("hello") }},
		{name: "empty", m: good, want: ErrFormat, mangle: func(*testing.T, fixture) []byte { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.m)
			b := f.bundle
			if tt.mangle != nil {
				b = tt.mangle(t, f)
			}
			pub := f.pub
			if tt.otherKy {
				pub = newFixture(t, good).pub
			}
			_, err := Verify(bytes.NewReader(b), expect(t, pub))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify: got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestNoKeyRefusesEverything(t *testing.T) {
	f := newFixture(t, Manifest{Version: "1.1.0", Target: "amd64"})
	_, err := Verify(bytes.NewReader(f.bundle), Expect{Target: "amd64", Running: "1.0.0"})
	if !errors.Is(err, ErrNoKey) {
		t.Fatalf("got %v, want ErrNoKey", err)
	}
}

// kernelBundle writes a bundle with a root and boot files.
func kernelBundle(t *testing.T, boot map[string][]byte) (fixture, ed25519.PrivateKey) {
	t.Helper()
	privPEM, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	key, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root := make([]byte, 50_000)
	rand.Read(root)
	parts := map[string]string{PartRoot: filepath.Join(dir, "root")}
	os.WriteFile(parts[PartRoot], root, 0o644)
	for name, b := range boot {
		p := filepath.Join(dir, strings.ReplaceAll(name, "/", "_"))
		os.WriteFile(p, b, 0o644)
		parts[BootPrefix+name] = p
	}
	var buf bytes.Buffer
	if err := Write(&buf, Manifest{Version: "1.1.0", Target: "amd64"}, parts, key); err != nil {
		t.Fatal(err)
	}
	return fixture{key: privPEM, pub: pub, root: root, bundle: buf.Bytes()}, key
}

func TestBootFilesRoundTrip(t *testing.T) {
	kernel := make([]byte, 70_000)
	rand.Read(kernel)
	f, _ := kernelBundle(t, map[string][]byte{"vmlinuz": kernel, "cmdline.txt": []byte("ro\n"), "overlays/a.dtbo": []byte("x")})
	m, err := Verify(bytes.NewReader(f.bundle), expect(t, f.pub))
	if err != nil {
		t.Fatal(err)
	}
	if !m.HasKernel() || len(m.Parts) != 4 || m.Parts[0].Name != PartRoot {
		t.Fatalf("parts %+v, want the root first and three boot files", m.Parts)
	}
	var paths []string
	for _, p := range m.BootParts() {
		paths = append(paths, p.BootPath())
	}
	if strings.Join(paths, " ") != "cmdline.txt overlays/a.dtbo vmlinuz" {
		t.Errorf("boot paths %q, want sorted", paths)
	}
	br, err := Open(bytes.NewReader(f.bundle), expect(t, f.pub))
	if err != nil {
		t.Fatal(err)
	}
	br.Next() // root
	for {
		p, r, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if p.BootPath() == "vmlinuz" && !bytes.Equal(b, kernel) {
			t.Error("kernel bytes differ")
		}
	}
	// A root-only bundle has no kernel.
	ro := newFixture(t, Manifest{Version: "1.1.0", Target: "amd64"})
	if m, err := Verify(bytes.NewReader(ro.bundle), expect(t, ro.pub)); err != nil || m.HasKernel() {
		t.Errorf("root-only bundle: %v, kernel %v", err, m != nil && m.HasKernel())
	}
}

func TestTamperedKernelRefused(t *testing.T) {
	kernel := make([]byte, 70_000)
	rand.Read(kernel)
	f, _ := kernelBundle(t, map[string][]byte{"vmlinuz": kernel})
	i := bytes.Index(f.bundle, kernel[:64])
	f.bundle[i+5000] ^= 1
	if _, err := Verify(bytes.NewReader(f.bundle), expect(t, f.pub)); !errors.Is(err, ErrHash) {
		t.Errorf("tampered kernel: %v, want ErrHash", err)
	}
}

func TestBootPathsChecked(t *testing.T) {
	for _, bad := range []string{"../vmlinuz", "a/../../b", "/abs", "a b", "a/b/c/d", "x\\y", ".", "dir//f"} {
		if err := CheckBootPath(bad); err == nil {
			t.Errorf("CheckBootPath(%q) accepted", bad)
		}
	}
	for _, good := range []string{"vmlinuz", "overlays/vc4-kms-v3d.dtbo", "bcm2711-rpi-4-b.dtb", "a+b_c.txt"} {
		if err := CheckBootPath(good); err != nil {
			t.Errorf("CheckBootPath(%q): %v", good, err)
		}
	}
	// Write refuses them, and so does Open for a signed manifest that names one.
	_, key := kernelBundle(t, nil)
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("x"), 0o644)
	if err := Write(io.Discard, Manifest{Version: "1.1.0", Target: "amd64"}, map[string]string{PartRoot: p, BootPrefix + "../x": p}, key); err == nil {
		t.Error("Write accepted a boot file outside the slot")
	}
	f, key := kernelBundle(t, map[string][]byte{"vmlinuz": []byte("k")})
	m := Manifest{Format: FormatVersion, Version: "1.1.0", Target: "amd64", Parts: []Part{
		{Name: PartRoot, File: "root.img", Size: 1, SHA256: strings.Repeat("0", 64)},
		{Name: BootPrefix + "../../etc/x", File: BootPrefix + "../../etc/x", Size: 1, SHA256: strings.Repeat("0", 64)}}}
	if _, err := Open(bytes.NewReader(signedManifest(t, m, key)), expect(t, f.pub)); !errors.Is(err, ErrFormat) {
		t.Errorf("signed manifest naming ../../etc/x: %v, want ErrFormat", err)
	}
}

// signedManifest is a tar of a manifest as given and its signature (no parts).
func signedManifest(t *testing.T, m Manifest, key ed25519.PrivateKey) []byte {
	mb, _ := json.Marshal(m)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		name string
		data []byte
	}{{ManifestName, mb}, {SignatureName, ed25519.Sign(key, mb)}} {
		tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data))})
		tw.Write(e.data)
	}
	tw.Close()
	return buf.Bytes()
}
