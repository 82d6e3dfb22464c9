package userspace

import (
	"context"
	"net"
)

// SetDial replaces how s opens flows' host sockets (before any flow).
func SetDial(s *Stack, dial func(ctx context.Context, network, address string) (net.Conn, error)) {
	s.dial = dial
}

// SetHostPing forces echo requests beyond the cell to be answered locally
// (false) or by a host ping (true).
func SetHostPing(s *Stack, on bool) { s.hostPing.Store(on) }
