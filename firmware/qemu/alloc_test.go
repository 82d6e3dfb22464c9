package qemu_test

import (
	"os"
	"syscall"
)

// allocated is the space a (sparse) file really occupies.
func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
