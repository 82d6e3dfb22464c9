package dns

import (
	"container/list"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// Cache bounds (the package doc gives the reasons).
const (
	DefaultCacheSize = 10000              // entries
	cacheBytesPer    = 1024               // the byte budget is CacheSize times this
	maxEntryBytes    = 4096               // larger answers are passed on, not kept
	maxPositiveTTL   = 3600 * time.Second // a cached answer lives at most an hour
	maxNegativeTTL   = 300 * time.Second  // and a "no such name" five minutes
)

// entry is one forwarded answer in wire form, normalised: id 0, the
// question in lowercase, no OPT record. Serving it copies the bytes and
// patches the id, flags, the question's case and the TTLs; nothing is
// parsed on a hit. It is never changed after it is made.
type entry struct {
	key     string
	wire    []byte
	qend    int      // end of the question: a truncated answer is wire[:qend]
	ttlOffs []uint16 // offsets of the TTL fields (OPT excluded)
	ttls    []uint32 // their values when stored
	stored  time.Time
	expires time.Time
	rcode   int
}

// newEntry packs r as the answer to (name, qtype); ttl is how long it may
// be kept (0: not at all).
func newEntry(key, name string, qtype uint16, r *mdns.Msg, now time.Time) (*entry, error) {
	m := mdns.Msg{MsgHdr: mdns.MsgHdr{Response: true, RecursionAvailable: true, Rcode: r.Rcode & 0xf}, Compress: true}
	m.Question = []mdns.Question{{Name: name, Qtype: qtype, Qclass: mdns.ClassINET}}
	m.Answer, m.Ns = r.Answer, r.Ns
	for _, rr := range r.Extra {
		switch rr.Header().Rrtype {
		case mdns.TypeOPT, mdns.TypeTSIG, mdns.TypeSIG:
		default:
			m.Extra = append(m.Extra, rr)
		}
	}
	wire, err := m.Pack()
	if err != nil {
		return nil, err
	}
	e := &entry{key: key, wire: wire, stored: now, rcode: m.Rcode}
	if err := e.scan(); err != nil {
		return nil, err
	}
	e.expires = now.Add(cacheTTL(&m))
	return e, nil
}

var errShort = errors.New("dns: short message")

// scan finds the end of the question and every TTL field of e.wire.
func (e *entry) scan() error {
	b := e.wire
	if len(b) < 12 {
		return errShort
	}
	qd := int(binary.BigEndian.Uint16(b[4:]))
	rrs := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:])) + int(binary.BigEndian.Uint16(b[10:]))
	off := 12
	for range qd {
		var err error
		if off, err = skipName(b, off); err != nil {
			return err
		}
		off += 4
	}
	e.qend = off
	for range rrs {
		var err error
		if off, err = skipName(b, off); err != nil {
			return err
		}
		if off+10 > len(b) {
			return errShort
		}
		if binary.BigEndian.Uint16(b[off:]) != mdns.TypeOPT {
			e.ttlOffs = append(e.ttlOffs, uint16(off+4))
			e.ttls = append(e.ttls, binary.BigEndian.Uint32(b[off+4:]))
		}
		off += 10 + int(binary.BigEndian.Uint16(b[off+8:]))
	}
	if off > len(b) {
		return errShort
	}
	return nil
}

// skipName returns the offset after the (possibly compressed) name at off.
func skipName(b []byte, off int) (int, error) {
	for {
		if off >= len(b) {
			return 0, errShort
		}
		switch l := int(b[off]); {
		case l == 0:
			return off + 1, nil
		case l&0xc0 == 0xc0:
			return off + 2, nil
		default:
			off += 1 + l
		}
	}
}

// cacheTTL is how long an answer may be kept: the smallest TTL of its
// answer section; for "no such name" and "no such type" the SOA's, as RFC
// 2308 says (min of the SOA's TTL and its minimum); capped either way.
// Failures, and negative answers without an SOA, are not kept.
func cacheTTL(m *mdns.Msg) time.Duration {
	if m.Rcode != mdns.RcodeSuccess && m.Rcode != mdns.RcodeNameError {
		return 0
	}
	if m.Rcode == mdns.RcodeSuccess && len(m.Answer) > 0 {
		ttl := uint32(1<<32 - 1)
		for _, rr := range m.Answer {
			ttl = min(ttl, rr.Header().Ttl)
		}
		return min(time.Duration(ttl)*time.Second, maxPositiveTTL)
	}
	for _, rr := range m.Ns {
		if soa, ok := rr.(*mdns.SOA); ok {
			return min(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second, maxNegativeTTL)
		}
	}
	return 0
}

// cache is a bounded LRU of entries, by count and by bytes.
type cache struct {
	mu       sync.Mutex
	max      int // entries; 0: the cache is off
	maxBytes int
	bytes    int
	ll       *list.List // front: most recently used
	m        map[string]*list.Element
}

func newCache(size int) *cache {
	return &cache{max: size, maxBytes: size * cacheBytesPer, ll: list.New(), m: map[string]*list.Element{}}
}

// get returns the entry for key and its age in whole seconds.
func (c *cache) get(key []byte, now time.Time) (*entry, uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[string(key)]
	if !ok {
		return nil, 0, false
	}
	e := el.Value.(*entry)
	if !now.Before(e.expires) {
		c.removeLocked(el)
		return nil, 0, false
	}
	c.ll.MoveToFront(el)
	return e, uint32(now.Sub(e.stored) / time.Second), true
}

func (c *cache) put(e *entry) {
	if c.max <= 0 || len(e.wire) > maxEntryBytes || !e.expires.After(e.stored) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[e.key]; ok {
		c.removeLocked(el)
	}
	c.m[e.key] = c.ll.PushFront(e)
	c.bytes += len(e.wire)
	for c.ll.Len() > c.max || c.bytes > c.maxBytes {
		c.removeLocked(c.ll.Back())
	}
}

// removeLocked drops el; c.mu must be held.
func (c *cache) removeLocked(el *list.Element) {
	e := c.ll.Remove(el).(*entry)
	delete(c.m, e.key)
	c.bytes -= len(e.wire)
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// cacheKey appends the key of a question to b: the lowercase name, the
// type, and the DO and CD bits (they change what an upstream sends).
func cacheKey(b []byte, name string, qtype uint16, do, cd bool) []byte {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	var flags byte
	if do {
		flags |= 1
	}
	if cd {
		flags |= 2
	}
	return append(b, 0, byte(qtype>>8), byte(qtype), flags)
}
