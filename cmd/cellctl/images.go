package main

import (
	"archive/tar"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/images/catalog"
	"github.com/pic-cell/cell/images/oci"
)

func init() {
	register("images", "build the first-party service images as OCI archives (images build)", (*CLI).images)
	register("catalog", "rebuild the service images and re-sign the default catalog (catalog sign|verify)", (*CLI).catalog)
}

// images: `cellctl images build [-o images/out] [-only NAME] [-C MODULE]`.
func (c *CLI) images(args []string) error {
	if len(args) == 0 || args[0] != "build" {
		fmt.Fprintln(c.Stderr, "usage: cellctl images build [-o images/out] [-only NAME] [-C MODULE_DIR]")
		return errUsage
	}
	fs := c.newFlagSet("images build")
	out := fs.String("o", "images/out", "folder to write NAME-VERSION.oci.tar into")
	only := fs.String("only", "", "build only this image (default: every first-party image)")
	module := fs.String("C", ".", "the module's root, where the services' packages are")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("images build: unexpected arguments %q", fs.Args())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	_, err := buildImages(ctx, c.Stdout, *module, *out, *only)
	return err
}

// buildImages builds the first-party images (or only one) and prints what it
// built.
func buildImages(ctx context.Context, w io.Writer, module, out, only string) (map[string]oci.Result, error) {
	if _, err := os.Stat(filepath.Join(module, "go.mod")); err != nil {
		return nil, fmt.Errorf("%s is not the module's root (no go.mod); run from there or pass -C", module)
	}
	var todo []oci.Service
	for _, s := range oci.FirstParty {
		if only == "" || s.Name == only {
			todo = append(todo, s)
		}
	}
	if len(todo) == 0 {
		return nil, fmt.Errorf("no first-party image named %q", only)
	}
	results := map[string]oci.Result{}
	for _, s := range todo {
		start := time.Now()
		res, err := oci.Build(ctx, s, module, out)
		if err != nil {
			return nil, err
		}
		results[s.Name] = res
		fmt.Fprintf(w, "%s %s: %s (%v)\n  index %s\n", s.Name, res.Ref, res.Archive, time.Since(start).Round(time.Millisecond), res.Index)
		for _, arch := range oci.Arches {
			fmt.Fprintf(w, "  %-5s manifest %s, %d bytes\n", arch, res.Manifests[arch], res.Sizes[arch])
		}
	}
	return results, nil
}

// catalog: `cellctl catalog sign -key pic-catalog.key [-o images/catalog]`
// and `cellctl catalog verify [-o images/catalog]`.
func (c *CLI) catalog(args []string) error {
	usage := "usage: cellctl catalog sign -key pic-catalog.key [-o images/catalog] [-images images/out] [-C MODULE_DIR] [-allow-dirty | -rev HEAD]\n       cellctl catalog verify [-o images/catalog]"
	if len(args) == 0 {
		fmt.Fprintln(c.Stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "sign":
		return c.catalogSign(args[1:])
	case "verify":
		return c.catalogVerify(args[1:])
	}
	fmt.Fprintln(c.Stderr, usage)
	return errUsage
}

// catalogSign rebuilds every first-party image, pins the results in
// DIR/default.json and signs it into DIR/default.json.sig. The key must be
// the one DIR/catalog.pub names: an index the cell's embedded key does not
// verify would be refused at its first start.
func (c *CLI) catalogSign(args []string) error {
	fs := c.newFlagSet("catalog sign")
	keyPath := fs.String("key", "pic-catalog.key", "the catalog's private key (cellctl keygen -o pic-catalog -config '')")
	dir := fs.String("o", "images/catalog", "the folder with default.json, default.json.sig and catalog.pub")
	out := fs.String("images", "images/out", "folder to build the images into")
	module := fs.String("C", ".", "the module's root")
	allowDirty := fs.Bool("allow-dirty", false, "sign even when the services' sources have uncommitted changes")
	rev := fs.String("rev", "", "build from this git revision (e.g. HEAD) instead of the working tree")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("catalog sign: unexpected arguments %q", fs.Args())
	}
	keyPEM, err := os.ReadFile(*keyPath)
	if err != nil {
		return fmt.Errorf("the catalog's signing key: %w", err)
	}
	key, err := bundle.ParsePrivateKey(keyPEM)
	if err != nil {
		return fmt.Errorf("the catalog's signing key %s: %w", *keyPath, err)
	}
	pubText, err := os.ReadFile(filepath.Join(*dir, "catalog.pub"))
	if err != nil {
		return err
	}
	pub, err := catalog.ParsePublicKey(string(pubText))
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(*dir, "catalog.pub"), err)
	}
	if !pub.Equal(key.Public()) {
		return fmt.Errorf("%s is not the key of %s: the cell would refuse what it signs", *keyPath, filepath.Join(*dir, "catalog.pub"))
	}
	indexPath := filepath.Join(*dir, "default.json")
	raw, err := os.ReadFile(indexPath)
	if err != nil {
		return err
	}
	// The file is ours to rewrite: its origin is this checkout, so its shape
	// is what matters here, not its old signature.
	idx, err := catalog.Decode(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", indexPath, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	// Pinned digests must be those of the committed sources, or no one can
	// rebuild them: refuse a tree with edits in what the images compile, or
	// build an export of a revision (-trimpath: the folder is not in the
	// binaries, so the digests are those of a checkout of it).
	if *rev != "" {
		tree, err := exportRevision(ctx, *module, *rev)
		if err != nil {
			return err
		}
		defer os.RemoveAll(tree)
		*module = tree
	} else if !*allowDirty {
		dirty, err := dirtySources(ctx, *module)
		if err != nil {
			fmt.Fprintf(c.Stderr, "cellctl: cannot tell whether the sources are committed (%v); signing anyway\n", err)
		} else if len(dirty) > 0 {
			return fmt.Errorf("uncommitted changes in the images' sources (%s): commit them first, or pass -allow-dirty", strings.Join(dirty, ", "))
		}
	}
	results, err := buildImages(ctx, c.Stdout, *module, *out, "")
	if err != nil {
		return err
	}
	if err := pinImages(&idx, results); err != nil {
		return err
	}
	data, sig, err := catalog.Sign(idx, key)
	if err != nil {
		return err
	}
	if _, err := catalog.Verify(data, sig, []ed25519.PublicKey{pub}); err != nil {
		return fmt.Errorf("the index just signed does not verify: %w", err)
	}
	if err := writeFileAtomic(indexPath, data); err != nil {
		return err
	}
	if err := writeFileAtomic(indexPath+".sig", sig); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "signed %s (%d services) with %s\n", indexPath, len(idx.Services), *keyPath)
	return nil
}

// pinImages points every service of idx at the image built for it.
func pinImages(idx *catalog.Index, results map[string]oci.Result) error {
	for i, e := range idx.Services {
		res, ok := results[e.ID]
		if !ok {
			return fmt.Errorf("service %q: no first-party image of that name was built; add it to oci.FirstParty: %w", e.ID, catalog.ErrNotFound)
		}
		images := map[string]catalog.Image{}
		for _, arch := range oci.Arches {
			images[arch] = catalog.Image{
				Ref:      res.Ref,
				Index:    res.Index.String(),
				Manifest: res.Manifests[arch].String(),
				Archive:  filepath.Base(res.Archive),
				Size:     res.Sizes[arch],
			}
		}
		for _, s := range oci.FirstParty {
			if s.Name == e.ID {
				idx.Services[i].Version = s.Version
			}
		}
		idx.Services[i].Images = images
	}
	return nil
}

// catalogVerify checks DIR/default.json against DIR/default.json.sig and
// DIR/catalog.pub, as the cell does with the embedded copies.
func (c *CLI) catalogVerify(args []string) error {
	fs := c.newFlagSet("catalog verify")
	dir := fs.String("o", "images/catalog", "the folder with default.json, default.json.sig and catalog.pub")
	if err := fs.Parse(args); err != nil {
		return err
	}
	read := func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(*dir, name)) }
	data, err1 := read("default.json")
	sig, err2 := read("default.json.sig")
	pubText, err3 := read("catalog.pub")
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	pub, err := catalog.ParsePublicKey(string(pubText))
	if err != nil {
		return err
	}
	idx, err := catalog.Verify(data, sig, []ed25519.PublicKey{pub})
	if err != nil {
		return err
	}
	for _, e := range idx.Services {
		fmt.Fprintf(c.Stdout, "%s %s: https://%s.<domain>, image %s\n", e.ID, e.Version, e.Subdomain, e.Images["amd64"].Index)
	}
	fmt.Fprintf(c.Stdout, "ok: %d services, signed by %s\n", len(idx.Services), strings.TrimSpace(string(pubText)))
	return nil
}

// writeFileAtomic replaces file with data by a rename, so an interrupted
// sign leaves the old index, never a half one.
func writeFileAtomic(file string, data []byte) error {
	return oci.WriteFile(file, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// dirtySources lists the files git reports as changed or new in the module's
// packages that the first-party images compile, and in go.mod and go.sum.
func dirtySources(ctx context.Context, module string) ([]string, error) {
	abs, err := filepath.Abs(module)
	if err != nil {
		return nil, err
	}
	args := []string{"list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}"}
	for _, s := range oci.FirstParty {
		args = append(args, s.Package)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = abs
	// The images are built for linux with cgo off: list what those builds read.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w", err)
	}
	paths := []string{"go.mod", "go.sum"}
	for _, dir := range strings.Fields(string(out)) {
		if rel, err := filepath.Rel(abs, dir); err == nil && !strings.HasPrefix(rel, "..") {
			paths = append(paths, filepath.ToSlash(rel))
		}
	}
	// -uall: a new file in a package's folder (untracked) counts too.
	st := exec.CommandContext(ctx, "git", append([]string{"-C", abs, "status", "--porcelain", "-uall", "--"}, paths...)...)
	out, err = st.Output()
	if err != nil {
		return nil, fmt.Errorf("git status: %w", err)
	}
	var dirty []string
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		// Tests and their data are not compiled into the images.
		if name := line[min(3, len(line)):]; name != "" && !strings.HasSuffix(name, "_test.go") && !strings.Contains(name, "testdata/") {
			dirty = append(dirty, name)
		}
	}
	return dirty, nil
}

// exportRevision writes the files of rev (git archive) into a new temporary
// folder and returns it.
func exportRevision(ctx context.Context, module, rev string) (string, error) {
	if strings.HasPrefix(rev, "-") {
		return "", fmt.Errorf("-rev %q is not a revision", rev)
	}
	dir, err := os.MkdirTemp("", "pic-catalog-src-")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "git", "-C", module, "archive", "--format=tar", rev)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	r, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("git archive: %w", err)
	}
	xerr := extractTar(r, dir)
	io.Copy(io.Discard, r)
	if err := errors.Join(cmd.Wait(), xerr); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("git archive %s: %w %s", rev, err, strings.TrimSpace(stderr.String()))
	}
	return dir, nil
}

// extractTar writes the directories, files and symbolic links of a tar into
// dir, refusing names that leave it.
func extractTar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.FromSlash(h.Name)
		if !filepath.IsLocal(name) {
			return fmt.Errorf("archive entry %q leaves the folder", h.Name)
		}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			err = writeFrom(p, tr, os.FileMode(h.Mode)&0o777)
		case tar.TypeSymlink:
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
				err = os.Symlink(h.Linkname, p)
			}
		}
		if err != nil {
			return err
		}
	}
}

func writeFrom(p string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode|0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	return errors.Join(err, f.Close())
}
