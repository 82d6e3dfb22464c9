package main

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/images/catalog"
)

// catalogDir copies the embedded catalog into a temporary folder, with the
// public key of a new key pair (whose private key it writes to keyFile) when
// ownKey is set, else the embedded key.
func catalogDir(t *testing.T, ownKey bool) (dir, keyFile string) {
	t.Helper()
	dir = t.TempDir()
	data, sig := catalog.DefaultBytes()
	pub := catalog.PublicKeyText()
	keyFile = filepath.Join(t.TempDir(), "test.key")
	if ownKey {
		priv, pubB64, err := bundle.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, priv, 0o600); err != nil {
			t.Fatal(err)
		}
		pub = pubB64
	}
	for name, b := range map[string][]byte{"default.json": data, "default.json.sig": sig, "catalog.pub": []byte(pub + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, keyFile
}

func TestCatalogVerify(t *testing.T) {
	dir, _ := catalogDir(t, false)
	out, err := run("", "catalog", "verify", "-o", dir)
	if err != nil || !strings.Contains(out, "files 1.0.0") || !strings.Contains(out, "ok: 1 services") {
		t.Fatalf("verify of the embedded catalog: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "default.json"))
	b = bytes.Replace(b, []byte(`"egress": false`), []byte(`"egress": true`), 1)
	os.WriteFile(filepath.Join(dir, "default.json"), b, 0o644)
	if _, err := run("", "catalog", "verify", "-o", dir); !errors.Is(err, catalog.ErrBadSignature) {
		t.Errorf("verify of a tampered index: %v, want ErrBadSignature", err)
	}
}

func TestCatalogSignRefusesAKeyTheCellDoesNotTrust(t *testing.T) {
	dir, _ := catalogDir(t, false) // catalog.pub: the real key
	_, foreign := catalogDir(t, true)
	before, _ := os.ReadFile(filepath.Join(dir, "default.json.sig"))
	_, err := run("", "catalog", "sign", "-key", foreign, "-o", dir, "-images", t.TempDir(), "-C", "../..")
	if err == nil || !strings.Contains(err.Error(), "is not the key of") {
		t.Fatalf("sign with a foreign key: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "default.json.sig"))
	if !bytes.Equal(before, after) {
		t.Error("a refused sign rewrote the signature")
	}
}

// TestCatalogSignPinsTheBuild signs the catalog, built from an export of
// HEAD, with a key of its own: the
// result verifies and pins the archives it built. (That these equal the
// embedded digests is images/catalog's TestDefaultPinsTheBuiltImages.)
func TestCatalogSignPinsTheBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the service images")
	}
	dir, key := catalogDir(t, true)
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git to export the sources of HEAD")
	}
	images := t.TempDir()
	// -rev HEAD: this test may run while a service is being edited.
	out, err := run("", "catalog", "sign", "-rev", "HEAD", "-key", key, "-o", dir, "-images", images, "-C", "../..")
	if err != nil {
		t.Fatalf("sign: %v\n%s", err, out)
	}
	t.Log(out)
	data, _ := os.ReadFile(filepath.Join(dir, "default.json"))
	sig, _ := os.ReadFile(filepath.Join(dir, "default.json.sig"))
	pubText, _ := os.ReadFile(filepath.Join(dir, "catalog.pub"))
	pub, err := catalog.ParsePublicKey(string(pubText))
	if err != nil {
		t.Fatal(err)
	}
	got, err := catalog.Verify(data, sig, []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatalf("the signed index does not verify: %v", err)
	}
	gf, err := got.Service("files")
	if err != nil {
		t.Fatal(err)
	}
	top, err := os.ReadFile(filepath.Join(images, gf.Images["amd64"].Archive))
	if err != nil {
		t.Fatalf("the pinned archive: %v", err)
	}
	// The archive's index.json (its first file but the blobs) names the
	// pinned index.
	for _, arch := range []string{"amd64", "arm64"} {
		im := gf.Images[arch]
		if !bytes.Contains(top, []byte(`"digest":"`+im.Index+`"`)) || !bytes.Contains(top, []byte(im.Manifest[len("sha256:"):])) {
			t.Errorf("%s: the archive does not hold index %s and manifest %s", arch, im.Index, im.Manifest)
		}
	}
	if _, err := catalog.Verify(data, sig, []ed25519.PublicKey{catalog.PublicKey()}); !errors.Is(err, catalog.ErrBadSignature) {
		t.Errorf("an index signed by the test's key verified with the real one: %v", err)
	}
}

func TestImagesBuildRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown image", []string{"images", "build", "-only", "nope", "-C", "../..", "-o", t.TempDir()}, `no first-party image named "nope"`},
		{"not the module root", []string{"images", "build", "-C", t.TempDir(), "-o", t.TempDir()}, "not the module's root"},
		{"no subcommand", []string{"images"}, "usage"},
		{"stray argument", []string{"images", "build", "files"}, "unexpected arguments"},
	} {
		_, err := run("", tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestExtractTarRefusesEscapes(t *testing.T) {
	for _, name := range []string{"../evil", "/etc/evil", "a/../../evil"} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
		tw.Write([]byte("x"))
		tw.Close()
		dir := t.TempDir()
		if err := extractTar(&buf, filepath.Join(dir, "x")); err == nil || !strings.Contains(err.Error(), "leaves the folder") {
			t.Errorf("%q: %v, want a refusal", name, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "evil")); err == nil {
			t.Errorf("%q was written outside the folder", name)
		}
	}
}
