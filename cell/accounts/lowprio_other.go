//go:build !linux

package accounts

// lowPriority runs fn; only Linux lowers the priority of a single thread.
func lowPriority(fn func()) { fn() }
