// Package lowprio runs work that may take long (password hashing, a full
// rebuild of the network) on an OS thread of its own at a lower scheduling
// priority, so that the API's answers take only the CPU it leaves over. It is
// a leaf every capability may use.
package lowprio

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// Nice is the niceness of the work run here. A login flood (or a 10,000-peer
// rebuild) then takes only the CPU that other work leaves over, instead of an
// equal share of it: on a two-core cell, one core hashing at nice 0 doubled the
// p99 of the rest of the API.
const Nice = 10

// Run runs fn on an OS thread of its own at niceness Nice and waits for it.
// The thread is never handed back to the Go scheduler: the goroutine ends still
// locked to it, so the runtime discards the thread with its niceness. The
// thread is in the process's network namespace, as every thread of the daemon.
func Run(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// On failure fn still runs, only at the normal priority.
		_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), Nice)
		fn()
	}()
	<-done
}
