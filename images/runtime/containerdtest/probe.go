package containerdtest

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pic-cell/cell/images/oci"
)

// Probe is a built test image.
type Probe struct {
	Archive string // OCI archive (a tar of an OCI layout)
	Ref     string // its io.containerd.image.name, "pic.local/<name>:<version>"
	Digest  string // the image index's digest: what index.json lists for Ref and containerd takes as the image's target
}

// probePackage is the probe's Go package, relative to the module.
const probePackage = "./images/runtime/containerdtest/testdata/probe"

// ProbeImage builds, with images/oci (the builder of the cell's own
// service images), an OCI archive in a temp dir of t holding
// pic.local/<name>:<version>: the probe (testdata/probe), whose entrypoint
// serves /healthz on :8080, running as 65534:65534. The version is only in
// the name: every version has the same digest.
func ProbeImage(t testing.TB, name, version string) Probe {
	t.Helper()
	// Built once per test binary (two cross-compiles and a gzip take
	// seconds); each test gets its own copy of the archive.
	key := name + ":" + version
	probeMu.Lock()
	b, ok := probeBuilt[key]
	probeMu.Unlock()
	if !ok {
		b = buildProbe(t, name, version)
		probeMu.Lock()
		probeBuilt[key] = b
		probeMu.Unlock()
	}
	archive := filepath.Join(t.TempDir(), name+"-"+version+".oci.tar")
	if err := os.WriteFile(archive, b.data, 0o644); err != nil {
		t.Fatal(err)
	}
	p := b.probe
	p.Archive = archive
	return p
}

type builtProbe struct {
	probe Probe
	data  []byte
}

var (
	probeMu    sync.Mutex
	probeBuilt = map[string]builtProbe{}
)

func buildProbe(t testing.TB, name, version string) builtProbe {
	t.Helper()
	mod, err := moduleDir()
	if err != nil {
		t.Fatalf("containerdtest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := oci.Build(ctx, oci.Service{Name: name, Version: version, Package: probePackage, Binary: "/probe", User: "65534:65534", Ports: []int{8080}}, mod, t.TempDir())
	if err != nil {
		t.Fatalf("containerdtest: build the probe image: %v", err)
	}
	data, err := os.ReadFile(res.Archive)
	if err != nil {
		t.Fatal(err)
	}
	return builtProbe{probe: Probe{Ref: res.Ref, Digest: res.Index.String()}, data: data}
}

// moduleDir is the directory of the go.mod above this file.
func moduleDir() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}
