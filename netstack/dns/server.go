package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// Config is the server's whole desired state. Set makes the server match it.
type Config struct {
	Zone Zone
	// Upstreams are asked in order for every name outside the zone (see
	// ParseUpstream for the forms). Optional: none means the zone alone is
	// answered and everything else gets SERVFAIL.
	Upstreams []string
	// Allowed are the source prefixes that may query (the peers' subnets,
	// and loopback if the cell asks itself). Required for the server to
	// answer anyone: queries from elsewhere are dropped.
	Allowed []netip.Prefix
	// RatePerSecond and Burst make each source address's token bucket;
	// 0 means DefaultRate and DefaultBurst, a negative rate no limit.
	RatePerSecond int
	Burst         int
	// CacheSize bounds the cache of forwarded answers in entries; 0 means
	// DefaultCacheSize, negative no cache.
	CacheSize int
}

// Resolver is the cell's DNS server as the rest of the cell sees it;
// Server is the real one, Fake the test double.
type Resolver interface {
	// Set makes the server answer cfg. Calling it again with the same cfg
	// changes nothing; a changed zone, upstream list or policy applies to
	// the next query. On error nothing changes.
	Set(cfg Config) error
	// PutRecord adds one record to the zone and RemoveRecord takes one off
	// (removing an absent record is not an error): the constant-cost path
	// for a single peer after a Set. The next Set states the whole zone
	// again.
	PutRecord(r Record) error
	RemoveRecord(r Record) error
	Stats() Stats
}

var _ Resolver = (*Server)(nil)

// Options are the server's fixed parts; every field is optional.
type Options struct {
	Logger *slog.Logger     // default: discard
	Now    func() time.Time // default: time.Now; drives TTLs, the cache and rate limits
	// Exchange sends queries upstream; default: a Network (the system's
	// roots for DNS over TLS, the process's own network stack). A *Network
	// given here has its kept connections closed by Shutdown.
	Exchange Exchanger
}

// Timing of forwarding (the package doc gives the reasons).
const (
	forwardBudget = 800 * time.Millisecond // all upstreams of one query together
	downFor       = 30 * time.Second       // a failed upstream is asked last this long
	ednsSize      = 1232                   // UDP payload we advertise and answer up to
	queryBuf      = 1232                   // read buffer for a UDP query (queries are small)
)

// ErrClosed is returned by a server after Shutdown.
var ErrClosed = errors.New("dns: server shut down")

var errNoUpstream = errors.New("dns: no upstream configured")

// Server is the cell's DNS server. Its methods are safe for concurrent use.
type Server struct {
	log *slog.Logger
	now func() time.Time
	ex  Exchanger

	// mu serialises changes; queries never take it. They read the three
	// atomics, each an immutable value replaced whole.
	mu      sync.Mutex
	recs    map[Record]*held // the zone's records by the Record given (Type upper-cased)
	prev    []Record         // the last Set's records, normalised
	listed  bool             // prev is what the zone holds: no PutRecord or RemoveRecord since
	gen     uint64           // the last Set that marked s.recs
	edits   uint64           // the last editor's id
	serial  uint32           // the serial the server counts, when Zone.Serial is 0
	fixed   bool             // the last Set gave a serial
	applied Config           // the last Set's upstreams, prefixes and limits
	zone    atomic.Pointer[zone]
	pol     atomic.Pointer[policy]
	cache   atomic.Pointer[cache]

	src          sources
	hits, misses atomic.Uint64

	ctx    context.Context // cancelled by Shutdown: upstream exchanges stop
	cancel context.CancelFunc

	life      sync.Mutex
	servers   []*mdns.Server
	listening []string
	closed    bool
	wg        sync.WaitGroup
	once      sync.Once
}

// policy is who may ask and whom the server asks, replaced whole by Set.
type policy struct {
	upstreams   []*upstream
	allowed     []netip.Prefix
	rate, burst float64
}

// New returns a server that answers nothing until Set gives it a config
// and Start gives it sockets.
func New(opts Options) *Server {
	s := &Server{log: opts.Logger, now: opts.Now, ex: opts.Exchange, recs: map[Record]*held{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.ex == nil {
		s.ex = &Network{}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.zone.Store(&zone{})
	s.pol.Store(&policy{})
	s.cache.Store(newCache(DefaultCacheSize))
	s.applied.CacheSize = DefaultCacheSize
	return s
}

// Set implements Resolver.
func (s *Server) Set(cfg Config) error {
	domain, err := canonicalDomain(cfg.Zone.Domain)
	if err != nil {
		return err
	}
	if domain == "" && len(cfg.Zone.Records) > 0 {
		return invalid("domain", "", "records need the zone's domain")
	}
	ups := make([]Upstream, 0, len(cfg.Upstreams))
	for _, x := range cfg.Upstreams {
		u, err := ParseUpstream(x)
		if err != nil {
			return err
		}
		if !slices.Contains(ups, u) {
			ups = append(ups, u)
		}
	}
	var allow []netip.Prefix
	for _, p := range cfg.Allowed {
		if !p.IsValid() {
			return invalid("allowed", p.String(), "is not a prefix")
		}
		allow = append(allow, p.Masked())
	}
	rate, burst := cfg.RatePerSecond, cfg.Burst
	if rate == 0 {
		rate = DefaultRate
	}
	if burst <= 0 {
		burst = max(DefaultBurst, rate)
	}
	size := cfg.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	size = max(size, 0)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.setZoneLocked(domain, cfg.Zone); err != nil {
		return err
	}

	old := s.pol.Load()
	pol := &policy{allowed: allow, rate: float64(rate), burst: float64(burst)}
	for _, u := range ups {
		i := slices.IndexFunc(old.upstreams, func(x *upstream) bool { return x.Upstream == u })
		if i >= 0 {
			pol.upstreams = append(pol.upstreams, old.upstreams[i]) // keeps its health
		} else {
			pol.upstreams = append(pol.upstreams, &upstream{Upstream: u})
		}
	}
	if rate < 0 {
		pol.rate = 0
	}
	sameUps := slices.EqualFunc(old.upstreams, pol.upstreams, func(a, b *upstream) bool { return a == b })
	if !sameUps || !slices.Equal(old.allowed, pol.allowed) || old.rate != pol.rate || old.burst != pol.burst {
		s.pol.Store(pol)
	}
	// Answers of other upstreams may differ (a filtering resolver, say):
	// a new list starts with an empty cache.
	if !sameUps || size != s.applied.CacheSize {
		s.cache.Store(newCache(size))
	}
	s.applied.CacheSize = size
	return nil
}

// held is a record in the zone and how many times the last Set listed it
// (a Record listed twice stays until it is listed no more).
type held struct {
	rec rec
	n   int
	// scratch of a Set without the last list: the generation that saw it
	// and how many times
	gen    uint64
	listed int
}

// setZoneLocked makes the zone equal z. It compares z.Records with the last
// Set's: past their common beginning and end, the records that differ are
// counted in or out, and only the records that come or go are compiled and
// touched. A Set that adds one peer costs a comparison of the list, not a
// rebuild; a new domain rebuilds all. s.mu must be held.
func (s *Server) setZoneLocked(domain string, z Zone) error {
	cur := s.zone.Load()
	rebuild := domain != cur.domain
	recs := z.Records
	holding := func(k Record) *held {
		if rebuild {
			return nil
		}
		return s.recs[k]
	}
	// i and j: how long a beginning and end recs has in common with the
	// last list, when that is at hand.
	listed := s.listed && !rebuild
	i, j := 0, 0
	if listed {
		old := s.prev
		for i < len(old) && i < len(recs) && same(old[i], recs[i]) {
			i++
		}
		for j < len(old)-i && j < len(recs)-i && same(old[len(old)-1-j], recs[len(recs)-1-j]) {
			j++
		}
	}
	// delta: how many more times each record is listed than before; added:
	// the records not held yet, compiled.
	delta := map[Record]int{}
	added := map[Record]rec{}
	see := func(x int) error {
		k := normal(recs[x])
		delta[k]++
		if _, ok := added[k]; !ok && holding(k) == nil {
			c, err := compile(domain, k)
			if err != nil {
				return fmt.Errorf("record %d: %w", x, err)
			}
			added[k] = c
		}
		return nil
	}
	switch {
	case listed: // the lists' differing middles
		for _, r := range s.prev[i : len(s.prev)-j] {
			delta[r]--
		}
		for x := i; x < len(recs)-j; x++ {
			if err := see(x); err != nil {
				return err
			}
		}
	case rebuild:
		for x := range recs {
			if err := see(x); err != nil {
				return err
			}
		}
	default:
		// After PutRecord or RemoveRecord: every held record is marked
		// with this Set's generation as it is listed, which allocates
		// only for records that are new.
		s.gen++
		for x, r := range recs {
			h := s.recs[normal(r)]
			if h == nil {
				if err := see(x); err != nil {
					return err
				}
				continue
			}
			if h.gen != s.gen {
				h.gen, h.listed = s.gen, 0
			}
			h.listed++
		}
		for k, h := range s.recs {
			switch {
			case h.gen != s.gen:
				delta[k] = -h.n
			case h.listed != h.n:
				delta[k] = h.listed - h.n
			}
		}
	}

	e := s.editor(cur)
	if rebuild {
		e.z = zone{domain: domain}
	}
	for k, d := range delta {
		if h := holding(k); h != nil && h.n+d <= 0 {
			e.removeRec(k, h.rec)
		}
	}
	var touched []string
	for k, c := range added {
		e.addRec(k, c)
		if c.rr.Header().Rrtype == mdns.TypeCNAME || s.ownerHasCNAME(e, c.owner) {
			touched = append(touched, c.owner)
		}
	}
	for _, n := range touched {
		if err := e.conflict(n); err != nil {
			return err
		}
	}
	changed := rebuild || e.edited
	switch {
	case z.Serial != 0:
		changed = changed || z.Serial != cur.serial
		s.serial, s.fixed = z.Serial, true
	case s.fixed || s.serial == 0:
		s.serial, s.fixed = max(uint32(s.now().Unix()), s.serial+1), false
		changed = true
	case changed:
		s.serial++
	}
	if changed {
		s.publishLocked(e)
	}

	// The zone is stored; now the counts, and the list for the next Set
	// (its changed middle replaced in place: a steady Set allocates
	// nothing for it).
	if rebuild {
		clear(s.recs)
	}
	for k, d := range delta {
		h := s.recs[k]
		switch {
		case h == nil:
			s.recs[k] = &held{rec: added[k], n: d}
		case h.n+d <= 0:
			delete(s.recs, k)
		default:
			h.n += d
		}
	}
	if !listed {
		s.prev, i, j = s.prev[:0], 0, 0
	}
	s.prev = slices.Replace(s.prev, i, len(s.prev)-j, recs[i:len(recs)-j]...)
	for x := i; x < len(recs)-j; x++ {
		s.prev[x] = normal(s.prev[x])
	}
	s.listed = true
	return nil
}

// same reports whether r is the normalised record n.
func same(n, r Record) bool {
	return n.Name == r.Name && n.Value == r.Value && n.TTL == r.TTL && (n.Type == r.Type || strings.EqualFold(n.Type, r.Type))
}

// normal is r as the server keys it: the type in upper case.
func normal(r Record) Record {
	for x := 0; x < len(r.Type); x++ {
		if 'a' <= r.Type[x] && r.Type[x] <= 'z' {
			r.Type = strings.ToUpper(r.Type)
			break
		}
	}
	return r
}

func (s *Server) ownerHasCNAME(e *editor, name string) bool {
	o := e.owner(name)
	return o != nil && len(o.sets[mdns.TypeCNAME]) > 0
}

func (s *Server) editor(z *zone) *editor {
	s.edits++
	return &editor{z: *z, edit: s.edits}
}

// publishLocked stores e's zone with the current serial; s.mu must be held.
func (s *Server) publishLocked(e *editor) {
	e.z.serial = s.serial
	e.z.apexRecords()
	z := e.z
	s.zone.Store(&z)
}

// PutRecord implements Resolver.
func (s *Server) PutRecord(r Record) error {
	r.Type = strings.ToUpper(r.Type)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.zone.Load()
	if cur.domain == "" {
		return invalid("domain", "", "the zone has no domain yet (Set one first)")
	}
	if _, ok := s.recs[r]; ok {
		return nil
	}
	s.listed = false // the next Set compares with the records, not the list
	c, err := compile(cur.domain, r)
	if err != nil {
		return err
	}
	e := s.editor(cur)
	e.addRec(r, c)
	if err := e.conflict(c.owner); err != nil {
		return err
	}
	s.serial++
	s.publishLocked(e)
	s.recs[r] = &held{rec: c, n: 1}
	return nil
}

// RemoveRecord implements Resolver.
func (s *Server) RemoveRecord(r Record) error {
	r.Type = strings.ToUpper(r.Type)
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.recs[r]
	if !ok {
		return nil
	}
	s.listed = false
	e := s.editor(s.zone.Load())
	e.removeRec(r, h.rec)
	s.serial++
	s.publishLocked(e)
	delete(s.recs, r)
	return nil
}

// Start serves on sockets the caller opened: pc for UDP, ln for TCP, either
// may be nil. It returns once both are being served, or with the error that
// stopped them. Call it once per address (the tunnel's IPv4 and IPv6
// addresses, say); Shutdown stops them all. The sockets may come from the
// kernel (net.ListenPacket) or from gVisor's netstack (gonet).
func (s *Server) Start(pc net.PacketConn, ln net.Listener) error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return ErrClosed
	}
	for _, srv := range []*mdns.Server{{PacketConn: pc}, {Listener: ln}} {
		var addr net.Addr
		switch {
		case srv.PacketConn != nil:
			addr = pc.LocalAddr()
		case srv.Listener != nil:
			addr = ln.Addr()
		default:
			continue
		}
		started := make(chan struct{})
		errc := make(chan error, 1)
		srv.Handler = s
		srv.UDPSize = queryBuf
		srv.DecorateReader = func(r mdns.Reader) mdns.Reader { return gate{s: s, inner: r} }
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			err := srv.ActivateAndServe()
			errc <- err
			if err != nil && !s.isClosed() {
				s.log.Error("dns socket stopped", "addr", addr.String(), "err", err)
			}
		}()
		select {
		case <-started:
		case err := <-errc:
			return fmt.Errorf("dns: serve %s: %w", addr, err)
		}
		s.servers = append(s.servers, srv)
		s.listening = append(s.listening, addr.Network()+" "+addr.String())
		s.log.Info("dns serving", "addr", addr.String(), "net", addr.Network())
	}
	return nil
}

func (s *Server) isClosed() bool {
	s.life.Lock()
	defer s.life.Unlock()
	return s.closed
}

// Shutdown stops every socket, cancels upstream queries in flight, waits
// for all of the server's goroutines and closes its DoT connections. It may
// be called again; later calls return when the first is done.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		s.life.Lock()
		s.closed = true
		servers := s.servers
		s.life.Unlock()
		s.cancel()
		for _, srv := range servers {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := srv.ShutdownContext(ctx); err != nil {
				s.log.Warn("dns shutdown", "err", err)
			}
			cancel()
		}
		s.wg.Wait()
		if n, ok := s.ex.(*Network); ok {
			n.Close()
		}
	})
}

// Stats is the server's state for the status page.
type Stats struct {
	Listening    []string // "udp 10.77.0.1:53", "tcp 10.77.0.1:53"
	Domain       string
	Serial       uint32
	Records      int // Records in the zone (derived PTRs not counted)
	CacheEntries int
	CacheHits    uint64
	CacheMisses  uint64  // forwarded queries that were not in the cache
	HitRate      float64 // hits / (hits + misses); 0 before any
	Refused      uint64  // queries dropped: the source is outside Allowed
	Limited      uint64  // queries dropped over their source's rate
	Upstreams    []UpstreamStats
	Sources      []SourceStats // most queries first (at most 4096 sources)
}

// Stats implements Resolver.
func (s *Server) Stats() Stats {
	z := s.zone.Load()
	st := Stats{Domain: strings.TrimSuffix(z.domain, "."), Serial: z.serial, Records: z.records,
		CacheEntries: s.cache.Load().len(), CacheHits: s.hits.Load(), CacheMisses: s.misses.Load(),
		Refused: s.src.refused.Load(), Limited: s.src.limited.Load(), Sources: s.src.stats()}
	if n := st.CacheHits + st.CacheMisses; n > 0 {
		st.HitRate = float64(st.CacheHits) / float64(n)
	}
	for _, u := range s.pol.Load().upstreams {
		st.Upstreams = append(st.Upstreams, u.stats())
	}
	s.life.Lock()
	st.Listening = slices.Clone(s.listening)
	s.life.Unlock()
	return st
}

// gate drops queries before they are parsed: from sources outside the
// allowed prefixes, and over a source's rate. Dropping a UDP query sends
// nothing back (no reflection, no sign of a server); dropping a TCP query
// closes its connection.
type gate struct {
	s     *Server
	inner mdns.Reader
}

var errDropped = errors.New("dns: source refused")

// ReadUDP reads for itself (not through the inner reader) so that a
// dropped query's buffer is read into again: a flood from outside costs no
// allocation. It sets no read deadline: Shutdown's deadline in the past
// must stay.
func (g gate) ReadUDP(conn *net.UDPConn, _ time.Duration) ([]byte, *mdns.SessionUDP, error) {
	buf := make([]byte, queryBuf)
	for {
		n, sess, err := mdns.ReadFromSessionUDP(conn, buf)
		if err != nil {
			return nil, nil, err
		}
		if g.s.admit(addrOf(sess.RemoteAddr())) {
			return buf[:n], sess, nil
		}
	}
}

func (g gate) ReadPacketConn(conn net.PacketConn, _ time.Duration) ([]byte, net.Addr, error) {
	buf := make([]byte, queryBuf)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return nil, nil, err
		}
		if g.s.admit(addrOf(from)) {
			return buf[:n], from, nil
		}
	}
}

func (g gate) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	m, err := g.inner.ReadTCP(conn, timeout)
	if err == nil && !g.s.admit(addrOf(conn.RemoteAddr())) {
		return nil, errDropped
	}
	return m, err
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap()
}

// admit decides on one query from a.
func (s *Server) admit(a netip.Addr) bool {
	pol := s.pol.Load()
	if !allowed(pol.allowed, a) {
		s.src.refused.Add(1)
		return false
	}
	return s.src.admit(a, s.now(), pol.rate, pol.burst)
}

// ServeDNS answers one admitted query: from the zone, or from the cache,
// or from the upstreams.
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	opt := req.IsEdns0()
	switch {
	case req.Opcode != mdns.OpcodeQuery:
		s.fail(w, req, mdns.RcodeNotImplemented)
		return
	case len(req.Question) != 1:
		s.fail(w, req, mdns.RcodeFormatError)
		return
	case opt != nil && opt.Version() != 0:
		s.fail(w, req, mdns.RcodeBadVers)
		return
	case req.Question[0].Qclass != mdns.ClassINET:
		s.fail(w, req, mdns.RcodeRefused)
		return
	case req.Question[0].Qtype == mdns.TypeAXFR || req.Question[0].Qtype == mdns.TypeIXFR:
		s.fail(w, req, mdns.RcodeRefused) // the zone lists the household's devices
		return
	}
	q := req.Question[0]
	name := lower(q.Name)
	z := s.zone.Load()
	if z.inZone(name) || strings.HasSuffix(name, ".arpa.") && z.lookup(name) != nil {
		s.serveZone(w, req, z, name, q.Qtype)
		return
	}
	do := opt != nil && opt.Do()
	var kb [300]byte
	key := cacheKey(kb[:0], q.Name, q.Qtype, do, req.CheckingDisabled)
	now := s.now()
	if e, age, ok := s.cache.Load().get(key, now); ok {
		s.hits.Add(1)
		s.writeEntry(w, req, e, age)
		return
	}
	s.misses.Add(1)
	e, err := s.resolve(string(key), name, q.Qtype, do, req.CheckingDisabled)
	if err != nil {
		s.log.Debug("dns forward failed", "err", err)
		s.fail(w, req, mdns.RcodeServerFailure)
		return
	}
	s.writeEntry(w, req, e, 0)
}

func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

func (s *Server) serveZone(w mdns.ResponseWriter, req *mdns.Msg, z *zone, name string, qtype uint16) {
	m := new(mdns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	_, chase := z.answer(m, name, qtype)
	if chase != "" {
		// A CNAME out of the zone: the peers' stub resolvers expect the
		// whole chain, as from any recursive server.
		opt := req.IsEdns0()
		do := opt != nil && opt.Do()
		key := string(cacheKey(nil, chase, qtype, do, req.CheckingDisabled))
		e, age, ok := s.cache.Load().get([]byte(key), s.now())
		if !ok {
			e, _ = s.resolve(key, chase, qtype, do, req.CheckingDisabled)
		}
		if e != nil {
			if r, err := e.msg(age); err == nil {
				m.Answer = append(m.Answer, r.Answer...)
				m.Rcode = r.Rcode
			}
		}
	}
	s.write(w, req, m)
}

// resolve asks the upstreams for (name, qtype), keeps the answer in the
// cache and returns it.
func (s *Server) resolve(key, name string, qtype uint16, do, cd bool) (*entry, error) {
	q := new(mdns.Msg)
	q.SetQuestion(name, qtype)
	q.CheckingDisabled = cd
	q.SetEdns0(ednsSize, do)
	r, err := s.exchange(q)
	if err != nil {
		return nil, err
	}
	e, err := newEntry(key, name, qtype, r, s.now())
	if err != nil {
		return nil, err
	}
	s.cache.Load().put(e)
	return e, nil
}

// exchange asks the upstreams in turn, those that failed lately last, each
// with an equal share of what is left of forwardBudget, so that the whole
// takes less than a second even when none answers.
func (s *Server) exchange(q *mdns.Msg) (*mdns.Msg, error) {
	pol := s.pol.Load()
	if len(pol.upstreams) == 0 {
		return nil, errNoUpstream
	}
	ctx, cancel := context.WithTimeout(s.ctx, forwardBudget)
	defer cancel()
	deadline, _ := ctx.Deadline()
	now := s.now()
	order := make([]*upstream, 0, len(pol.upstreams))
	var later []*upstream
	for _, u := range pol.upstreams {
		if u.failing(now) {
			later = append(later, u)
		} else {
			order = append(order, u)
		}
	}
	order = append(order, later...)
	var lastErr error
	for i, u := range order {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			break
		}
		actx, acancel := context.WithTimeout(ctx, left/time.Duration(len(order)-i))
		start := time.Now()
		r, err := s.ex.Exchange(actx, q, u.Upstream)
		acancel()
		if err == nil {
			err = check(q, r)
		}
		if u.record(s.now(), time.Since(start), err) {
			if err != nil {
				s.log.Warn("dns upstream failing", "upstream", u.String(), "err", err)
			} else {
				s.log.Info("dns upstream answering", "upstream", u.String())
			}
		}
		if err == nil {
			return r, nil
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return nil, lastErr
}

// check refuses an upstream's answer that does not answer q, or that says
// the upstream could not: the next upstream may.
func check(q, r *mdns.Msg) error {
	if r == nil {
		return errors.New("no answer")
	}
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, q.Question[0].Name) || r.Question[0].Qtype != q.Question[0].Qtype {
		return errors.New("answer to another question")
	}
	switch r.Rcode {
	case mdns.RcodeSuccess, mdns.RcodeNameError:
		return nil
	}
	return fmt.Errorf("answered %s", mdns.RcodeToString[r.Rcode])
}

// maxUDP is the largest answer q may get over UDP.
func maxUDP(req *mdns.Msg) int {
	if opt := req.IsEdns0(); opt != nil {
		return min(max(int(opt.UDPSize()), mdns.MinMsgSize), ednsSize)
	}
	return mdns.MinMsgSize
}

func isTCP(w mdns.ResponseWriter) bool {
	a := w.RemoteAddr()
	return a != nil && a.Network() == "tcp"
}

// write sends m (a reply made with SetReply) with EDNS as the query asked
// and truncated to fit UDP.
func (s *Server) write(w mdns.ResponseWriter, req *mdns.Msg, m *mdns.Msg) {
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(ednsSize, opt.Do())
	}
	if !isTCP(w) {
		m.Truncate(maxUDP(req))
	}
	w.WriteMsg(m)
}

func (s *Server) fail(w mdns.ResponseWriter, req *mdns.Msg, rcode int) {
	m := new(mdns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	s.write(w, req, m)
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, maxEntryBytes+64); return &b }}

// writeEntry sends a cached answer to req: its id, flags and question case,
// TTLs less age, and an OPT record if the query had one.
func (s *Server) writeEntry(w mdns.ResponseWriter, req *mdns.Msg, e *entry, age uint32) {
	bp := bufs.Get().(*[]byte)
	b := append((*bp)[:0], e.wire...)
	binary.BigEndian.PutUint16(b, req.Id)
	b[2] = 0x80 // QR, opcode QUERY
	if req.RecursionDesired {
		b[2] |= 0x01
	}
	b[3] = 0x80 | byte(e.rcode&0xf) // RA
	if req.CheckingDisabled {
		b[3] |= 0x10
	}
	matchCase(b[12:e.qend], req.Question[0].Name)
	for i, off := range e.ttlOffs {
		ttl := e.ttls[i]
		ttl -= min(ttl, age)
		binary.BigEndian.PutUint32(b[off:], ttl)
	}
	opt := req.IsEdns0()
	optLen := 0
	if opt != nil {
		optLen = 11
	}
	if !isTCP(w) && len(b)+optLen > maxUDP(req) {
		b = b[:e.qend]
		b[2] |= 0x02 // TC: ask again over TCP
		clear(b[6:12])
	}
	if opt != nil {
		var do byte
		if opt.Do() {
			do = 0x80
		}
		b = append(b, 0, 0, byte(mdns.TypeOPT), byte(ednsSize>>8), byte(ednsSize&0xff), 0, 0, do, 0, 0, 0)
		binary.BigEndian.PutUint16(b[10:], binary.BigEndian.Uint16(b[10:])+1)
	}
	w.Write(b)
	if cap(b) <= maxEntryBytes+64 {
		*bp = b
		bufs.Put(bp)
	}
}

// matchCase gives the wire name in q (lowercase) the case of name, the
// query's own spelling, for clients that check it (DNS 0x20). Names with
// escapes are left as they are.
func matchCase(q []byte, name string) {
	if strings.IndexByte(name, '\\') >= 0 {
		return
	}
	i := 0
	for off := 0; off < len(q) && q[off] != 0 && q[off]&0xc0 == 0; {
		l := int(q[off])
		for j := off + 1; j <= off+l && j < len(q) && i < len(name); j++ {
			if c := name[i]; c|0x20 == q[j] {
				q[j] = c
			}
			i++
		}
		i++ // the dot
		off += 1 + l
	}
}

// msg unpacks e as it stands at age.
func (e *entry) msg(age uint32) (*mdns.Msg, error) {
	b := slices.Clone(e.wire)
	for i, off := range e.ttlOffs {
		binary.BigEndian.PutUint32(b[off:], e.ttls[i]-min(e.ttls[i], age))
	}
	m := new(mdns.Msg)
	return m, m.Unpack(b)
}
