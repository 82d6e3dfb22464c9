package bundle

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
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
