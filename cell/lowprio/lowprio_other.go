//go:build !linux

package lowprio

// Run runs fn; only Linux lowers the priority of a single thread.
func Run(fn func()) { fn() }
