// Package clock tells whether the cell's clock is right and serves the
// cell's time to its peers.
//
// # Who sets the clock
//
// Nothing here ever sets the clock. On the appliance gokrazy's ntp client
// steps it with settimeofday once an hour from the pool; on a developer's
// host chrony or systemd-timesyncd disciplines it. This package only looks:
//
//   - ReadKernel reads the kernel clock's state with adjtimex(2) in mode 0
//     (a read). A daemon that disciplines the clock (chrony, ntpd,
//     timesyncd) clears STA_UNSYNC; gokrazy's settimeofday does not, so on
//     the appliance the kernel always says "unsynchronised" even when the
//     time is right. The kernel alone can therefore not answer the question.
//   - A Monitor asks NTP servers for their time with a plain SNTP client
//     query (RFC 4330: one 48-byte packet each way) at an interval and
//     records how far off the local clock is. The query is written here
//     rather than taken from a library because it is 48 bytes, and because
//     it must honour a context (a library query without one cannot be
//     cancelled at shutdown).
//
// # When the clock counts as synchronised
//
// A measurement beats a claim: if the Monitor has a good sample younger
// than twice its interval, the clock is synchronised exactly when that
// sample's offset is under 500 ms (gokrazy steps the clock hourly; a
// crystal drifting 50 ppm is off by 180 ms after an hour, well inside). With
// no fresh sample (the servers cannot be reached, say behind a strict exit)
// the kernel's word stands in: a daemon with another source (a GPS, a LAN
// server) may well keep the clock right.
//
// # Asking the servers
//
// A round asks the servers in order and stops at the first good answer. An
// answer is good when it is a server reply (mode 4) to our very query (the
// origin timestamp echoes our random transmit timestamp), not a
// kiss-o'-death (stratum 0), not from an unsynchronised server (leap
// indicator 3 or stratum 16 and above). After a round in which every server
// failed the Monitor tries again sooner than the interval: after a
// sixteenth of it, then doubling, up to the interval itself (15 minutes by
// default: 56 s, 112 s, 225 s, 450 s, 900 s). The error is kept in plain
// words for the status.
//
// # Serving time
//
// A Server answers SNTP client requests (mode 3, versions 1 to 4) with
// server replies (mode 4) of the request's version, the poll field copied,
// the origin timestamp set to the request's transmit timestamp, and the
// receive and transmit timestamps from Now. Symmetric active requests (mode
// 1) are not answered: they are for servers peering with each other, and
// answering them unauthenticated is a known way to disturb ntpd peers; the
// cell's peers are clients.
//
// When the clock is synchronised the reply carries leap indicator 0, stratum
// one more than the upstream's (capped at 15) or 3 when the upstream is
// unknown (the kernel says synchronised but the Monitor has no sample:
// public pool servers are stratum 2 for the most part), the reference ID
// of the upstream (its IPv4 address, or the first four bytes of the MD5 of
// its IPv6 address, RFC 5905 §7.3), the reference time of the last good
// sample, a root delay of its round trip and a root dispersion of its
// offset plus half its round trip plus 15 ppm of its age (RFC 5905's PHI);
// with the kernel's word alone, the kernel's maximum error.
//
// When it is not synchronised the reply carries leap indicator 3 ("clock
// unsynchronised") and stratum 16, which RFC 5905 (figure 11) defines as
// "unsynchronized", with the reference ID "INIT". Stratum 0 is not used:
// in a reply it is a kiss-o'-death, and RFC 4330 clients that receive one
// must stop asking the server; a cell whose clock is wrong for a while must
// not be abandoned by its peers for good. Every client we know (ntpd,
// chrony, systemd-timesyncd, SNTP libraries) refuses a reply with leap
// indicator 3 or stratum 16, so no one sets their clock from a wrong one.
//
// Malformed requests (shorter than 48 bytes, version 0 or above 4, any
// mode but 3) are dropped without a word. A reply is always exactly 48
// bytes and a request at least 48, so the server never sends more than it
// receives (no amplification); extension fields and MACs of a longer
// request are ignored and the reply is unauthenticated. Each source
// address has a token bucket (8 requests at once, then one a second: ntpd's
// and chrony's burst starts send 4 to 8 quick requests, their normal poll
// is 64 s or more); requests over it are dropped, not answered with a RATE
// kiss-o'-death, which would be one more packet to a possibly forged
// source. The table of sources is bounded (4096): when it is full, the
// sources whose buckets are full again are forgotten, and if none are, an
// arbitrary eighth of them is (such a source gets a fresh burst: still no
// amplification).
package clock
