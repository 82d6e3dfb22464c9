package main

import (
	"log/slog"
	"time"

	"golang.org/x/sys/unix"
)

// A board without a battery-backed clock (the Raspberry Pi 4) starts in
// 1970 and keeps that time until gokrazy's ntp client first reaches a server
// (on a first boot it has no time saved on /perm either). Anything the cell
// makes meanwhile carries that date: its certificate authority, made at the
// first start, would be valid from 1970 to 1980, and so dead for good once the
// clock is right. So the init moves such a clock forward to the firmware's
// build time (release.json's "built"), before any program starts, the way
// systemd moves it to its own build time: never right, but never earlier
// than the truth. NTP then sets the real time.
func clockFloor(built, now time.Time, set func(time.Time) error, log *slog.Logger) {
	if built.IsZero() || !now.Before(built) {
		return
	}
	if err := set(built); err != nil {
		log.Error("the clock is earlier than this firmware's build time and could not be moved forward", "clock", now, "built", built, "err", err)
		return
	}
	log.Warn("the clock was earlier than this firmware's build time: moved forward to it until NTP answers", "was", now, "now", built)
}

// setClock sets the system clock.
func setClock(t time.Time) error {
	tv := unix.NsecToTimeval(t.UnixNano())
	return unix.Settimeofday(&tv)
}
