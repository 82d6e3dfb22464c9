package cell

import (
	"context"

	"github.com/pic-cell/cell/cell/dns"
	"github.com/pic-cell/cell/cell/peers"
	"github.com/pic-cell/cell/cell/plan"
	nsdns "github.com/pic-cell/cell/netstack/dns"
	"github.com/pic-cell/cell/netstack/wireguard"
)

// network is the reconcile loop as the capabilities see it.
type network interface {
	peers.Network
	dns.Server
}

// offline is the network of a cell run without one (tests of the API alone):
// changes are stored and nothing is applied.
type offline struct{}

func (offline) Sync(context.Context) error            { return nil }
func (offline) Live() plan.Live                       { return plan.Live{} }
func (offline) Stats() map[string]wireguard.PeerStats { return map[string]wireguard.PeerStats{} }
func (offline) Rebuild(context.Context) error         { return nil }
func (offline) DNSStats() nsdns.Stats                 { return nsdns.Stats{} }
