package catalog

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/pic-cell/cell/images/oci"
)

// TestDefaultPinsTheBuiltImages rebuilds every first-party image and checks
// that the embedded catalog pins exactly those digests: the images are
// reproducible, so a difference means a service's source (or Go) changed
// without `make catalog`.
func TestDefaultPinsTheBuiltImages(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the service images")
	}
	idx, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	module, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(module, "go.mod")); err != nil {
		t.Fatalf("module root not at %s: %v", module, err)
	}
	if len(oci.FirstParty) == 0 {
		t.Fatal("no first-party images to check")
	}
	for _, s := range oci.FirstParty {
		e, err := idx.Service(s.Name)
		if err != nil {
			t.Errorf("first-party image %q: %v", s.Name, err)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		start := time.Now()
		res, err := oci.Build(ctx, s, module, t.TempDir())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: built in %v, sizes %v", s.Name, time.Since(start).Round(time.Millisecond), res.Sizes)
		if e.Version != s.Version {
			t.Errorf("%s: catalog version %s, built %s", s.Name, e.Version, s.Version)
		}
		for _, arch := range oci.Arches {
			want := Image{
				Ref: res.Ref, Index: res.Index.String(), Manifest: res.Manifests[arch].String(),
				Archive: filepath.Base(res.Archive), Size: res.Sizes[arch],
			}
			if got := e.Images[arch]; got != want {
				t.Errorf("%s/%s: the catalog pins\n  %+v\nthe build gives\n  %+v\n(the service's sources or Go (%s here) changed: commit, then run `make catalog`)", s.Name, arch, got, want, runtime.Version())
			}
		}
	}
}
