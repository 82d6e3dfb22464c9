// Package probe runs the network diagnostics an admin asks for from the
// UI: a ping, a DNS query, an HTTP GET or a port probe of a target, in Go,
// never through a shell, each with a short deadline.
//
// # What is refused, and why
//
// Every request is checked before anything is sent (Validate), and every
// address is checked again right before it is used, so a name that
// resolves, or is re-resolved (DNS rebinding), to a forbidden address is
// refused without a packet to it:
//
//   - unknown kinds, a proto on anything but a port test, a record type on
//     anything but a DNS test, unknown record types;
//   - empty or over-long targets (253 characters for a name, 2048 for a
//     URL);
//   - spaces, control characters (NUL and newlines among them), "$(", ";",
//     backquotes and anything outside ASCII, anywhere. Nothing here reaches
//     a shell, but a target is also shown back in the UI and the logs; an
//     internationalised name is written in its ASCII form (xn--…);
//   - host names that are not names: labels of letters, digits, "-" and "_"
//     (SRV and TXT names use it) of at most 63 characters, or IP literals
//     without a zone;
//   - addresses that are not out there: unspecified and 0.0.0.0/8 (Linux
//     connects those to the machine itself), loopback, link-local
//     (169.254.0.0/16, fe80::/10: a router's or a cloud's metadata service),
//     multicast, the broadcast address 255.255.255.255, and whatever the
//     caller's Forbidden adds (the cell's own API addresses and ports);
//   - for http: a scheme other than http and https, user information in the
//     URL (passwords would end up in logs), a port out of range, and a
//     redirect to anything of the above. Redirects are checked one by one
//     (at most five), and the address actually dialled is checked as well
//     (a net.Dialer Control hook) in case a name resolves differently the
//     second time;
//   - for port: a port outside 1..65535, a proto other than tcp and udp.
//
// A name that resolves to several addresses is refused when any of them is
// forbidden: probing the allowed ones would still tell the admin something
// about a name that points inside.
//
// # Kinds
//
// ping sends three ICMP echo requests one after the other, each waiting up
// to a third of the deadline, and reports the replies, the loss and the
// round trips; it is OK when one reply came. It first opens an unprivileged
// ICMP datagram socket ("udp4"/"udp6", allowed when the process's group is
// in net.ipv4.ping_group_range; the kernel then matches replies to the
// socket), and falls back to a raw socket ("ip4:icmp", "ip6:ipv6-icmp"),
// which the cell has as root (CAP_NET_RAW) on the appliance; with a raw
// socket replies are matched by identifier, sequence number, payload and
// source, and a "destination unreachable" about our echo is reported.
//
// dns asks the target name with github.com/miekg/dns, record type A unless
// Type says otherwise, of the servers DNSServer gives (the ones in
// /etc/resolv.conf without it) in order until one answers, over UDP and
// again over TCP when the answer is truncated. A target "name@server" asks
// the given server (an IP address, with a port or not) instead: it is an
// address like any other and checked as such; the configured servers are
// the cell's own and are not. For type PTR an IP address as the name is
// turned into its reverse name. It is OK when the answer is NOERROR with at
// least one record.
//
// http sends a GET without cookies, proxy or body, reads at most 64 KiB of
// the answer and reports its status and the time to its headers. It is OK
// when the final status is below 400; a 404 is an answer, but not a
// success.
//
// port connects over TCP (OK: connected; "connection refused": closed; no
// answer: filtered), or over UDP sends a datagram ("\n"), again after a
// second, and waits for anything back: a reply is OK, an ICMP port
// unreachable says closed, and silence can only mean "open or filtered"
// (UDP services need not answer a stray datagram): OK is false then and the
// detail says so.
//
// # Bounds
//
// At most MaxConcurrent tests run at once (4 by default); beyond that Run
// returns ErrBusy at once rather than queueing. Each test has its own
// deadline (5 s by default). A failed probe is a Result with OK false and
// the reason in plain words; an error from Run is for a request that is
// bad or forbidden (ErrInvalid) or for too many at once (ErrBusy).
package probe
