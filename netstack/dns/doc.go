// Package dns owns the cell's DNS server: the split-horizon zone of the
// cell's domain (<peer>.<domain>, <service>.<domain>, custom records),
// answered authoritatively to the peers, and forwarding with a cache for
// every other name. It is built on github.com/miekg/dns.
//
// Resolver is the small interface the rest of the cell sees (Set,
// PutRecord, RemoveRecord, Stats); Server is the real one, Fake the test
// double. Set is declarative: it makes the server answer a Config, and
// calling it again with the same Config changes nothing.
//
// # Sockets
//
// The server opens no sockets. The caller opens them where the tunnel is,
// on the cell's tunnel addresses, and hands them to Start: from the kernel
// (net.ListenPacket("udp", "10.77.0.1:53"), net.Listen("tcp", ...)) in tun
// mode, or from gVisor's netstack (gonet.DialUDP, gonet.ListenTCP) in
// userspace mode. Start may be called once per address; Shutdown stops all
// of them and joins every goroutine.
//
// # The zone
//
// The server is authoritative for Zone.Domain: answers carry AA, the apex
// has an SOA and an NS record the server makes itself (the NS is the apex
// name, whose A/AAAA are the cell's tunnel addresses), an unknown name gets
// NXDOMAIN with the SOA in the authority section, a known name asked for
// another type gets NODATA (NOERROR, no answer, the SOA). Names between a
// record and the apex exist (_tcp.<domain> when _sip._tcp.<domain> does).
// No name under the domain is ever forwarded. Zone transfers (AXFR, IXFR)
// are refused: the zone lists the household's devices. The SOA's TTL and minimum
// (the time a resolver keeps a "no such name") are 60 s, so that a client
// that asked for a peer before it was added sees it a minute later;
// records default to 300 s.
//
// A CNAME is followed within the zone; a CNAME that leaves the zone is
// resolved through the upstreams and the chain answered whole, since the
// peers' stub resolvers expect that of a recursive server.
//
// PTR records are derived: every A and AAAA record makes the PTR of its
// address in in-addr.arpa or ip6.arpa. When several names share an address
// and one of them is the apex, the PTR names the apex alone (the services
// on the cell's address do not crowd it); otherwise it names all of them.
// A PTR record in Zone.Records, named by an address ("10.77.0.9") or a
// reverse name, replaces the derived ones for that address. Reverse names
// of addresses the zone does not hold are forwarded.
//
// The zone is an immutable index (a persistent hash trie of owner names)
// swapped with one atomic store: queries never lock, and a change copies
// only the path to one leaf. PutRecord and RemoveRecord change one record
// at a cost that does not grow with the zone. Set reads the whole list, so
// its cost does: it compares the list with the last one, skips their
// common beginning and end, and compiles and applies only the records in
// between (0.3 ms at 10,000 peers to add one); after a PutRecord or
// RemoveRecord it checks every record against the zone instead, without
// allocating (8-11 ms at 10,000 peers). BenchmarkPeerAdd measures both.
// A record listed twice is held once and stays until listed no more;
// records of one name and type share the smallest TTL among them (RFC
// 2181).
//
// # Records
//
// ValidateRecord says what a record may hold, in words a person can act on;
// every such error wraps ErrInvalid and is an *InvalidError naming the
// field. Names are letters, digits, '-' and '_' in labels of at most 63
// bytes, 253 in all; no NUL, line break, space, shell or path characters,
// no non-ASCII (punycode instead), no wildcards. A CNAME may not be at the
// apex nor share its name with other records. A and AAAA take an address
// of their family (not unspecified, not multicast). TTL is 0 (300 s) to
// 86400. TXT is text, not a name: any printable UTF-8 up to 2048 bytes,
// ';' and '$(…)' included, since the server never interprets it.
//
// # Forwarding
//
// Names outside the zone go to the upstreams in order: "198.18.0.53",
// "198.18.0.53:53", "2001:db8::1", "[2001:db8::1]:53" for plain DNS (UDP,
// again over TCP when the answer is truncated), "tls://1.1.1.1" and
// "tls://dns.example@1.1.1.1:853" for DNS over TLS (RFC 7858; port 853 by
// default; the certificate must carry the name before '@', or else the IP
// address; crypto/tls with the system's roots). Addresses only: the cell
// cannot look up its resolver's name. DoT connections are kept (two per
// upstream) and reused. A plain query goes out on a new socket, so every
// query has its own random source port (RFC 5452): a few tens of
// microseconds a forwarded query, nothing beside an upstream's round trip.
// Network.Dial opens those sockets where the caller says (another
// namespace, gVisor's stack); the default is the process's own.
//
// One query may take 800 ms for all upstreams together; each is given an
// equal share of what is left, so that with every upstream down the client
// gets SERVFAIL in under a second while the zone is answered as ever. An
// upstream whose last try failed is asked after the others for 30 s. An
// answer of SERVFAIL, REFUSED or the like from an upstream counts as its
// failure and the next one is asked. With no upstreams, every name outside
// the zone gets SERVFAIL.
//
// # Cache
//
// Forwarded answers are kept in an LRU of CacheSize entries (10,000 by
// default) and CacheSize KiB, answers over 4 KiB not at all: at most about
// 10 MB on a Raspberry Pi. An answer is kept for the smallest TTL of its
// answer section, at most an hour; NXDOMAIN and NODATA (negative caching,
// RFC 2308) for the SOA's minimum or TTL, whichever is smaller, at most
// five minutes, and not at all without an SOA. SERVFAIL and other failures
// are never kept. TTLs given out count down from the time of caching. A
// new upstream list empties the cache. A cached answer is sent as stored
// bytes with the query's id, flags and spelling of the name patched in
// (clients that randomise the case, DNS 0x20, get theirs back).
//
// # Who may ask
//
// Only sources inside Config.Allowed (the peers' subnets) are answered: the
// server is never an open resolver. Everything else is dropped before it
// is parsed: a UDP query gets no answer at all (no reflection, no
// amplification, no sign of a server), a TCP connection is closed. Each
// source address has a token bucket, 50 queries a second with bursts of
// 100 by default; a query over it is dropped the same way (a real client
// retries, a flood learns nothing). The table of sources is bounded at
// 4,096 addresses; a new one beyond that makes the server forget an
// arbitrary other (its counters and bucket start over).
//
// # Logs and status
//
// The server logs with slog: sockets starting and stopping, an upstream
// starting to fail and answering again. It never logs the names asked for
// at info level or above. Stats gives the status page its listening
// addresses, the zone's size and serial, the cache's size and hit rate,
// each upstream's last success and failure, and queries per source.
package dns
