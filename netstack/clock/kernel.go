package clock

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Kernel is the kernel clock's state read with adjtimex(2) (modes 0: reads,
// never changes).
type Kernel struct {
	Synchronised bool // STA_UNSYNC clear and the kernel's state is not TIME_ERROR
	Offset       time.Duration
	MaxError     time.Duration
	EstError     time.Duration
	Status       int // the raw STA_* flags
}

// ReadKernel reads the kernel clock's state.
func ReadKernel() (Kernel, error) {
	var tx unix.Timex // Modes 0: read only
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return Kernel{}, fmt.Errorf("reading the kernel clock's state: %v", err)
	}
	return kernelFrom(&tx, state), nil
}

func kernelFrom(tx *unix.Timex, state int) Kernel {
	unit := time.Microsecond
	if tx.Status&unix.STA_NANO != 0 {
		unit = time.Nanosecond
	}
	return Kernel{
		Synchronised: tx.Status&unix.STA_UNSYNC == 0 && state != unix.TIME_ERROR,
		Offset:       time.Duration(tx.Offset) * unit,
		MaxError:     time.Duration(tx.Maxerror) * time.Microsecond,
		EstError:     time.Duration(tx.Esterror) * time.Microsecond,
		Status:       int(tx.Status),
	}
}
