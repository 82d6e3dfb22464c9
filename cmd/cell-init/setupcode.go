package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pic-cell/cell/firmware/bootfs"
	"github.com/pic-cell/cell/firmware/release"
)

// maxSetupCode bounds what is read of the boot partition's setup code file: a
// code is a few dozen characters; anything much longer is not one.
const maxSetupCode = 1024

// copySetupCode copies the setup code that `cellctl image build` wrote to the
// boot partition (release.SetupCodeFile, FAT32 at bootPath, which the device
// never mounts) to dst (release.SetupCodePath, on the tmpfs /run), mode 0600,
// where the cell daemon reads it. It reports whether there was a code: a boot
// partition without the file copies nothing, and the daemon then makes a code
// of its own. It runs at every boot: the daemon ignores the code once setup is
// complete.
func copySetupCode(bootPath, dst string) (bool, error) {
	f, err := os.Open(bootPath)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fs, err := bootfs.Open(f)
	if err != nil {
		return false, err
	}
	e, err := fs.Lookup(release.SetupCodeFile)
	if errors.Is(err, bootfs.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if e.Dir || e.Size > maxSetupCode {
		return false, fmt.Errorf("%s on the boot partition is not a setup code (%d bytes)", release.SetupCodeFile, e.Size)
	}
	code, err := fs.ReadFile(release.SetupCodeFile)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return false, err
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, code, 0o600); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, dst)
}
