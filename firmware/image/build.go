package image

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"

	"github.com/pic-cell/cell/firmware/release"
)

// InitPackage is the image's init: gokrazy's Boot and supervisor plus the cell's
// trial-boot switch (see firmware/update).
const InitPackage = "github.com/pic-cell/cell/cmd/cell-init"

// gokrazy's own programs that every image runs unless the settings say otherwise.
const (
	dhcpPackage = "github.com/gokrazy/gokrazy/cmd/dhcp"
	ntpPackage  = "github.com/gokrazy/gokrazy/cmd/ntp"
)

// Options are what Build and BuildRoot need besides the config.
type Options struct {
	// Dir is the module directory that `go build` and `go list -m` run in
	// (default "."): the module's go.mod pins the kernel and the programs.
	Dir string
	// GoTool is the go command (default "go").
	GoTool string
	// Built stamps the release (default: now).
	Built time.Time
	Log   *slog.Logger
	// ExtraFiles are copied into the root: path in the root → file on the host
	// (like gokrazy's ExtraFilePaths).
	ExtraFiles map[string]string
	// Images are host paths of OCI archives (the first-party services'
	// images, `cellctl images build`) copied into the root's ImagesDir, from
	// where the cell installs a service without a network. Their file names
	// are kept and must differ.
	Images []string
	// ToolCache is where the container tools (containerd.go) are compiled, one
	// directory per GOARCH, kept between builds (default: the user's cache
	// directory's pic-cell/firmware-tools).
	ToolCache string
	// SetupCode, when set, is written to the boot partition as
	// release.SetupCodeFile, from where the device's cell reads it (Build only;
	// an update never touches the boot partition's files). Make it with
	// NewSetupCode. An image without one has its cell make a code of its own,
	// which it writes only to its log on the console.
	SetupCode string
}

// NewSetupCode returns a fresh setup code for an image: 140 random bits as 28
// base32 letters and digits in groups of four (ABCD-EFGH-...), the format of
// cell/setup's NewCode (which firmware may not import). The cell compares codes
// ignoring case, dashes and white space.
func NewSetupCode() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	s := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)[:28]
	var out strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			out.WriteByte('-')
		}
		out.WriteString(s[i : i+4])
	}
	return out.String(), nil
}

func (o *Options) defaults() {
	if o.Dir == "" {
		o.Dir = "."
	}
	if o.GoTool == "" {
		o.GoTool = "go"
	}
	if o.Built.IsZero() {
		o.Built = time.Now().UTC()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.ToolCache == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		o.ToolCache = filepath.Join(dir, "pic-cell", "firmware-tools")
	}
}

// BuildRoot compiles every program of cfg and writes the root squashfs to dst. The
// same function makes the root of an image and the root of an update bundle, so
// that an update is exactly what a fresh flash would have been.
func BuildRoot(ctx context.Context, cfg *Config, o Options, dst string) error {
	o.defaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	target, _ := TargetByName(cfg.Target)
	kernelDir, err := moduleDir(o.GoTool, o.Dir, target.KernelModule)
	if err != nil {
		return err
	}

	// The squashfs is written to a file of its own first (not into the disk
	// image's partition): go-diskfs' CreateFilesystem hands squashfs the disk's
	// 512-byte sector size as block size, which squashfs rejects.
	maxSize := int64(orDefault(cfg.Settings.RootMiB, defaultRootMiB)) << 20
	storage, err := file.CreateFromPath(dst+".tmp", maxSize)
	if err != nil {
		return err
	}
	defer os.Remove(dst + ".tmp")
	// 128 KiB blocks, mksquashfs' default: with 4 KiB ones go-diskfs (v1.9.4)
	// writes a file of more than about 13,000 blocks (the cell's daemon with
	// Caddy linked, 56 MB) with a block list the kernel cannot read
	// ("SQUASHFS error: read_indexes"), and the image never starts its cell.
	sq, err := squashfs.Create(storage, maxSize, 0, 128<<10)
	if err != nil {
		storage.Close()
		return err
	}
	ws := sq.Workspace()
	defer os.RemoveAll(ws)

	if err := populateRoot(ctx, cfg, o, target, kernelDir, ws); err != nil {
		storage.Close()
		return err
	}
	if err := finalizeInWorkspace(sq); err != nil {
		storage.Close()
		return fmt.Errorf("squashfs: %w", err)
	}
	if err := storage.Close(); err != nil {
		return err
	}
	// The work file has the partition's full (sparse) size; keep only the bytes
	// the superblock says are used, padded to 4 KiB like mksquashfs does.
	used, err := squashfsBytesUsed(dst + ".tmp")
	if err != nil {
		return err
	}
	if used > maxSize {
		return fmt.Errorf("root file system needs %d MiB, the root partition holds %d MiB", used>>20, maxSize>>20)
	}
	if err := os.Truncate(dst+".tmp", (used+4095)&^4095); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

// finalizeMu serialises Finalize calls, which change the process's working
// directory.
var finalizeMu sync.Mutex

// finalizeInWorkspace runs Finalize with the workspace as working directory:
// go-diskfs (v1.9.4) reads symlink targets with os.Readlink on paths relative to
// the workspace, so from anywhere else every symlink fails to pack.
func finalizeInWorkspace(sq *squashfs.FileSystem) error {
	finalizeMu.Lock()
	defer finalizeMu.Unlock()
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	if err := os.Chdir(sq.Workspace()); err != nil {
		return err
	}
	defer os.Chdir(wd)
	zero := uint32(0)
	return sq.Finalize(squashfs.FinalizeOptions{FileUID: &zero, FileGID: &zero})
}

// squashfsBytesUsed reads bytes_used from a squashfs superblock (offset 40).
func squashfsBytesUsed(p string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var sb [96]byte
	if _, err := io.ReadFull(f, sb[:]); err != nil {
		return 0, err
	}
	if string(sb[0:4]) != "hsqs" {
		return 0, errors.New("squashfs: no superblock magic")
	}
	return int64(binary.LittleEndian.Uint64(sb[40:48])), nil
}

// populateRoot lays out the root file system in dir.
func populateRoot(ctx context.Context, cfg *Config, o Options, target Target, kernelDir, dir string) error {
	// Finalize packs the workspace's own mode for the root directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	// Mount points gokrazy's init mounts over; the kernel needs them to exist.
	for _, d := range []string{"dev", "proc", "sys", "tmp", "perm", "run", "mnt", "etc/cell", "etc/ssl/certs", "gokrazy", "user"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	// /var is gokrazy's link to /perm/var, which its init creates along with
	// /perm/var/run -> /run: so /var/run is the tmpfs /run, where wireguard-go
	// makes its UAPI socket (/var/run/wireguard/wg0.sock); without the link the
	// cell's tun mode fails with "mkdir /var: read-only file system". The link
	// is relative, and perm/var exists in the workspace (hidden at run time
	// under the /perm mount), because the squashfs writer resolves links on
	// the build host while packing (as for etc/resolv.conf below).
	if err := os.MkdirAll(filepath.Join(dir, "perm/var"), 0o755); err != nil {
		return err
	}
	if err := os.Symlink("perm/var", filepath.Join(dir, "var")); err != nil {
		return err
	}

	type prog struct{ pkg, dst string }
	progs := []prog{{InitPackage, "gokrazy/init"}}
	if orTrue(cfg.Settings.Dhcp) {
		progs = append(progs, prog{dhcpPackage, "gokrazy/dhcp"})
	}
	if orTrue(cfg.Settings.Ntp) {
		progs = append(progs, prog{ntpPackage, "gokrazy/ntp"})
	}
	rel := release.Release{
		Version:      cfg.Version,
		Target:       cfg.Target,
		Hostname:     cfg.Hostname,
		Built:        o.Built,
		PublicKey:    cfg.UpdatePublicKey,
		HealthURL:    cfg.Settings.healthURL(),
		TrialTimeout: cfg.Settings.trialTimeout(),
	}
	for _, p := range progs[1:] {
		rel.Services = append(rel.Services, release.Service{Path: "/" + p.dst})
	}
	seen := map[string]bool{}
	containerd := orTrue(cfg.Settings.Containerd)
	if containerd {
		for _, t := range containerTools {
			seen[t.name] = true
		}
		rel.Services = append(rel.Services, containerdService())
	}
	for _, p := range cfg.Packages {
		name := path.Base(p.Path)
		if seen[name] {
			return fmt.Errorf("config: two packages named %q (or one named as a container tool)", name)
		}
		seen[name] = true
		progs = append(progs, prog{p.Path, "user/" + name})
		rel.Services = append(rel.Services, release.Service{Path: "/user/" + name, Args: p.Args, Env: p.Env})
	}
	for _, p := range progs {
		o.Log.Info("compiling", "package", p.pkg, "goarch", target.GOARCH)
		if err := goBuild(ctx, o, target.GOARCH, p.pkg, filepath.Join(dir, p.dst)); err != nil {
			return err
		}
	}

	if containerd {
		if err := buildContainerTools(ctx, o, target, dir); err != nil {
			return err
		}
		p := filepath.Join(dir, strings.TrimPrefix(ContainerdConfigPath, "/"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		cfgTOML := ContainerdConfig(ContainerdRoot, ContainerdState, ContainerdSocket)
		if err := os.WriteFile(p, []byte(cfgTOML), 0o644); err != nil {
			return err
		}
	}
	if err := placeImages(o.Images, dir); err != nil {
		return err
	}

	relJSON, err := json.MarshalIndent(rel, "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"etc/hostname":                        []byte(cfg.Hostname + "\n"),
		"etc/hosts":                           []byte("127.0.0.1 localhost\n::1 localhost\n"),
		strings.TrimPrefix(release.Path, "/"): append(relJSON, '\n'),
		// The target of the etc/resolv.conf symlink below. The squashfs writer
		// follows symlinks on the build host while packing, so the relative link
		// needs something to point at; at run time gokrazy's tmpfs on /tmp hides
		// this file and its dhcp program writes the real one.
		"tmp/resolv.conf": nil,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	if err := os.Symlink("../tmp/resolv.conf", filepath.Join(dir, "etc/resolv.conf")); err != nil {
		return err
	}
	if err := copyFile(hostCABundle, filepath.Join(dir, "etc/ssl/certs/ca-certificates.crt")); err != nil {
		return fmt.Errorf("CA certificates (Debian's ca-certificates package): %w", err)
	}
	for dst, src := range o.ExtraFiles {
		p := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(dst, "/")))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			return fmt.Errorf("extra file %q lies outside the root", dst)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := copyFile(src, p); err != nil {
			return err
		}
	}
	// Kernel modules: gokrazy's init loads them from /lib/modules/$(uname -r).
	return copyTree(filepath.Join(kernelDir, "lib"), filepath.Join(dir, "lib"))
}

// hostCABundle is Debian's CA bundle; the device trusts what the build host trusts.
var hostCABundle = "/etc/ssl/certs/ca-certificates.crt"

func goBuild(ctx context.Context, o Options, goarch, pkg, dst string) error {
	cmd := exec.CommandContext(ctx, o.GoTool, "build", "-trimpath", "-ldflags=-s -w", "-o", dst, pkg)
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+goarch, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	// Module cache files are read-only; the image's files are not meant to be
	// written either, but the build must be able to clean up its workspace.
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, fi.Mode().Perm()|0o200)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyTree copies regular files and directories; the kernel modules' tree has no
// symlinks that matter (build and source links point at the kernel build host).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			return copyFile(p, target)
		default:
			return nil
		}
	})
}
