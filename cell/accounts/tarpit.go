package accounts

import (
	"errors"
	"sync"
	"time"

	"github.com/pic-cell/cell/cell/fault"
)

// The tarpit. A refusal costs the cell little, but a sender that answers every
// refusal with the next attempt at once still costs it a request, a JSON body and
// an audit entry each time: 200 connections doing that made 3,000 refusals a
// second on a two-core cell, and everyone else's requests waited behind them. So
// once a source has been refused more than tarpitAfter times lately (a count that
// halves every tarpitHalfLife), each further refusal (429) is answered after
// tarpitDelay: the flood then costs its sender time instead of the cell CPU. A
// person refused now and then is never kept waiting. Nothing is held while
// waiting: no place in the throttle or the hasher.
const (
	tarpitAfter      = 10
	tarpitDelay      = time.Second
	tarpitHalfLife   = 10 * time.Second
	maxTarpitSources = 4096
)

type tarpit struct {
	sleep func(time.Duration)
	mu    sync.Mutex
	n     *counts
}

func newTarpit(sleep func(time.Duration)) *tarpit {
	return &tarpit{sleep: sleep, n: newCounts(tarpitHalfLife, maxTarpitSources)}
}

// tarpit counts a refusal (err is ErrTooMany) of source and holds it back when the
// source has had too many lately.
func (c *Accounts) tarpit(source string, err error) {
	if !errors.Is(err, fault.ErrTooMany) {
		return
	}
	t := c.refused
	t.mu.Lock()
	// The tarpit's own clock: a refusal waits in real time whatever c.now says.
	n := t.n.add(source, time.Now(), nil)
	t.mu.Unlock()
	if n > tarpitAfter {
		t.sleep(tarpitDelay)
	}
}
