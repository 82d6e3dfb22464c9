//go:build !linux

package cell

// lowPriority runs fn; only Linux lowers the priority of a single thread.
func lowPriority(fn func()) { fn() }
