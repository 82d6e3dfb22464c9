package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pic-cell/cell/firmware/release"
)

// Where the image puts containerd (firmware/image's containerd.go, which the
// init may not import: it would link the image builder into PID 1).
const (
	containerdPath   = "/user/containerd"
	containerdPerm   = "/perm/containerd"
	containerdSocket = "/run/containerd/containerd.sock"
	cgroupRoot       = "/sys/fs/cgroup"
)

// cgroupFS is the kernel's side of the cgroup v2 check: a small interface so
// that the test can hand in a fake.
type cgroupFS interface {
	// IsCgroup2 reports whether dir is a mounted cgroup v2 hierarchy.
	IsCgroup2(dir string) (bool, error)
	MountCgroup2(dir string) error
}

type kernelCgroups struct{}

func (kernelCgroups) IsCgroup2(dir string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false, err
	}
	return st.Type == unix.CGROUP2_SUPER_MAGIC, nil
}

func (kernelCgroups) MountCgroup2(dir string) error {
	return unix.Mount("cgroup2", dir, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}

// runsContainerd reports whether the release supervises containerd.
func runsContainerd(rel *release.Release) bool {
	for _, s := range rel.Services {
		if s.Path == containerdPath {
			return true
		}
	}
	return false
}

// prepareContainerd makes what containerd and runc need before they start:
// containerd's directory on /perm (its root, with images and snapshots, is
// below it; 0711 as containerd makes its own), and the cgroup v2 hierarchy at
// /sys/fs/cgroup, which runc puts each container in. gokrazy.Boot mounts it;
// should that fail (it only logs), the mount is tried once more here, and an
// error says that containers cannot run.
func prepareContainerd(perm, cgroupDir string, cg cgroupFS) error {
	if err := os.MkdirAll(perm, 0o711); err != nil {
		return fmt.Errorf("containerd's directory: %w", err)
	}
	ok, err := cg.IsCgroup2(cgroupDir)
	if err == nil && ok {
		return nil
	}
	if merr := cg.MountCgroup2(cgroupDir); merr != nil {
		return fmt.Errorf("no cgroup v2 at %s (%v), and mounting it failed: %w; containers cannot run", cgroupDir, err, merr)
	}
	if ok, err := cg.IsCgroup2(cgroupDir); err != nil || !ok {
		return fmt.Errorf("mounted cgroup2 at %s, but it is not one (%v); containers cannot run", cgroupDir, err)
	}
	return nil
}

// errNoHTTP2 is an answer on containerd's socket that is not an HTTP/2 server's.
var errNoHTTP2 = errors.New("the socket's first answer is not an HTTP/2 SETTINGS frame")

// http2Preface is what an HTTP/2 client sends first: the connection preface,
// then an empty SETTINGS frame (length 0, type 4, no flags, stream 0).
var http2Preface = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

// probeGRPC dials a gRPC server's Unix socket and reads its first frame: a
// gRPC server (HTTP/2) answers a client's preface with its SETTINGS frame.
// That is containerd's API serving, not only a socket file left behind, at
// the cost of a few bytes instead of a gRPC client linked into PID 1.
func probeGRPC(ctx context.Context, socket string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write(http2Preface); err != nil {
		return err
	}
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	if hdr[3] != 4 || hdr[4]&1 != 0 { // type SETTINGS, not an ACK
		return fmt.Errorf("%w (frame type %d)", errNoHTTP2, hdr[3])
	}
	return nil
}

// watchContainerd writes to the console when containerd's API first answers,
// and its resident memory a while later, idle: what an operator (and the QEMU
// test) reads to know the container runtime came up. It gives up after limit.
func watchContainerd(ctx context.Context, logger *slog.Logger, socket, proc string, limit, settle time.Duration) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		last = probeGRPC(pctx, socket)
		pcancel()
		if last == nil {
			break
		}
		select {
		case <-ctx.Done():
			logger.Error("containerd does not answer", "socket", socket, "within", limit, "err", last)
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
	logger.Info("containerd answers", "socket", socket, "after", time.Since(start).Round(time.Millisecond))
	select {
	case <-ctx.Done():
		return
	case <-time.After(settle):
	}
	if kib, err := rssOf(proc, containerdPath); err != nil {
		logger.Warn("containerd's memory", "err", err)
	} else {
		logger.Info("containerd idle", "rss_kib", kib)
	}
}

// rssOf finds the process running exe in the proc file system and returns its
// resident set in KiB.
func rssOf(proc, exe string) (int, error) {
	ents, err := os.ReadDir(proc)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if target, err := os.Readlink(filepath.Join(proc, e.Name(), "exe")); err != nil || target != exe {
			continue
		}
		b, err := os.ReadFile(filepath.Join(proc, e.Name(), "status"))
		if err != nil {
			return 0, err
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
				return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(string(v)), " kB"))
			}
		}
		return 0, fmt.Errorf("%s: no VmRSS", filepath.Join(proc, e.Name(), "status"))
	}
	return 0, fmt.Errorf("no process runs %s", exe)
}

// neededControllers are the cgroup v2 controllers that the services' limits
// use (images/runtime: memory_bytes, cpu_millis, pids). A kernel without
// one still runs containers; runc would refuse one that sets that limit, so
// images/runtime leaves such limits out, unenforced.
var neededControllers = []string{"cpu", "memory", "pids"}

// cgroupControllers reads the controllers the kernel offers at the cgroup v2
// root dir, and which of neededControllers are not among them.
func cgroupControllers(dir string) (have, missing []string, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, nil, err
	}
	have = strings.Fields(string(b))
	for _, n := range neededControllers {
		if !slices.Contains(have, n) {
			missing = append(missing, n)
		}
	}
	return have, missing, nil
}
