package bridge

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsID identifies a network namespace: the device and inode of its nsfs
// file. A file path can be unmounted and mounted again over a new
// namespace; the identity tells the two apart.
type nsID struct{ dev, ino uint64 }

// statNetNS reports whether path is a mounted network namespace file and,
// if it is, its identity. A missing file is not an error.
func statNetNS(path string) (nsID, bool, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nsID{}, false, nil
		}
		return nsID{}, false, fmt.Errorf("bridge: statfs %s: %w", path, err)
	}
	if sfs.Type != unix.NSFS_MAGIC {
		return nsID{}, false, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, false, fmt.Errorf("bridge: stat %s: %w", path, err)
	}
	return nsID{dev: st.Dev, ino: st.Ino}, true, nil
}

// shareDir makes dir a mount point with shared propagation, as `ip netns
// add` does for /run/netns: the namespace files bind-mounted in it then
// show in every mount namespace that shares it (containerd's, a shim's),
// and unmounting one removes it everywhere.
func shareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it onto itself first.
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bridge: bind mount %s: %w", dir, err)
		}
		err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("bridge: make %s shared: %w", dir, err)
	}
	return nil
}

// createNetNS makes path a new, empty network namespace: an empty file
// with the namespace of a throwaway thread bind-mounted over it. The
// namespace lives as long as the mount (or anything holding it open).
func createNetNS(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// No UnlockOSThread: the goroutine ends locked, so the runtime
		// throws the thread (now in the new namespace) away.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind mount: %w", err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return fmt.Errorf("bridge: netns %s: %w", path, err)
	}
	return nil
}

// removeNetNS unmounts and removes a namespace file; the namespace itself
// goes once nothing (a container, a handle) holds it any more. A file that
// is not there or not mounted is not an error.
func removeNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("bridge: unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bridge: %w", err)
	}
	return nil
}
