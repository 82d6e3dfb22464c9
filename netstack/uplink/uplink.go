// Package uplink tells the cell what its way to the internet looks like and
// when that changes: the interface of the default route, its gateway, its
// addresses, and the cell's public address as the outside sees it.
//
// # Watching
//
// Watch (and WatchNS, for a given network namespace) subscribes to the
// kernel's rtnetlink groups for IPv4 and IPv6 addresses, IPv4 and IPv6
// routes and links, through github.com/vishvananda/netlink. Nothing polls:
// a DHCP renewal that changes the address, a new default route or a cable
// pulled out is heard the moment the kernel applies it. Route messages are
// kept only for default routes (0.0.0.0/0 and ::/0, any table): the routes
// the WireGuard tunnel and the LAN add do not change the uplink, and would
// otherwise wake every listener for nothing. Address and link messages are
// all kept (they are rare, and any of them can change which address is the
// uplink's).
//
// A change rarely comes alone (a DHCP client replaces the address, then
// the routes; a link going down takes its routes and addresses with it), so
// Watch debounces: the first message of a burst starts a 200 ms window, and
// one notification is sent when it closes, however many messages came in
// between. The channel has capacity 1 and Watch never blocks on it: a
// listener that is slow to read finds one pending notification, never a
// queue. A listener reads the State again on each notification; Watch does
// not say what changed.
//
// When a subscription fails (the kernel's socket buffer overflowed, the
// socket was closed), Watch subscribes again after a second and sends one
// notification, since changes may have been missed meanwhile. It stops when
// its context ends and closes the channel then.
//
// # Reading
//
// Read asks the kernel (netlink, never a tool) for the main routing table's
// default route with the lowest metric, IPv4 first and IPv6 when there is no
// IPv4 default, and for the global addresses of its interface. Classify sorts
// addresses into public, private, CGNAT and the other special ranges.
//
// 198.18.0.0/15 (RFC 2544's benchmarking range) and 2001:2::/48 (RFC 5180's)
// count as public: they are never routed on the real internet, and the
// cell's tests use them as "the internet" in their network namespaces, so a
// cell in a test sees what a cell with a real public address sees.
//
// # The public address
//
// Discover finds the address phones must dial. The uplink's own IPv4 address
// when it is public (a cell on a modem, or a VPS); otherwise the external
// address the home router reports (the port mapper's, passed in as a func so
// this package stays free of UPnP and NAT-PMP); otherwise an HTTP "what is my
// address" service from the configuration (GET, the body is the address as
// text, as api.ipify.org, ifconfig.me and icanhazip.com answer). IPv6 needs
// none of that: a home router does not translate IPv6, so the uplink's own
// global IPv6 addresses are the public ones.
//
// Both http and https URLs are accepted. https is the better choice (an
// attacker on the path cannot change the answer), but the answer is not a
// secret and a wrong one only makes the cell's name point elsewhere until the
// next check, which someone on the path could cause anyway by dropping the
// cell's packets. The answer is read up to 8 KiB; anything that is not one
// public address (HTML, an error page, a private address) is an error with a
// short quote of what came, never a guess.
//
// When the router's external address or the uplink's own is in 100.64.0.0/10
// the provider runs carrier-grade NAT: nothing opens a port there, and the
// cell cannot be reached from outside over IPv4 without a relay. Discover
// says so in Public.CGNAT and Public.Error rather than report an address
// nobody can dial.
package uplink
