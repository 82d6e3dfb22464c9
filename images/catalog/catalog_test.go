package catalog

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
const digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

// validEntry is a well-formed service; each case of the tests below breaks
// one rule of it.
func validEntry() Entry {
	img := func(manifest string) Image {
		return Image{Ref: "pic.local/files:1.0.0", Index: digestA, Manifest: manifest, Archive: "files-1.0.0.oci.tar", Size: 1234}
	}
	return Entry{
		ID: "files", Name: "Files", Version: "1.0.0", Description: "Your household's files over WebDAV",
		Images:       map[string]Image{"amd64": img(digestB), "arm64": img(digestA)},
		Subdomain:    "files",
		Capabilities: []string{"files"},
		Ports:        []Port{{Name: "http", Port: 8080, Proto: "tcp"}, {Name: "admin", Port: 8081, Proto: "tcp"}},
		HTTPPort:     8080, AdminPort: 8081,
		Volumes:   []Volume{{Name: "data", Path: "/data"}},
		Resources: Resources{MemoryBytes: 128 << 20, CPUMillis: 500, Pids: 64},
		Health:    Health{Path: "/healthz", Port: 8080, TimeoutSeconds: 5, IntervalSeconds: 30},
		Accounts:  AccountsPerPeer,
		User:      "65534:65534",
	}
}

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func TestDefaultVerifiesAndListsFiles(t *testing.T) {
	idx, err := Default()
	if err != nil {
		t.Fatalf("Default: %v", err)
	}
	e, err := idx.Service("files")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"name", e.Name, "Files"},
		{"description", e.Description, "Your household's files over WebDAV"},
		{"subdomain", e.Subdomain, "files"},
		{"capabilities", e.Capabilities, []string{"files"}},
		{"ports", e.Ports, []Port{{"http", 8080, "tcp"}, {"admin", 8081, "tcp"}}},
		{"http port", e.HTTPPort, 8080},
		{"admin port", e.AdminPort, 8081},
		{"volumes", e.Volumes, []Volume{{"data", "/data"}}},
		{"resources", e.Resources, Resources{MemoryBytes: 128 << 20, CPUMillis: 500, Pids: 64}},
		{"egress", e.Egress, false},
		{"health path and port", [2]any{e.Health.Path, e.Health.Port}, [2]any{"/healthz", 8080}},
		{"accounts", e.Accounts, AccountsPerPeer},
		{"user", e.User, "65534:65534"},
		{"arches", len(e.Images), 2},
		{"ref", e.Images["arm64"].Ref, "pic.local/files:" + e.Version},
		{"archive", e.Images["amd64"].Archive, "files-" + e.Version + ".oci.tar"},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("files %s: got %v, want %v", c.what, c.got, c.want)
		}
	}
	if _, err := idx.Service("mail"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Service(mail): %v, want ErrNotFound", err)
	}
}

func TestEmbeddedKey(t *testing.T) {
	k := PublicKey()
	if len(k) != ed25519.PublicKeySize {
		t.Fatalf("PublicKey() is %d bytes", len(k))
	}
	// The form `cellctl keygen` prints and the vault's trust keys read
	// (cell/vault ParseTrustKey): standard base64 of the 32 bytes.
	raw, err := base64.StdEncoding.DecodeString(PublicKeyText())
	if err != nil || !bytes.Equal(raw, k) {
		t.Errorf("catalog.pub %q is not the standard base64 of the key: %v", PublicKeyText(), err)
	}
	idx, sig := DefaultBytes()
	if _, err := Verify(idx, sig, []ed25519.PublicKey{k}); err != nil {
		t.Errorf("the embedded bytes do not verify: %v", err)
	}
}

func TestVerifyRefusesABadSignature(t *testing.T) {
	pub, priv := newKey(t)
	otherPub, otherPriv := newKey(t)
	data, sig, err := Sign(Index{Version: 1, Services: []Entry{validEntry()}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	_, sigByOther, err := Sign(Index{Version: 1, Services: []Entry{validEntry()}}, otherPriv)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(data, []byte(`"egress": false`), []byte(`"egress": true`), 1)
	if bytes.Equal(tampered, data) {
		t.Fatal("the test's tampering changed nothing")
	}
	for _, tc := range []struct {
		name      string
		data, sig []byte
		keys      []ed25519.PublicKey
	}{
		{"tampered index", tampered, sig, []ed25519.PublicKey{pub}},
		{"signed by another key", data, sigByOther, []ed25519.PublicKey{pub}},
		{"not base64", data, []byte("not a signature!"), []ed25519.PublicKey{pub}},
		{"truncated", data, sig[:20], []ed25519.PublicKey{pub}},
		{"empty signature", data, nil, []ed25519.PublicKey{pub}},
		{"no trusted key", data, sig, nil},
		{"a short key", data, sig, []ed25519.PublicKey{pub[:16]}},
	} {
		got, err := Verify(tc.data, tc.sig, tc.keys)
		if !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: Verify: %v, want ErrBadSignature", tc.name, err)
		}
		if len(got.Services) != 0 || got.Version != 0 {
			t.Errorf("%s: Verify returned an index along with its error: %+v", tc.name, got)
		}
	}
	// Any one trusted key is enough, and the index comes back whole.
	got, err := Verify(data, sig, []ed25519.PublicKey{otherPub, pub})
	if err != nil {
		t.Fatalf("Verify with the key second in the list: %v", err)
	}
	if want := (Index{Version: 1, Services: []Entry{validEntry()}}); !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

func TestVerifyRefusesAnInvalidIndexEvenWhenSigned(t *testing.T) {
	pub, priv := newKey(t)
	e := validEntry()
	e.Resources.MemoryBytes = 0
	data, _ := json.Marshal(Index{Version: 1, Services: []Entry{e}})
	sig := []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(priv, data)))
	if _, err := Verify(data, sig, []ed25519.PublicKey{pub}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Verify of a signed index with memory 0: %v, want ErrInvalid", err)
	}
	if _, _, err := Sign(Index{Version: 1, Services: []Entry{e}}, priv); !errors.Is(err, ErrInvalid) {
		t.Errorf("Sign of an invalid index: %v, want ErrInvalid", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(x *Index)
	}{
		{"format version 2", func(x *Index) { x.Version = 2 }},
		{"upper-case id", func(x *Index) { x.Services[0].ID = "Files" }},
		{"id too long", func(x *Index) { x.Services[0].ID = strings.Repeat("f", 32) }},
		{"empty name", func(x *Index) { x.Services[0].Name = " " }},
		{"version with a space", func(x *Index) { x.Services[0].Version = "1 0" }},
		{"subdomain with a dot", func(x *Index) { x.Services[0].Subdomain = "files.evil" }},
		{"subdomain ending in a dash", func(x *Index) { x.Services[0].Subdomain = "files-" }},
		{"same id twice", func(x *Index) {
			e := validEntry()
			e.Subdomain = "other"
			x.Services = append(x.Services, e)
		}},
		{"same subdomain twice", func(x *Index) {
			e := validEntry()
			e.ID = "other"
			x.Services = append(x.Services, e)
		}},
		{"no images", func(x *Index) { x.Services[0].Images = nil }},
		{"unknown arch", func(x *Index) { x.Services[0].Images["riscv64"] = x.Services[0].Images["amd64"] }},
		{"short digest", func(x *Index) { setImage(x, func(im *Image) { im.Manifest = "sha256:abc" }) }},
		{"upper-case digest", func(x *Index) { setImage(x, func(im *Image) { im.Index = strings.ToUpper(digestA) }) }},
		{"sha512 digest", func(x *Index) { setImage(x, func(im *Image) { im.Index = "sha512:" + digestA[7:] }) }},
		{"arches of two indexes", func(x *Index) { setImage(x, func(im *Image) { im.Index = digestB }) }},
		{"arches of two refs", func(x *Index) { setImage(x, func(im *Image) { im.Ref = "pic.local/files:2" }) }},
		{"arches of two archives", func(x *Index) { setImage(x, func(im *Image) { im.Archive = "files-2.oci.tar" }) }},
		{"archive a path", func(x *Index) { setImage(x, func(im *Image) { im.Archive = "../etc/x.oci.tar" }) }},
		{"archive not a tar", func(x *Index) { setImage(x, func(im *Image) { im.Archive = "files.tar.gz" }) }},
		{"ref without a tag", func(x *Index) { setImage(x, func(im *Image) { im.Ref = "pic.local/files" }) }},
		{"size zero", func(x *Index) { setImage(x, func(im *Image) { im.Size = 0 }) }},
		{"no capabilities", func(x *Index) { x.Services[0].Capabilities = nil }},
		{"unknown capability", func(x *Index) { x.Services[0].Capabilities = []string{"bitcoin"} }},
		{"capability twice", func(x *Index) { x.Services[0].Capabilities = []string{"files", "files"} }},
		{"port zero", func(x *Index) { x.Services[0].Ports[1].Port = 0 }},
		{"port too high", func(x *Index) { x.Services[0].Ports[1].Port = 65536 }},
		{"port proto sctp", func(x *Index) { x.Services[0].Ports[1].Proto = "sctp" }},
		{"port proto missing", func(x *Index) { x.Services[0].Ports[1].Proto = "" }},
		{"same port twice", func(x *Index) { x.Services[0].Ports[1].Port = 8080 }},
		{"same port name twice", func(x *Index) { x.Services[0].Ports[1].Name = "http" }},
		{"http port not listed", func(x *Index) { x.Services[0].HTTPPort = 9000 }},
		{"http port udp", func(x *Index) { x.Services[0].Ports[0].Proto = "udp" }},
		{"admin port is the http port", func(x *Index) { x.Services[0].AdminPort = 8080 }},
		{"per-peer accounts without admin port", func(x *Index) { x.Services[0].AdminPort = 0 }},
		{"unknown accounts", func(x *Index) { x.Services[0].Accounts = "ldap" }},
		{"relative volume", func(x *Index) { x.Services[0].Volumes[0].Path = "data" }},
		{"volume at the root", func(x *Index) { x.Services[0].Volumes[0].Path = "/" }},
		{"volume with dot-dot", func(x *Index) { x.Services[0].Volumes[0].Path = "/data/../etc" }},
		{"volume twice", func(x *Index) { x.Services[0].Volumes = append(x.Services[0].Volumes, Volume{"data", "/other"}) }},
		{"memory zero", func(x *Index) { x.Services[0].Resources.MemoryBytes = 0 }},
		{"memory 1 TiB", func(x *Index) { x.Services[0].Resources.MemoryBytes = 1 << 40 }},
		{"cpu zero", func(x *Index) { x.Services[0].Resources.CPUMillis = 0 }},
		{"cpu 100 cores", func(x *Index) { x.Services[0].Resources.CPUMillis = 100000 }},
		{"pids zero", func(x *Index) { x.Services[0].Resources.Pids = 0 }},
		{"pids a million", func(x *Index) { x.Services[0].Resources.Pids = 1 << 20 }},
		{"health path relative", func(x *Index) { x.Services[0].Health.Path = "healthz" }},
		{"health port not listed", func(x *Index) { x.Services[0].Health.Port = 9000 }},
		{"health timeout zero", func(x *Index) { x.Services[0].Health.TimeoutSeconds = 0 }},
		{"health timeout beyond interval", func(x *Index) { x.Services[0].Health.TimeoutSeconds = 40 }},
		{"root user", func(x *Index) { x.Services[0].User = "0:65534" }},
		{"user by name", func(x *Index) { x.Services[0].User = "nobody" }},
	} {
		x := Index{Version: 1, Services: []Entry{validEntry()}}
		tc.change(&x)
		data, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Decode(data)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Decode: %v, want ErrInvalid", tc.name, err)
		}
	}

	good, _ := json.Marshal(Index{Version: 1, Services: []Entry{validEntry()}})
	if _, err := Decode(good); err != nil {
		t.Fatalf("the valid index: %v", err)
	}
	for name, data := range map[string][]byte{
		"unknown top-level field": bytes.Replace(good, []byte(`"version":1`), []byte(`"version":1,"mirror":"http://x"`), 1),
		"unknown entry field":     bytes.Replace(good, []byte(`"egress":false`), []byte(`"egress":false,"privileged":true`), 1),
		"unknown resources field": bytes.Replace(good, []byte(`"pids":64`), []byte(`"pids":64,"swap":1`), 1),
		"data after the index":    append(append([]byte(nil), good...), []byte(`{"version":1}`)...),
		"not JSON":                []byte("version: 1"),
		"too large":               append(append([]byte(nil), good...), bytes.Repeat([]byte(" "), MaxIndexBytes)...),
	} {
		if bytes.Equal(data, good) {
			t.Fatalf("%s: the test changed nothing", name)
		}
		if _, err := Decode(data); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Decode: %v, want ErrInvalid", name, err)
		}
	}
}

func setImage(x *Index, f func(*Image)) {
	im := x.Services[0].Images["arm64"]
	f(&im)
	x.Services[0].Images["arm64"] = im
}

func TestSignWritesWhatVerifyReads(t *testing.T) {
	pub, priv := newKey(t)
	x := Index{Version: 1, Services: []Entry{validEntry()}}
	data, sig, err := Sign(x, priv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(data, []byte("}\n")) || !bytes.HasSuffix(sig, []byte("\n")) {
		t.Errorf("index and signature should be text files ending in a newline")
	}
	if !bytes.Contains(data, []byte(`"http_port": 8080`)) || !bytes.Contains(data, []byte(`"memory_bytes": 134217728`)) {
		t.Errorf("JSON names are not snake_case:\n%s", data)
	}
	got, err := Verify(data, sig, []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, x) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, x)
	}
	if _, _, err := Sign(x, priv[:10]); err == nil {
		t.Error("Sign with a short key succeeded")
	}
}
