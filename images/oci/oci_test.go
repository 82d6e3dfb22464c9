package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// moduleDir is the module root, where Build resolves packages.
func moduleDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("module root not at %s: %v", dir, err)
	}
	return dir
}

var hello = Service{
	Name: "hello", Version: "0.1.0", Package: "./images/oci/testdata/hello",
	Binary: "/bin/hello", User: "65534:65534", Ports: []int{8080},
}

func needGo(t *testing.T) {
	t.Helper()
	if _, err := goTool(); err != nil {
		t.Skipf("no go toolchain to compile the image's binary: %v", err)
	}
}

// buildHello builds the test program once per test binary run and dir.
func buildHello(t *testing.T, out string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := Build(ctx, hello, moduleDir(t), out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %v: index %s, sizes %v", res.Archive, time.Since(start).Round(time.Millisecond), res.Index, res.Sizes)
	return res
}

func TestBuildWritesAReproducibleTwoArchIndex(t *testing.T) {
	needGo(t)
	res := buildHello(t, t.TempDir())
	if got, want := filepath.Base(res.Archive), "hello-0.1.0.oci.tar"; got != want {
		t.Errorf("archive name %q, want %q", got, want)
	}
	if res.Ref != "pic.local/hello:0.1.0" {
		t.Errorf("ref %q", res.Ref)
	}

	dir := untar(t, res.Archive)
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	topm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(topm.Manifests) != 1 {
		t.Fatalf("index.json has %d entries, want 1 (the image index)", len(topm.Manifests))
	}
	d := topm.Manifests[0]
	if d.Digest != res.Index || d.MediaType != types.OCIImageIndex {
		t.Errorf("index.json points at %s %s, want the OCI index %s", d.MediaType, d.Digest, res.Index)
	}
	for k, want := range map[string]string{AnnotationRefName: "0.1.0", AnnotationImageName: "pic.local/hello:0.1.0"} {
		if got := d.Annotations[k]; got != want {
			t.Errorf("annotation %s = %q, want %q", k, got, want)
		}
	}

	idx, err := top.ImageIndex(res.Index)
	if err != nil {
		t.Fatal(err)
	}
	if mt, _ := idx.MediaType(); mt != types.OCIImageIndex {
		t.Errorf("image index media type %s", mt)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var arches []string
	for _, m := range im.Manifests {
		if m.Platform == nil || m.Platform.OS != "linux" {
			t.Fatalf("manifest %s has platform %+v", m.Digest, m.Platform)
		}
		arch := m.Platform.Architecture
		arches = append(arches, arch)
		if res.Manifests[arch] != m.Digest {
			t.Errorf("%s: result says manifest %s, index has %s", arch, res.Manifests[arch], m.Digest)
		}
		if m.MediaType != types.OCIManifestSchema1 {
			t.Errorf("%s: manifest media type %s", arch, m.MediaType)
		}
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, arch, img, res.Sizes[arch])
	}
	if got := strings.Join(arches, ","); got != "amd64,arm64" {
		t.Errorf("arches %s, want amd64,arm64", got)
	}

	// Same sources, same Go: the same bytes.
	res2 := buildHello(t, t.TempDir())
	a, _ := os.ReadFile(res.Archive)
	b, _ := os.ReadFile(res2.Archive)
	if !bytes.Equal(a, b) {
		t.Errorf("a second build differs: %d vs %d bytes, index %s vs %s", len(a), len(b), res.Index, res2.Index)
	}
	if res2.Index != res.Index || res2.Manifests["arm64"] != res.Manifests["arm64"] {
		t.Errorf("digests differ between builds")
	}
}

func checkImage(t *testing.T, arch string, img v1.Image, size int64) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != arch {
		t.Errorf("%s: config platform %s/%s", arch, cf.OS, cf.Architecture)
	}
	if !cf.Created.Time.Equal(time.Unix(0, 0)) {
		t.Errorf("%s: created %v, want the epoch", arch, cf.Created.Time)
	}
	if got := strings.Join(cf.Config.Entrypoint, " "); got != "/bin/hello" {
		t.Errorf("%s: entrypoint %q", arch, got)
	}
	if cf.Config.User != "65534:65534" {
		t.Errorf("%s: user %q", arch, cf.Config.User)
	}
	if _, ok := cf.Config.ExposedPorts["8080/tcp"]; !ok || len(cf.Config.ExposedPorts) != 1 {
		t.Errorf("%s: exposed ports %v", arch, cf.Config.ExposedPorts)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%s: layers %d, %v; want one", arch, len(layers), err)
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("%s: layer media type %s", arch, mt)
	}
	if size < 100_000 {
		t.Errorf("%s: size %d is too small for a Go binary", arch, size)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	names := tarEntries(t, zr, func(h *tar.Header, content io.Reader) {
		if !h.ModTime.Equal(time.Unix(0, 0)) || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: %s: header varies: mtime %v uid %d gid %d %q %q", arch, h.Name, h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if h.Name == "bin/hello" {
			if h.Mode != 0o755 || h.Typeflag != tar.TypeReg {
				t.Errorf("%s: binary mode %o type %c", arch, h.Mode, h.Typeflag)
			}
			b, _ := io.ReadAll(content)
			if !bytes.HasPrefix(b, []byte("\x7fELF")) {
				t.Errorf("%s: the binary is no ELF file", arch)
			}
			// e_machine: 0x3e x86-64, 0xb7 aarch64.
			want := map[string]byte{"amd64": 0x3e, "arm64": 0xb7}[arch]
			if len(b) < 20 || b[18] != want {
				t.Errorf("%s: ELF machine %#x, want %#x", arch, b[18], want)
			}
		}
	})
	if got := strings.Join(names, ","); got != "bin/,bin/hello" {
		t.Errorf("%s: layer entries %s, want bin/,bin/hello", arch, got)
	}
}

// tarEntries reads the tar stream r to its end, calling fn on each entry
// with its content, and returns the entries' names in their order.
func tarEntries(t *testing.T, r io.Reader, fn func(h *tar.Header, content io.Reader)) []string {
	t.Helper()
	tr := tar.NewReader(r)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		fn(h, tr)
	}
}

// untar extracts an archive into a temporary directory for layout.FromPath.
func untar(t *testing.T, file string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := tarEntries(t, f, func(h *tar.Header, content io.Reader) {
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			return
		}
		b, err := io.ReadAll(content)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("archive entries not sorted: %q before %q", names[i-1], names[i])
		}
	}
	return dir
}

func TestValidate(t *testing.T) {
	ok := hello
	for _, tc := range []struct {
		name   string
		change func(s *Service)
		ok     bool
	}{
		{"valid", func(*Service) {}, true},
		{"upper-case name", func(s *Service) { s.Name = "Files" }, false},
		{"name too long", func(s *Service) { s.Name = strings.Repeat("a", 32) }, false},
		{"name starting with a digit", func(s *Service) { s.Name = "1files" }, false},
		{"empty version", func(s *Service) { s.Version = "" }, false},
		{"version with a slash", func(s *Service) { s.Version = "1/0" }, false},
		{"relative binary", func(s *Service) { s.Binary = "files" }, false},
		{"binary with dot-dot", func(s *Service) { s.Binary = "/a/../files" }, false},
		{"binary a directory", func(s *Service) { s.Binary = "/files/" }, false},
		{"no package", func(s *Service) { s.Package = "" }, false},
		{"package a flag", func(s *Service) { s.Package = "-toolexec=x" }, false},
		{"root user", func(s *Service) { s.User = "0:0" }, false},
		{"user name", func(s *Service) { s.User = "nobody" }, false},
		{"port zero", func(s *Service) { s.Ports = []int{0} }, false},
		{"port too high", func(s *Service) { s.Ports = []int{65536} }, false},
		{"port twice", func(s *Service) { s.Ports = []int{80, 80} }, false},
	} {
		s := ok
		tc.change(&s)
		err := s.Validate()
		if got := err == nil; got != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v does not wrap ErrInvalid", tc.name, err)
		}
	}
	for _, s := range FirstParty {
		if err := s.Validate(); err != nil {
			t.Errorf("first-party image: %v", err)
		}
	}
}

func TestBuildReportsACompileError(t *testing.T) {
	needGo(t)
	s := hello
	s.Package = "./images/oci/testdata/doesnotexist"
	out := t.TempDir()
	_, err := Build(context.Background(), s, moduleDir(t), out)
	if err == nil || !strings.Contains(err.Error(), "go build") {
		t.Fatalf("Build of a missing package: %v, want a go build error", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("a failed build left %d files in the output", len(ents))
	}
}

// TestContainerdImportsTheArchive imports the archive into a throwaway
// containerd with ctr, which uses the same importer as client.Import.
func TestContainerdImportsTheArchive(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a containerd")
	}
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs root on Linux to run a containerd")
	}
	containerd, err1 := exec.LookPath("containerd")
	ctr, err2 := exec.LookPath("ctr")
	if err1 != nil || err2 != nil {
		t.Skipf("needs containerd and ctr on PATH: %v %v", err1, err2)
	}
	needGo(t)
	res := buildHello(t, t.TempDir())

	// Short paths: the socket's path must fit in sun_path.
	dir, err := os.MkdirTemp("", "pic-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "c.sock")
	cfg := filepath.Join(dir, "config.toml")
	conf := `version = 2
root = "` + filepath.Join(dir, "root") + `"
state = "` + filepath.Join(dir, "state") + `"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "` + sock + `"
[ttrpc]
  address = "` + sock + `.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
`
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	d := exec.Command(containerd, "--config", cfg)
	d.Stdout, d.Stderr = &logs, &logs
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		d.Process.Kill()
		d.Wait()
	}()
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, ctr, append([]string{"-a", sock, "-n", "pic"}, args...)...).CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := run("version"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s:\n%s", sock, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := run("images", "import", res.Archive); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	out, err := run("images", "ls", "-q")
	if err != nil {
		t.Fatalf("ctr images ls: %v\n%s", err, out)
	}
	if got := strings.Fields(out); len(got) != 1 || got[0] != "pic.local/hello:0.1.0" {
		t.Errorf("images after import: %q, want exactly pic.local/hello:0.1.0", got)
	}
	out, _ = run("images", "ls")
	if !strings.Contains(out, res.Index.String()) {
		t.Errorf("the imported image is not the index %s:\n%s", res.Index, out)
	}
}

// TestWriteFile: a failed write leaves the old file and no temporary one; a
// good one replaces it, with mode 0644.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "index.json")
	if err := os.WriteFile(file, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := WriteFile(file, func(w io.Writer) error {
		io.WriteString(w, "half")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("failed write: err %v, want %v", err, boom)
	}
	if b, _ := os.ReadFile(file); string(b) != "old" {
		t.Errorf("after a failed write: %q, want the old content", b)
	}
	if err := WriteFile(file, func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(file); string(b) != "new" {
		t.Errorf("after a write: %q, want new", b)
	}
	if fi, err := os.Stat(file); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode())
	}
	if des, _ := os.ReadDir(dir); len(des) != 1 {
		t.Errorf("folder holds %d files, want only the written one", len(des))
	}
}
