package main

import (
	"os"
	"testing"
)

// TestMain keeps the daemons these tests start on the host's own network
// from asking NTP servers for the time: nothing a test runs may leave the
// machine (the clock's checks are tested in netstack/clock and, through the
// tunnel, in netstack/system).
func TestMain(m *testing.M) {
	os.Setenv("CELL_TIME_CHECK", "false")
	os.Exit(m.Run())
}
