package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pic-cell/cell/firmware/release"
)

// Where the container runtime lives on the device. The cell daemon reaches
// containerd at ContainerdSocket (config.json's -containerd) and finds the
// first-party OCI archives in ImagesDir (-images).
const (
	ContainerdSocket     = "/run/containerd/containerd.sock"
	ContainerdConfigPath = "/etc/containerd/config.toml"
	// ContainerdRoot holds images, snapshots and metadata: on /perm, so they
	// survive reboots and updates; cmd/cell-init creates ContainerdPerm.
	ContainerdPerm = "/perm/containerd"
	ContainerdRoot = ContainerdPerm + "/root"
	// ContainerdState is the runtime state (sockets, shims' bundles): the
	// tmpfs /run, gone at each boot as containerd expects.
	ContainerdState = "/run/containerd"
	ImagesDir       = "/usr/share/pic/images"
)

// toolDir is where the container tools are in the root. gokrazy's supervisor
// sets PATH=/user:/gokrazy for every program it starts, after (and so over)
// the service's own environment: containerd finds its shim, and the shim runc,
// only on that PATH, so the three go where gokrazy's programs go. Only the
// programs of release.json are started; runc and the shim there are not.
const toolDir = "user"

// containerTool is a program of the container runtime, compiled from the module
// cache at the version go.mod pins (deps.go keeps them there).
type containerTool struct {
	pkg  string
	name string // its file name in toolDir
	tags string
	cgo  bool
}

// containerTools are containerd, its runc shim and runc, with the build tags
// of their Makefiles' static builds. containerd leaves out the snapshotters
// that need cgo or are not on the device (btrfs, devmapper, zfs), the CRI
// plugin (the cell is no Kubernetes node; the config disables it too) and
// OpenTelemetry. runc is the one cgo program: its nsenter is C, and seccomp
// filters come from libseccomp, linked statically from Debian's libseccomp-dev
// for the target's architecture.
var containerTools = []containerTool{
	{pkg: "github.com/containerd/containerd/v2/cmd/containerd", name: "containerd",
		tags: "urfave_cli_no_docs osusergo netgo no_btrfs no_devmapper no_zfs no_cri no_tracing"},
	{pkg: "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2", name: "containerd-shim-runc-v2",
		tags: "urfave_cli_no_docs osusergo netgo no_grpc"},
	{pkg: "github.com/opencontainers/runc", name: "runc",
		tags: "seccomp urfave_cli_no_docs osusergo netgo", cgo: true},
}

// containerdService is how the init runs containerd (release.json).
func containerdService() release.Service {
	return release.Service{Path: "/" + toolDir + "/containerd", Args: []string{"--config", ContainerdConfigPath}}
}

// ContainerdConfig is containerd's config.toml for the given root, state
// directory and socket (on the device ContainerdRoot, ContainerdState,
// ContainerdSocket; tests run it elsewhere). Version 2 is containerd 1.x's
// format, which containerd 2 still reads (migrating it in memory).
func ContainerdConfig(root, state, socket string) string {
	return fmt.Sprintf(`# containerd on the cell's firmware image (written by firmware/image).
version = 2
root = %q
state = %q
# No Kubernetes (CRI) and no NRI: the cell drives containerd over its own socket.
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"]

[grpc]
  address = %q

# The opt plugin's default, /opt/containerd, is on the read-only root.
[plugins."io.containerd.internal.v1.opt"]
  path = %q

# overlayfs is the default snapshotter on Linux (the client's and the unpacker's);
# the kernel has it built in (CONFIG_OVERLAY_FS=y), and /perm is ext4.
`, root, state, socket, filepath.Join(filepath.Dir(root), "opt"))
}

// buildContainerTools compiles containerTools for target into the tool cache
// and copies them into the root's toolDir. go build's own up-to-date check
// (the build ID of the binary already at -o) makes a rebuild with nothing
// changed skip the link, which is most of the cost (about 5 s of 6) once
// GOCACHE is warm; the cache is per GOARCH, and locked so that image builds
// in parallel (the tests of several packages) do not write the same file.
func buildContainerTools(ctx context.Context, o Options, target Target, root string) error {
	cache := filepath.Join(o.ToolCache, target.GOARCH)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return err
	}
	unlock, err := lockDir(cache)
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.MkdirAll(filepath.Join(root, toolDir), 0o755); err != nil {
		return err
	}
	for _, t := range containerTools {
		out := filepath.Join(cache, t.name)
		o.Log.Info("compiling", "package", t.pkg, "goarch", target.GOARCH, "cgo", t.cgo)
		if err := goBuildTool(ctx, o, target, t, out); err != nil {
			return err
		}
		if err := copyFile(out, filepath.Join(root, toolDir, t.name)); err != nil {
			return err
		}
	}
	return nil
}

func goBuildTool(ctx context.Context, o Options, target Target, t containerTool, out string) error {
	ldflags := "-s -w"
	env := append(os.Environ(), "GOOS=linux", "GOARCH="+target.GOARCH)
	if t.cgo {
		// Static, so that the root needs no C library; pkg-config looks only
		// in the target's multiarch directory, so a cross build never links
		// the host's libseccomp.
		ldflags += " -extldflags -static"
		env = append(env, "CGO_ENABLED=1", "CC="+target.CC,
			"PKG_CONFIG_LIBDIR=/usr/lib/"+target.Triplet+"/pkgconfig")
	} else {
		env = append(env, "CGO_ENABLED=0")
	}
	cmd := exec.CommandContext(ctx, o.GoTool, "build", "-trimpath", "-tags", t.tags, "-ldflags", ldflags, "-o", out, t.pkg)
	cmd.Dir = o.Dir
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s for %s: %v\n%s", t.pkg, target.GOARCH, err, b)
	}
	return nil
}

// lockDir takes an exclusive flock on dir/.lock until the returned function runs.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// checkContainerHost reports what the host lacks to build runc for target: the
// target's C compiler and its static libseccomp (Debian: gcc or
// gcc-aarch64-linux-gnu, libseccomp-dev or libseccomp-dev:arm64).
func checkContainerHost(target Target) error {
	if _, err := exec.LookPath(target.CC); err != nil {
		pkg := "gcc"
		if target.GOARCH == "arm64" {
			pkg = "gcc-aarch64-linux-gnu and libc6-dev-arm64-cross"
		}
		return fmt.Errorf("C compiler %s for runc (Debian package %s): %w", target.CC, pkg, err)
	}
	lib := "/usr/lib/" + target.Triplet + "/libseccomp.a"
	if _, err := os.Stat(lib); err != nil {
		pkg := "libseccomp-dev"
		if target.GOARCH != "amd64" {
			pkg = "libseccomp-dev:" + target.GOARCH + " (after dpkg --add-architecture " + target.GOARCH + ")"
		}
		return fmt.Errorf("static libseccomp for runc (Debian package %s): %w", pkg, err)
	}
	return nil
}

// placeImages copies the first-party OCI archives into ImagesDir of the root.
func placeImages(images []string, root string) error {
	if len(images) == 0 {
		return nil
	}
	dir := filepath.Join(root, strings.TrimPrefix(ImagesDir, "/"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	seen := map[string]string{}
	for _, src := range images {
		name := filepath.Base(src)
		if prev, ok := seen[name]; ok {
			return fmt.Errorf("images %s and %s have the same name %q in %s", prev, src, name, ImagesDir)
		}
		seen[name] = src
		fi, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("image archive: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("image archive %s is not a regular file", src)
		}
		dst := filepath.Join(dir, name)
		if err := copyFile(src, dst); err != nil {
			return err
		}
		// Archives are data, whatever mode they had on the build host.
		if err := os.Chmod(dst, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ArchivesIn lists the OCI archives (*.oci.tar) in dir, sorted, for
// Options.Images: what `cellctl images build -o dir` wrote. A missing dir is
// no archives, not an error: the image then installs services only from a
// registry.
func ArchivesIn(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".oci.tar") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}
