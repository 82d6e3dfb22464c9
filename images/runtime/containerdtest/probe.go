package containerdtest

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Probe is a built test image.
type Probe struct {
	Archive string // OCI archive (a tar of an OCI layout)
	Ref     string // its io.containerd.image.name, "pic.local/<name>:<version>"
	Digest  string // the digest of the image's manifest as index.json lists it (what containerd takes as the image's target)
}

var (
	probeOnce sync.Once
	probeBin  []byte
	probeErr  error
)

// probeBinary compiles testdata/probe once per test binary (static, no cgo).
func probeBinary(t testing.TB) []byte {
	t.Helper()
	probeOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		dir := filepath.Dir(file)
		out, err := os.MkdirTemp("", "probe")
		if err != nil {
			probeErr = err
			return
		}
		defer os.RemoveAll(out)
		bin := filepath.Join(out, "probe")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./testdata/probe")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			probeErr = &buildError{err: err, out: string(b)}
			return
		}
		probeBin, probeErr = os.ReadFile(bin)
	})
	if probeErr != nil {
		if _, err := exec.LookPath("go"); err != nil {
			t.Skipf("containerdtest: go is needed to build the probe image: %v", err)
		}
		t.Fatalf("containerdtest: build probe: %v", probeErr)
	}
	return probeBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// ProbeImage builds an OCI archive in a temp dir of t holding one image,
// pic.local/<name>:<version>, whose entrypoint is the probe (/probe serve
// :8080) and whose user is 65534:65534. Different versions give different
// digests (the version is a label of the image's config).
func ProbeImage(t testing.TB, name, version string) Probe {
	t.Helper()
	bin := probeBinary(t)
	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	if err := tw.WriteHeader(&tar.Header{Name: "probe", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(bin); err != nil {
		t.Fatal(err)
	}
	// A mount point for tests that bind a volume.
	if err := tw.WriteHeader(&tar.Header{Name: "data/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	raw := layerTar.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = runtime.GOARCH
	cf.OS = "linux"
	cf.Config.Entrypoint = []string{"/probe", "serve", ":8080"}
	cf.Config.User = "65534:65534"
	cf.Config.Labels = map[string]string{"org.opencontainers.image.version": version}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref := "pic.local/" + name + ":" + version
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          ref,
		"org.opencontainers.image.ref.name": version,
	}), layout.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH})); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), name+"-"+version+".tar")
	if err := tarDir(dir, archive); err != nil {
		t.Fatal(err)
	}
	return Probe{Archive: archive, Ref: ref, Digest: d.String()}
}

// tarDir writes the files under dir into a tar at out, paths relative to dir.
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		info, err := e.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if e.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		f.Close()
		return err
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
