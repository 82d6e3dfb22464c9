package server

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// authCache remembers successful password verifications.
//
// Why: a WebDAV client sends Basic credentials with every request, and a
// single folder sync is hundreds of requests. argon2id at 19 MiB and two
// passes costs tens of milliseconds of CPU and 19 MiB of memory each; doing it
// per request would make the service crawl on a Pi and let a few parallel
// clients exhaust its memory. The cache is keyed by
// HMAC-SHA256(per-process random key, username NUL password), so the memory
// holds no password nor anything an attacker could test guesses against
// offline without the key, which never leaves the process. An entry is valid
// until its account changes (PUT with a new password, DELETE): the admin calls
// forget, which drops every entry of that username.
type authCache struct {
	key []byte
	mu  sync.Mutex
	m   map[[sha256.Size]byte]string // mac → username
}

// maxCached bounds the cache; when full it is simply emptied (a household has
// a handful of accounts, a few devices each).
const maxCached = 1024

func newAuthCache() *authCache {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic("crypto/rand: " + err.Error()) // never fails on Linux
	}
	return &authCache{key: key, m: map[[sha256.Size]byte]string{}}
}

func (c *authCache) mac(username, password string) [sha256.Size]byte {
	h := hmac.New(sha256.New, c.key)
	h.Write([]byte(username))
	h.Write([]byte{0})
	h.Write([]byte(password))
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// ok reports whether username/password verified before. The lookup is by a
// keyed MAC, which an attacker cannot steer, so the map lookup leaks nothing
// useful through timing.
func (c *authCache) ok(username, password string) bool {
	k := c.mac(username, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	u, found := c.m[k]
	return found && u == username
}

func (c *authCache) add(username, password string) {
	k := c.mac(username, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCached {
		clear(c.m)
	}
	c.m[k] = username
}

func (c *authCache) forget(username string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, u := range c.m {
		if u == username {
			delete(c.m, k)
		}
	}
}

// throttle counts failed logins per username and client address, in memory:
// after maxFailures within failureWindow, that pair gets 429 (without any
// password check, so guessing also costs no argon2) until the oldest failure
// is failureWindow old.
type throttle struct {
	mu  sync.Mutex
	now func() time.Time
	m   map[string][]time.Time
}

const (
	maxFailures   = 10
	failureWindow = time.Minute
	maxThrottled  = 10000 // keys kept before old ones are pruned
)

func newThrottle(now func() time.Time) *throttle {
	return &throttle{now: now, m: map[string][]time.Time{}}
}

func (t *throttle) recent(key string, now time.Time) []time.Time {
	fs := t.m[key]
	i := 0
	for i < len(fs) && now.Sub(fs[i]) >= failureWindow {
		i++
	}
	fs = fs[i:]
	if len(fs) == 0 {
		delete(t.m, key)
		return nil
	}
	t.m[key] = fs
	return fs
}

func (t *throttle) blocked(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.recent(key, t.now())) >= maxFailures
}

func (t *throttle) fail(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.m) >= maxThrottled {
		for k := range t.m {
			t.recent(k, now)
		}
	}
	fs := t.recent(key, now)
	if len(fs) >= maxFailures {
		return
	}
	t.m[key] = append(fs, now)
}

// clientIP is the address failures are counted against. Behind the cell's
// front (Caddy), RemoteAddr is the front; Caddy appends the client's address
// to X-Forwarded-For, so its last entry is the client as the front saw it.
// The container listens only on the cell's service network, which only the
// front reaches, so the header is not the client's to forge.
func clientIP(r *http.Request) string {
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		last := xff[len(xff)-1]
		if i := strings.LastIndexByte(last, ','); i >= 0 {
			last = last[i+1:]
		}
		if ip := net.ParseIP(strings.TrimSpace(last)); ip != nil {
			return ip.String()
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
