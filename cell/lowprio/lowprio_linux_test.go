package lowprio

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// niceOfThisThread reads the calling thread's niceness (the raw syscall answers
// 20-nice).
func niceOfThisThread(t *testing.T) int {
	p, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	if err != nil {
		t.Fatal(err)
	}
	return 20 - p
}

func TestLowPriorityThread(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := niceOfThisThread(t)
	var inside int
	ran := false
	Run(func() { ran = true; inside = niceOfThisThread(t) })
	if !ran {
		t.Fatal("fn did not run")
	}
	if inside < Nice && inside != 19 {
		t.Fatalf("niceness inside Run = %d, want at least %d", inside, Nice)
	}
	if after := niceOfThisThread(t); after != before {
		t.Fatalf("the caller's thread niceness changed: %d -> %d", before, after)
	}
}
