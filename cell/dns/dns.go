// Package dns owns the cell's names as a capability: the custom records of the
// cell's zone (added, listed, deleted, each change audited in its storing
// transaction), the "dns" section of the config (upstream resolvers, the
// per-source query rate), and the DNS status page (where the server listens,
// the zone, the upstreams and their health, the cache, queries per peer).
//
// The zone itself is derived, not stored: the reconcile loop builds it from the
// domain, the peers and these records (plan.Build) and keeps the server
// (netstack/dns) in step with every commit, so a peer added, renamed or deleted,
// a record added or the domain changed answers differently at once. A record
// may not shadow a peer's name or the apex, which the cell owns.
package dns

import (
	"context"
	"errors"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/cell/plan"
	nsdns "github.com/pic-cell/cell/netstack/dns"
	"github.com/pic-cell/cell/storage"
)

// Types the API accepts for custom records (PTRs are derived from A and AAAA).
var Types = []string{"A", "AAAA", "CNAME", "TXT", "MX", "SRV"}

// Server is the running DNS server as the capability sees it: the loop.
type Server interface {
	// Sync waits until the server has every change committed before the call.
	Sync(ctx context.Context) error
	// Rebuild rebuilds the whole zone from the database now.
	Rebuild(ctx context.Context) error
	DNSStats() nsdns.Stats
	Live() plan.Live
}

// Auditor writes a change's audit entry in the transaction that stores it.
type Auditor interface {
	Within(e storage.Entry) storage.Within
}

// DNS is the capability.
type DNS struct {
	db     *storage.DB
	server Server
	audit  Auditor
	now    func() time.Time
}

// New returns the capability.
func New(db *storage.DB, server Server, audit Auditor, now func() time.Time) *DNS {
	return &DNS{db: db, server: server, audit: audit, now: now}
}

// Section is the "dns" section of the config document.
func Section() config.Section {
	return config.Section{Name: "dns", New: func() any { return &plan.DNSSection{Upstreams: []string{}} },
		Validate: func(v any) error {
			s := v.(*plan.DNSSection)
			if len(s.Upstreams) > 8 {
				return fault.Invalid("invalid_upstreams", "dns.upstreams takes at most 8 resolvers (got %d)", len(s.Upstreams))
			}
			for _, u := range s.Upstreams {
				if err := nsdns.ValidateUpstream(u); err != nil {
					return fault.Invalid("invalid_upstream", "dns.upstreams: %s is not a resolver's address (such as 198.18.0.53, [2001:db8::53]:53 or tls://dns.example@198.18.0.53): %v", names.Quote(u), err)
				}
			}
			if s.RatePerSecond < 0 || s.RatePerSecond > 10000 || s.Burst < 0 || s.Burst > 100000 {
				return fault.Invalid("invalid_rate", "dns.rate_per_second must be from 0 (the default, 50) to 10000 and dns.burst from 0 (the default, 100) to 100000")
			}
			return nil
		}}
}

// Record is a custom record as the API shows it.
type Record struct {
	ID        uint64    `json:"id"`
	Name      string    `json:"name"`
	FQDN      string    `json:"fqdn"`
	Type      string    `json:"type"`
	Value     string    `json:"value"`
	TTL       uint32    `json:"ttl"`
	CreatedAt time.Time `json:"created_at"`
}

// NewRecord is the body of POST /api/dns/records.
type NewRecord struct {
	Name  string `json:"name"`  // required: relative to the zone ("www"), not the apex
	Type  string `json:"type"`  // required: A, AAAA, CNAME, TXT, MX, SRV
	Value string `json:"value"` // required, in the type's usual form ("10 mail" for MX)
	TTL   uint32 `json:"ttl"`   // optional: 300 by default, at most 86400
}

func recordOf(r storage.DNSRecord, domain string) Record {
	fqdn := r.Name + "." + domain
	return Record{ID: r.ID, Name: r.Name, FQDN: fqdn, Type: r.Type, Value: r.Value, TTL: r.TTL, CreatedAt: r.CreatedAt}
}

func (c *DNS) domain() (string, error) {
	d, found, err := config.Load(c.db)
	if err != nil {
		return "", err
	}
	if !found {
		return "", config.ErrSetupNeeded()
	}
	return d.Cell().Domain, nil
}

// Records lists the custom records.
func (c *DNS) Records() ([]Record, error) {
	domain, err := c.domain()
	if err != nil {
		return nil, err
	}
	rs, err := c.db.DNSRecords().List()
	out := make([]Record, 0, len(rs))
	for _, r := range rs {
		out = append(out, recordOf(r, domain))
	}
	return out, err
}

// AddRecord validates and stores a record; it answers once the server has it.
func (c *DNS) AddRecord(ctx context.Context, in NewRecord, audit storage.Entry) (Record, error) {
	domain, err := c.domain()
	if err != nil {
		return Record{}, err
	}
	in.Type = strings.ToUpper(in.Type)
	if !contains(Types, in.Type) {
		return Record{}, fault.Invalid("invalid_type", "type must be one of %s (got %s)", strings.Join(Types, ", "), names.Quote(in.Type))
	}
	name := strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(in.Name, "."), "."+domain))
	if name == "" || name == "@" || name == domain {
		return Record{}, fault.Errorf(fault.ErrConflict, "apex_reserved", "the zone's apex (%s) is the cell's own name; give the record a name under it", domain)
	}
	if err := nsdns.ValidateRecord(domain, nsdns.Record{Name: name, Type: in.Type, Value: in.Value, TTL: in.TTL}); err != nil {
		var ie *nsdns.InvalidError
		if errors.As(err, &ie) {
			return Record{}, fault.Invalid("invalid_record", "%s", ie.Error())
		}
		return Record{}, fault.Invalid("invalid_record", "the record is not valid: %v", err)
	}
	r := storage.DNSRecord{Name: name, Type: in.Type, Value: in.Value, TTL: in.TTL, CreatedAt: c.now().UTC()}
	if r.TTL == 0 {
		r.TTL = nsdns.DefaultTTL
	}
	first := strings.SplitN(name, ".", 2)
	audit.TargetType, audit.Result = "dns_record", "ok"
	audit.Details = map[string]string{"name": name, "type": in.Type}
	err = c.db.DNSRecords().Create(&r, func(tx *storage.Tx) error {
		// A record may not shadow a peer's name: <peer>.<domain> is the cell's.
		if len(first) == 1 {
			if _, err := c.db.Peers().GetTx(tx, name); err == nil {
				return fault.Errorf(fault.ErrConflict, "name_taken", "%s.%s is the name of the peer %q", name, domain, name)
			}
		}
		others, err := c.db.DNSRecords().ListTx(tx)
		if err != nil {
			return err
		}
		for _, o := range others {
			if o.ID == r.ID || o.Name != name {
				continue
			}
			if o.Type == "CNAME" || in.Type == "CNAME" {
				return fault.Errorf(fault.ErrConflict, "cname_conflict", "%s.%s already has a %s record: a CNAME cannot share its name with any other record", name, domain, o.Type)
			}
		}
		audit.TargetID = itoa(r.ID)
		return c.audit.Within(audit)(tx)
	})
	if err != nil {
		return Record{}, err
	}
	if err := c.server.Sync(ctx); err != nil {
		return Record{}, fault.Errorf(fault.ErrUnavailable, "apply_failed", "the record is stored but the DNS server did not take it: %v", err)
	}
	return recordOf(r, domain), nil
}

// DeleteRecord removes a record by its id.
func (c *DNS) DeleteRecord(ctx context.Context, id string, audit storage.Entry) error {
	n, ok := atoi(id)
	if !ok {
		return fault.Errorf(fault.ErrNotFound, "record_not_found", "no record with the id %s", names.Quote(id))
	}
	audit.TargetType, audit.TargetID, audit.Result = "dns_record", id, "ok"
	if _, err := c.db.DNSRecords().Delete(n, c.audit.Within(audit)); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fault.Errorf(fault.ErrNotFound, "record_not_found", "no record with the id %s", names.Quote(id))
		}
		return err
	}
	if err := c.server.Sync(ctx); err != nil {
		return fault.Errorf(fault.ErrUnavailable, "apply_failed", "the record is deleted but the DNS server did not follow: %v", err)
	}
	return nil
}

// Reload rebuilds the split-horizon zone from the database now.
func (c *DNS) Reload(ctx context.Context) error {
	if err := c.server.Rebuild(ctx); err != nil {
		return fault.Errorf(fault.ErrUnavailable, "reload_failed", "the zone could not be rebuilt: %v", err)
	}
	return nil
}

// Status is GET /api/dns.
type Status struct {
	State     string        `json:"state"`
	Reason    string        `json:"reason,omitempty"`
	Listening []string      `json:"listening"`
	Zone      string        `json:"zone"`
	Serial    uint32        `json:"serial"`
	Records   int           `json:"record_count"`
	Upstreams []Upstream    `json:"upstreams"`
	Cache     Cache         `json:"cache"`
	Refused   uint64        `json:"refused"`
	Limited   uint64        `json:"rate_limited"`
	Peers     []PeerQueries `json:"queries_per_peer"`
}

// Upstream is one forwarder's health: healthy when its last try answered.
type Upstream struct {
	Address   string     `json:"address"`
	Healthy   bool       `json:"healthy"`
	LastOK    *time.Time `json:"last_ok"`
	LastError string     `json:"last_error,omitempty"`
	Answers   uint64     `json:"answers"`
	Failures  uint64     `json:"failures"`
	RTTMillis float64    `json:"rtt_ms"`
}

func upstreamOf(u nsdns.UpstreamStats) Upstream {
	out := Upstream{Address: u.Upstream, Healthy: u.Err == "" && !u.LastOK.IsZero(), LastError: u.Err,
		Answers: u.OK, Failures: u.Fail, RTTMillis: float64(u.RTT.Microseconds()) / 1000}
	if !u.LastOK.IsZero() {
		t := u.LastOK.UTC()
		out.LastOK = &t
	}
	return out
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func atoi(s string) (uint64, bool) {
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && n > 0 && len(s) <= 20
}

// Cache is the forwarding cache.
type Cache struct {
	Entries int     `json:"entries"`
	Hits    uint64  `json:"hits"`
	Misses  uint64  `json:"misses"`
	HitRate float64 `json:"hit_rate"`
}

// PeerQueries is how many queries a peer asked.
type PeerQueries struct {
	Peer    string `json:"peer"`
	Queries uint64 `json:"queries"`
}

// Status reports the server.
func (c *DNS) Status() (Status, error) {
	live := c.server.Live()
	st := c.server.DNSStats()
	out := Status{State: live.DNS.State, Reason: live.DNS.Reason, Listening: st.Listening, Zone: st.Domain, Serial: st.Serial,
		Records: st.Records, Upstreams: []Upstream{}, Refused: st.Refused, Limited: st.Limited, Peers: []PeerQueries{},
		Cache: Cache{Entries: st.CacheEntries, Hits: st.CacheHits, Misses: st.CacheMisses, HitRate: st.HitRate}}
	if out.Listening == nil {
		out.Listening = []string{}
	}
	for _, u := range st.Upstreams {
		out.Upstreams = append(out.Upstreams, upstreamOf(u))
	}
	if len(st.Sources) > 0 {
		peers, err := c.db.Peers().List()
		if err != nil {
			return out, err
		}
		byAddr := map[netip.Addr]string{}
		for _, p := range peers {
			byAddr[p.IPv4] = p.Name
			if p.IPv6.IsValid() {
				byAddr[p.IPv6] = p.Name
			}
		}
		counts := map[string]uint64{}
		for _, s := range st.Sources {
			if name, ok := byAddr[s.Addr]; ok {
				counts[name] += s.Queries
			}
		}
		for name, n := range counts {
			out.Peers = append(out.Peers, PeerQueries{Peer: name, Queries: n})
		}
		sort.Slice(out.Peers, func(i, j int) bool {
			if out.Peers[i].Queries != out.Peers[j].Queries {
				return out.Peers[i].Queries > out.Peers[j].Queries
			}
			return out.Peers[i].Peer < out.Peers[j].Peer
		})
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// PeerNameFree is a peers hook (the root registers it): a new peer may not take
// a name a custom record has, which would shadow it.
func (c *DNS) PeerNameFree(tx *storage.Tx, p storage.Peer) error {
	rs, err := c.db.DNSRecords().ListTx(tx)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.Name == p.Name {
			return fault.Errorf(fault.ErrConflict, "name_taken", "the name %q is taken by a DNS record (id %d) of the cell's zone", p.Name, r.ID)
		}
	}
	return nil
}
