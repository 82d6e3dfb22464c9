package main

import (
	"log/slog"
	"net"
	"sync"
)

// MaxConnsPerSource is how many connections to the API's TCP listener one
// source address may hold at once. A connection beyond it is closed as soon as
// it is accepted, before anything is read; the source's others go on. A browser
// opens six per host and cellctl one at a time, so 64 is room for many tabs and
// scripts behind one address (a household's NAT) while one host cannot hold
// every descriptor the daemon has. The front's socket is not counted here: its
// connections all come from Caddy, which limits nothing of the kind, so a flood
// through the front is bounded by the front's own timeouts.
const MaxConnsPerSource = 64

// perSource wraps a listener with the cap of connections per source address.
type perSource struct {
	net.Listener
	max int
	log *slog.Logger

	mu sync.Mutex
	n  map[string]int
}

func limitPerSource(ln net.Listener, max int, log *slog.Logger) net.Listener {
	return &perSource{Listener: ln, max: max, log: log, n: map[string]int{}}
}

func (l *perSource) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := c.RemoteAddr().String()
		if host, _, err := net.SplitHostPort(src); err == nil {
			src = host
		}
		l.mu.Lock()
		if l.n[src] >= l.max {
			l.mu.Unlock()
			c.Close()
			l.log.Debug("connection refused: too many from its source", "source", src, "max", l.max)
			continue
		}
		l.n[src]++
		l.mu.Unlock()
		return &counted{Conn: c, release: func() { l.release(src) }}, nil
	}
}

func (l *perSource) release(src string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[src]--; l.n[src] <= 0 {
		delete(l.n, src)
	}
}

// counted is an accepted connection that frees its place once closed.
type counted struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *counted) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
