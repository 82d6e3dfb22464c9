// Package system_test proves the kernel-facing parts together with real
// WireGuard clients in network namespaces: a cell assembled from
// netstack/wireguard (TUN mode), netstack/links and netstack/firewall, two
// clients, and a server on "the internet". It also holds the data-plane and
// firewall benchmarks.
package system_test
