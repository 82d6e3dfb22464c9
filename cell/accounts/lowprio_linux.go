package accounts

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// hashNice is the scheduling niceness of password hashing. A login flood then takes
// only the CPU that other work leaves over, instead of an equal share of it: on a
// two-core cell, one core hashing at nice 0 doubled the p99 of the rest of the API.
const hashNice = 10

// lowPriority runs fn on an OS thread of its own at a lower scheduling priority and
// waits for it. The thread is never handed back to the Go scheduler: the goroutine
// ends still locked to it, so the runtime discards the thread with its niceness.
func lowPriority(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// On failure the hash still runs, only at the normal priority.
		_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), hashNice)
		fn()
	}()
	<-done
}
