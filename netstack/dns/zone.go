package dns

import (
	"hash/maphash"
	"slices"
	"strings"

	mdns "github.com/miekg/dns"
)

// The zone index is a persistent hash trie of owner names: a change copies
// the path from the root to one leaf (a few nodes of 16 pointers), and the
// new root is published with one atomic store. Readers never lock and never
// see a half-made change; a change costs the same at 100 and at 10,000
// peers (the tree is three levels deep instead of two).
//
// Nodes carry the id of the edit that made them: within one edit (a whole
// Set) nodes of that edit are changed in place, so building 10,000 records
// copies nothing.

var seed = maphash.MakeSeed()

func hashName(s string) uint64 { return maphash.String(seed, s) }

const (
	fanBits  = 4
	fan      = 1 << fanBits
	leafSize = 8 // owners in a leaf before it splits
)

type tnode struct {
	edit uint64
	leaf bool
	kids [fan]*tnode
	own  []*owner // when leaf
}

func (n *tnode) mut(edit uint64) *tnode {
	if n.edit == edit {
		return n
	}
	c := *n
	c.edit = edit
	c.own = slices.Clone(n.own)
	return &c
}

func (n *tnode) get(h uint64, name string) *owner {
	for shift := uint(0); n != nil; shift += fanBits {
		if n.leaf {
			for _, o := range n.own {
				if o.name == name {
					return o
				}
			}
			return nil
		}
		n = n.kids[(h>>shift)%fan]
	}
	return nil
}

// put stores o (replacing the owner of the same name) and returns the new
// node and whether the name is new.
func (n *tnode) put(edit uint64, shift uint, o *owner) (*tnode, bool) {
	if n == nil {
		return &tnode{edit: edit, leaf: true, own: []*owner{o}}, true
	}
	if n.leaf {
		for i, x := range n.own {
			if x.name == o.name {
				c := n.mut(edit)
				c.own[i] = o
				return c, false
			}
		}
		if len(n.own) < leafSize || shift >= 64 {
			c := n.mut(edit)
			c.own = append(c.own, o)
			return c, true
		}
		in := &tnode{edit: edit}
		for _, x := range n.own {
			i := (x.hash >> shift) % fan
			in.kids[i], _ = in.kids[i].put(edit, shift+fanBits, x)
		}
		return in.put(edit, shift, o)
	}
	i := (o.hash >> shift) % fan
	kid, added := n.kids[i].put(edit, shift+fanBits, o)
	c := n.mut(edit)
	c.kids[i] = kid
	return c, added
}

// del removes name; it returns the new node (nil when empty).
func (n *tnode) del(edit uint64, shift uint, h uint64, name string) *tnode {
	if n == nil {
		return nil
	}
	if n.leaf {
		i := slices.IndexFunc(n.own, func(o *owner) bool { return o.name == name })
		if i < 0 {
			return n
		}
		if len(n.own) == 1 {
			return nil
		}
		c := n.mut(edit)
		c.own = slices.Delete(c.own, i, i+1)
		return c
	}
	i := (h >> shift) % fan
	kid := n.kids[i].del(edit, shift+fanBits, h, name)
	if kid == n.kids[i] {
		return n
	}
	c := n.mut(edit)
	c.kids[i] = kid
	if kid == nil && c.kids == [fan]*tnode{} {
		return nil
	}
	return c
}

// item is one record at an owner: the Record it came from (the key that
// removes it) and its RR.
type item struct {
	key     Record
	rr      mdns.RR
	derived bool // a PTR made from an A or AAAA record
}

// owner is every record at one name. It is immutable once published.
type owner struct {
	edit  uint64
	name  string
	hash  uint64
	items []item
	kids  int // owners below it (an empty non-terminal has items == nil, kids > 0)
	// sets are the answers by type, duplicates removed; a PTR set is the
	// explicit PTR records if there are any, else the derived ones.
	sets map[uint16][]mdns.RR
}

func (o *owner) mut(edit uint64) *owner {
	if o.edit == edit {
		return o
	}
	c := *o
	c.edit = edit
	c.items = slices.Clone(o.items)
	return &c
}

// index builds the answer sets from items; apex is the zone's domain, whose
// own derived PTR wins over the other names at the same address.
func (o *owner) index(apex string) {
	o.sets = make(map[uint16][]mdns.RR, 2)
	explicitPTR, apexPTR := false, false
	for _, it := range o.items {
		if it.rr.Header().Rrtype == mdns.TypePTR && !it.derived {
			explicitPTR = true
		}
		if it.derived && it.rr.(*mdns.PTR).Ptr == apex {
			apexPTR = true
		}
	}
	for _, it := range o.items {
		t := it.rr.Header().Rrtype
		if t == mdns.TypePTR && (explicitPTR && it.derived || apexPTR && it.derived && it.rr.(*mdns.PTR).Ptr != apex) {
			continue
		}
		if i := slices.IndexFunc(o.sets[t], func(x mdns.RR) bool { return mdns.IsDuplicate(x, it.rr) }); i >= 0 {
			if it.rr.Header().Ttl < o.sets[t][i].Header().Ttl {
				o.sets[t][i] = it.rr // the same data twice: the shorter TTL
			}
			continue
		}
		o.sets[t] = append(o.sets[t], it.rr)
	}
	for t, s := range o.sets {
		if t == mdns.TypePTR {
			slices.SortFunc(s, func(a, b mdns.RR) int { return strings.Compare(a.(*mdns.PTR).Ptr, b.(*mdns.PTR).Ptr) })
		}
		o.sets[t] = sameTTL(slices.Clip(s))
	}
}

// sameTTL gives every record of a set the set's smallest TTL (RFC 2181
// 5.2: one TTL per set), whatever order the records came in.
func sameTTL(set []mdns.RR) []mdns.RR {
	ttl := set[0].Header().Ttl
	for _, rr := range set {
		ttl = min(ttl, rr.Header().Ttl)
	}
	for i, rr := range set {
		if rr.Header().Ttl != ttl {
			c := mdns.Copy(rr)
			c.Header().Ttl = ttl
			set[i] = c
		}
	}
	return set
}

// zone is one published version of the zone. It is never changed after
// the server stores it; a change makes a new one that shares all but a
// path of the trie.
type zone struct {
	domain  string // canonical; "" when there is none
	serial  uint32
	root    *tnode
	names   int // owners, empty non-terminals included
	records int // Records (not derived PTRs)
	soa     *mdns.SOA
	ns      *mdns.NS
}

func (z *zone) lookup(name string) *owner {
	if z == nil {
		return nil
	}
	return z.root.get(hashName(name), name)
}

// inZone reports whether name (lowercase FQDN) is the domain or below it.
func (z *zone) inZone(name string) bool {
	return z.domain != "" && (name == z.domain || strings.HasSuffix(name, z.domain) && name[len(name)-len(z.domain)-1] == '.')
}

// SOA values: the negative-caching time (minimum) is short so that a new
// peer's name works a minute after a client asked for it too early.
const (
	soaTTL     = 60
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 86400
	soaMinimum = 60
)

func (z *zone) apexRecords() {
	if z.domain == "" {
		z.soa, z.ns = nil, nil
		return
	}
	h := mdns.RR_Header{Name: z.domain, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: soaTTL}
	z.soa = &mdns.SOA{Hdr: h, Ns: z.domain, Mbox: "hostmaster." + z.domain, Serial: z.serial,
		Refresh: soaRefresh, Retry: soaRetry, Expire: soaExpire, Minttl: soaMinimum}
	h.Rrtype, h.Ttl = mdns.TypeNS, DefaultTTL
	// The cell is the zone's only server; the apex's own A/AAAA (the cell's
	// tunnel addresses) is where it is found.
	z.ns = &mdns.NS{Hdr: h, Ns: z.domain}
}

// editor changes a zone copy-on-write. Its zone is private until published.
type editor struct {
	z      zone
	edit   uint64
	edited bool // a record went in or out
}

func (e *editor) owner(name string) *owner {
	return e.z.root.get(hashName(name), name)
}

func (e *editor) store(o *owner) {
	var added bool
	e.z.root, added = e.z.root.put(e.edit, 0, o)
	if added {
		e.z.names++
	}
}

func (e *editor) drop(name string) {
	e.z.root = e.z.root.del(e.edit, 0, hashName(name), name)
	e.z.names--
}

// add puts one item at name, creating the owner (and the empty
// non-terminals between it and the apex) as needed.
func (e *editor) add(name string, it item) {
	o := e.owner(name)
	switch {
	case o == nil:
		o = &owner{edit: e.edit, name: name, hash: hashName(name)}
		e.parents(name, +1)
	case len(o.items) == 0: // an empty non-terminal gets its first record
		o = o.mut(e.edit)
		e.parents(name, +1)
	default:
		o = o.mut(e.edit)
	}
	o.items = append(o.items, it)
	o.index(e.z.domain)
	e.store(o)
}

// remove takes the item with key off name; an owner left with nothing is
// removed, with the non-terminals only it kept.
func (e *editor) remove(name string, key Record, derived bool) {
	o := e.owner(name)
	if o == nil {
		return
	}
	i := slices.IndexFunc(o.items, func(it item) bool { return it.key == key && it.derived == derived })
	if i < 0 {
		return
	}
	o = o.mut(e.edit)
	o.items = slices.Delete(o.items, i, i+1)
	if len(o.items) == 0 {
		e.parents(name, -1)
		if o.kids == 0 {
			e.drop(name)
			return
		}
	}
	o.index(e.z.domain)
	e.store(o)
}

// parents counts a name with records in or out of the owners between it
// and the apex (their kids), so that "_tcp.<domain>" exists (NODATA, not NXDOMAIN) while
// "_sip._tcp.<domain>" does. Names outside the zone (reverse names) have no
// such parents.
func (e *editor) parents(name string, delta int) {
	if !e.z.inZone(name) || name == e.z.domain {
		return
	}
	for p := name[strings.IndexByte(name, '.')+1:]; p != e.z.domain; p = p[strings.IndexByte(p, '.')+1:] {
		o := e.owner(p)
		switch {
		case o == nil && delta < 0: // cannot happen: the count is kept in step
			continue
		case o == nil:
			e.store(&owner{edit: e.edit, name: p, hash: hashName(p), kids: 1, sets: map[uint16][]mdns.RR{}})
			continue
		case delta < 0 && o.kids == 1 && len(o.items) == 0:
			e.drop(p)
			continue
		}
		o = o.mut(e.edit)
		o.kids += delta
		e.store(o)
	}
}

// conflict returns an error when name holds a CNAME and anything else.
func (e *editor) conflict(name string) error {
	o := e.owner(name)
	if o == nil {
		return nil
	}
	cname, other := 0, 0
	for _, t := range []uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeCNAME, mdns.TypeTXT, mdns.TypeMX, mdns.TypeSRV, mdns.TypePTR} {
		if t == mdns.TypeCNAME {
			cname = len(o.sets[t])
		} else {
			other += len(o.sets[t])
		}
	}
	switch {
	case cname > 1:
		return invalid("name", strings.TrimSuffix(name, "."), "has two CNAME records; a name has at most one")
	case cname == 1 && other > 0:
		return invalid("name", strings.TrimSuffix(name, "."), "has a CNAME and other records; a CNAME must be a name's only record")
	}
	return nil
}

// addRec and removeRec put a compiled record, and its derived PTR, in and
// out of the zone.
func (e *editor) addRec(key Record, r rec) {
	e.add(r.owner, item{key: key, rr: r.rr})
	if r.ptr != nil {
		e.add(r.ptr.Header().Name, item{key: key, rr: r.ptr, derived: true})
	}
	e.z.records++
	e.edited = true
}

func (e *editor) removeRec(key Record, r rec) {
	e.remove(r.owner, key, false)
	if r.ptr != nil {
		e.remove(r.ptr.Header().Name, key, true)
	}
	e.z.records--
	e.edited = true
}

// answer fills m (a reply to a query for name, qtype) from the zone. It
// reports false when the name is not the zone's to answer (forward it);
// otherwise m is complete except for a CNAME target outside the zone, which
// it returns for the caller to resolve and append.
func (z *zone) answer(m *mdns.Msg, name string, qtype uint16) (handled bool, chase string) {
	in := z.inZone(name)
	o := z.lookup(name)
	if !in && o == nil {
		return false, ""
	}
	m.Authoritative = true
	for range 8 { // CNAME chains longer than this are a loop
		if name == z.domain {
			switch qtype {
			case mdns.TypeSOA:
				m.Answer = append(m.Answer, z.soa)
				return true, ""
			case mdns.TypeNS:
				m.Answer = append(m.Answer, z.ns)
				return true, ""
			}
		}
		if o == nil && name != z.domain {
			m.Rcode = mdns.RcodeNameError
			m.Ns = append(m.Ns, z.soa)
			return true, ""
		}
		var sets map[uint16][]mdns.RR
		if o != nil {
			sets = o.sets
		}
		if qtype == mdns.TypeANY { // RFC 8482: one set is enough
			for _, t := range []uint16{mdns.TypeCNAME, mdns.TypeA, mdns.TypeAAAA, mdns.TypeTXT, mdns.TypeMX, mdns.TypeSRV, mdns.TypePTR} {
				if s := sets[t]; len(s) > 0 {
					qtype = t
					break
				}
			}
		}
		if s := sets[qtype]; len(s) > 0 {
			m.Answer = append(m.Answer, s...)
			return true, ""
		}
		c := sets[mdns.TypeCNAME]
		if len(c) == 0 {
			if in {
				m.Ns = append(m.Ns, z.soa) // NODATA
			}
			return true, ""
		}
		m.Answer = append(m.Answer, c[0])
		name = c[0].(*mdns.CNAME).Target
		if !z.inZone(name) {
			return true, name
		}
		in, o = true, z.lookup(name)
	}
	m.Rcode = mdns.RcodeServerFailure
	return true, ""
}
