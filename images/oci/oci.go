// Package oci owns the host-side build of first-party service images: it
// cross-compiles a static Go binary for each architecture the cell runs on,
// puts it alone into one layer on an empty base, and writes an OCI image
// index for linux/amd64 and linux/arm64 as an OCI image layout in a tar
// (an "OCI archive") that containerd's Import reads.
//
// Everything is reproducible: the same sources built with the same Go give a
// byte-identical archive and the same digests, which is what lets the signed
// catalog (images/catalog) pin them in a committed file. No Docker, no
// registry: only the go toolchain and go-containerregistry.
package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Arches are the architectures every image is built for, in index order.
var Arches = []string{"amd64", "arm64"}

// RefPrefix is the registry part of every first-party image name. It is no
// registry anyone can reach: images come only from archives.
const RefPrefix = "pic.local/"

// Annotations of the archive's top-level index.json. containerd's importer
// (client.Import) names the image after AnnotationImageName, which wins over
// the OCI ref name, so no import option is needed.
const (
	AnnotationRefName   = "org.opencontainers.image.ref.name"
	AnnotationImageName = "io.containerd.image.name"
)

// ErrInvalid is wrapped by every error about a Service's fields.
var ErrInvalid = errors.New("invalid service image definition")

// Service describes one first-party image to build.
type Service struct {
	Name    string // "files"
	Version string // "1.0.0"
	Package string // Go package to build, e.g. "./images/files"
	Binary  string // path of the binary inside the image: "/files"
	User    string // "65534:65534"
	Ports   []int  // exposed, informational
}

// Result is what Build wrote.
type Result struct {
	Archive   string             // path of the OCI archive
	Index     v1.Hash            // digest of the image index (the image's identity)
	Manifests map[string]v1.Hash // per arch
	Sizes     map[string]int64   // per arch: bytes of its manifest, config and compressed layer
	Ref       string             // "pic.local/<name>:<version>"
}

// FirstParty are the images `make images` builds: the services the default
// catalog lists. The catalog pins the digests of exactly these builds.
var FirstParty = []Service{
	{Name: "files", Version: "1.0.0", Package: "./images/files", Binary: "/files", User: "65534:65534", Ports: []int{8080, 8081}},
}

var (
	nameRE    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)
	versionRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$`)
	userRE    = regexp.MustCompile(`^[0-9]{1,10}:[0-9]{1,10}$`)
	binaryRE  = regexp.MustCompile(`^(/[A-Za-z0-9._-]+)+$`)
	packageRE = regexp.MustCompile(`^[A-Za-z0-9._/-]+$`)
)

// Validate checks s's fields.
func (s Service) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("service %q: %s: %w", s.Name, fmt.Sprintf(format, args...), ErrInvalid)
	}
	switch {
	case !nameRE.MatchString(s.Name):
		return bad("name must match %s", nameRE)
	case !versionRE.MatchString(s.Version):
		return bad("version %q must match %s", s.Version, versionRE)
	case s.Package == "" || !packageRE.MatchString(s.Package) || strings.HasPrefix(s.Package, "-"):
		return bad("package %q is not a Go package path", s.Package)
	case !binaryRE.MatchString(s.Binary) || path.Clean(s.Binary) != s.Binary || strings.Contains(s.Binary, "/../") || strings.HasSuffix(s.Binary, "/.."):
		return bad("binary %q must be a clean absolute path", s.Binary)
	case !userRE.MatchString(s.User):
		return bad("user %q must be UID:GID", s.User)
	}
	uid, _, _ := strings.Cut(s.User, ":")
	if n, _ := strconv.ParseUint(uid, 10, 64); n == 0 {
		return bad("user %q is root; services run as an unprivileged user", s.User)
	}
	seen := map[int]bool{}
	for _, p := range s.Ports {
		if p < 1 || p > 65535 {
			return bad("port %d out of 1..65535", p)
		}
		if seen[p] {
			return bad("port %d listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

// Ref is the name containerd gives the image once imported.
func (s Service) Ref() string { return RefPrefix + s.Name + ":" + s.Version }

// ArchiveName is the archive's file name.
func (s Service) ArchiveName() string { return s.Name + "-" + s.Version + ".oci.tar" }

// epoch is every timestamp in an image: the build's time would make each
// build differ.
var epoch = time.Unix(0, 0).UTC()

// Build compiles s.Package (resolved in moduleDir) for every arch in Arches
// and writes outDir/<name>-<version>.oci.tar.
func Build(ctx context.Context, s Service, moduleDir, outDir string) (Result, error) {
	if err := s.Validate(); err != nil {
		return Result{}, err
	}
	goCmd, err := goTool()
	if err != nil {
		return Result{}, err
	}
	work, err := os.MkdirTemp("", "pic-oci-"+s.Name+"-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(work)

	res := Result{Manifests: map[string]v1.Hash{}, Sizes: map[string]int64{}, Ref: s.Ref()}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range Arches {
		bin := filepath.Join(work, arch, path.Base(s.Binary))
		start := time.Now()
		if err := compile(ctx, goCmd, moduleDir, s.Package, arch, bin); err != nil {
			return Result{}, fmt.Errorf("service %q: %w", s.Name, err)
		}
		slog.Debug("compiled service binary", "service", s.Name, "arch", arch, "took", time.Since(start))
		img, err := image(s, arch, bin)
		if err != nil {
			return Result{}, fmt.Errorf("service %q (%s): %w", s.Name, arch, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return Result{}, err
	}
	res.Archive = filepath.Join(outDir, s.ArchiveName())
	blobs, top, err := layoutBlobs(idx, s)
	if err != nil {
		return Result{}, fmt.Errorf("service %q: %w", s.Name, err)
	}
	if err := writeArchive(res.Archive, blobs, top); err != nil {
		return Result{}, fmt.Errorf("service %q: %w", s.Name, err)
	}
	if res.Index, err = idx.Digest(); err != nil {
		return Result{}, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return Result{}, err
	}
	for _, d := range im.Manifests {
		arch := d.Platform.Architecture
		res.Manifests[arch] = d.Digest
		img, err := idx.Image(d.Digest)
		if err != nil {
			return Result{}, err
		}
		n, err := imageSize(img)
		if err != nil {
			return Result{}, err
		}
		res.Sizes[arch] = n
	}
	return res, nil
}

// goTool finds the go command: the one on PATH, else the one this program
// was built with.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no go command on PATH nor in %s: the images are compiled from source", runtime.GOROOT())
	}
	return p, nil
}

// compile cross-compiles pkg into out. The flags and environment are what
// make the binary reproducible: no cgo, no paths of this machine, no VCS
// stamp, no build ID, and the micro-architecture levels pinned so that a
// developer's GOAMD64=v3 does not change the digests.
func compile(ctx context.Context, goCmd, moduleDir, pkg, arch, out string) error {
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", out, "--", pkg)
	cmd.Dir = moduleDir
	cmd.Env = append(filteredEnv(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch,
		"GOAMD64=v1", "GOARM64=v8.0", "GOFLAGS=", "GOEXPERIMENT=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for linux/%s: %w\n%s", pkg, arch, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// filteredEnv is the environment without the variables compile sets itself.
func filteredEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "CGO_ENABLED", "GOOS", "GOARCH", "GOAMD64", "GOARM64", "GOFLAGS", "GOEXPERIMENT":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// image is the one-layer image of arch holding the binary at s.Binary.
func image(s Service, arch, bin string) (v1.Image, error) {
	layerTar, err := binaryLayer(bin, s.Binary)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestCompression), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "pic images/oci: go build " + s.Package},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: epoch}
	cf.OS = "linux"
	cf.Architecture = arch
	cf.Config = v1.Config{
		Entrypoint: []string{s.Binary},
		User:       s.User,
		WorkingDir: "/",
	}
	if len(s.Ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range s.Ports {
			cf.Config.ExposedPorts[strconv.Itoa(p)+"/tcp"] = struct{}{}
		}
	}
	return mutate.ConfigFile(img, cf)
}

// binaryLayer is an uncompressed tar with the file bin at inImage (and its
// parent directories): owner root, fixed times, nothing of this machine.
func binaryLayer(bin, inImage string) ([]byte, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	name := strings.TrimPrefix(inImage, "/")
	var dirs []string
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		dirs = append([]string{d}, dirs...)
	}
	for _, d := range dirs {
		if err := tw.WriteHeader(fixedHeader(d+"/", tar.TypeDir, 0o755, 0)); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(fixedHeader(name, tar.TypeReg, 0o755, int64(len(data)))); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func fixedHeader(name string, typ byte, mode, size int64) *tar.Header {
	return &tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     mode,
		Size:     size,
		ModTime:  epoch,
		Format:   tar.FormatUSTAR,
	}
}

// imageSize is the bytes one arch's image adds to a download: its manifest,
// its config and its compressed layers.
func imageSize(img v1.Image) (int64, error) {
	m, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	mf, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	n := int64(len(m)) + mf.Config.Size
	for _, l := range mf.Layers {
		n += l.Size
	}
	return n, nil
}

// layoutBlobs collects the blobs of the image layout (by hex digest) and the
// layout's top-level index.json, which points at the image index and names it.
func layoutBlobs(idx v1.ImageIndex, s Service) (map[string][]byte, []byte, error) {
	blobs := map[string][]byte{}
	add := func(h v1.Hash, b []byte) error {
		if h.Algorithm != "sha256" {
			return fmt.Errorf("blob %s: only sha256 digests are written", h)
		}
		blobs[h.Hex] = b
		return nil
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return nil, nil, err
	}
	idxDigest, err := idx.Digest()
	if err != nil {
		return nil, nil, err
	}
	if err := add(idxDigest, raw); err != nil {
		return nil, nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, nil, err
		}
		m, err := img.RawManifest()
		if err != nil {
			return nil, nil, err
		}
		if err := add(d.Digest, m); err != nil {
			return nil, nil, err
		}
		cfgName, err := img.ConfigName()
		if err != nil {
			return nil, nil, err
		}
		cfg, err := img.RawConfigFile()
		if err != nil {
			return nil, nil, err
		}
		if err := add(cfgName, cfg); err != nil {
			return nil, nil, err
		}
		layers, err := img.Layers()
		if err != nil {
			return nil, nil, err
		}
		for _, l := range layers {
			h, err := l.Digest()
			if err != nil {
				return nil, nil, err
			}
			rc, err := l.Compressed()
			if err != nil {
				return nil, nil, err
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return nil, nil, err
			}
			if err := add(h, b); err != nil {
				return nil, nil, err
			}
		}
	}
	top := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: types.OCIImageIndex,
			Size:      int64(len(raw)),
			Digest:    idxDigest,
			Annotations: map[string]string{
				AnnotationRefName:   s.Version,
				AnnotationImageName: s.Ref(),
			},
		}},
	}
	topJSON, err := json.Marshal(top)
	if err != nil {
		return nil, nil, err
	}
	return blobs, topJSON, nil
}

// writeArchive writes the image layout as a tar to file: entries sorted by
// name, every header fixed, so the same blobs give the same bytes. It writes
// a temporary file and renames it, so a failed build leaves no half archive.
func writeArchive(file string, blobs map[string][]byte, indexJSON []byte) error {
	entries := map[string][]byte{
		"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json": indexJSON,
	}
	for hex, b := range blobs {
		entries["blobs/sha256/"+hex] = b
	}
	names := []string{"blobs/", "blobs/sha256/"}
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)

	return WriteFile(file, func(w io.Writer) error {
		tw := tar.NewWriter(w)
		for _, n := range names {
			if strings.HasSuffix(n, "/") {
				if err := tw.WriteHeader(fixedHeader(n, tar.TypeDir, 0o755, 0)); err != nil {
					return err
				}
				continue
			}
			b := entries[n]
			if err := tw.WriteHeader(fixedHeader(n, tar.TypeReg, 0o644, int64(len(b)))); err != nil {
				return err
			}
			if _, err := tw.Write(b); err != nil {
				return err
			}
		}
		return tw.Close()
	})
}

// WriteFile replaces file, with mode 0644, by what write writes: into a
// temporary file beside it, then a rename, so that a failed or interrupted
// write leaves the old file (or none), never a half one. The catalog's
// signing in cellctl writes its index and signature through it too.
func WriteFile(file string, write func(w io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// BuildFirstParty builds every image of FirstParty into outDir.
func BuildFirstParty(ctx context.Context, moduleDir, outDir string) ([]Result, error) {
	var out []Result
	for _, s := range FirstParty {
		r, err := Build(ctx, s, moduleDir, outDir)
		if err != nil {
			return nil, fmt.Errorf("building the %s image: %w", s.Name, err)
		}
		out = append(out, r)
	}
	return out, nil
}
