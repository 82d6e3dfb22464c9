package cell

import (
	"context"

	"github.com/pic-cell/cell/cell/plan"
	"github.com/pic-cell/cell/netstack/wireguard"
)

// offline is the network of a cell run without one (tests of the API alone):
// changes are stored and nothing is applied.
type offline struct{}

func (offline) Sync(context.Context) error            { return nil }
func (offline) Live() plan.Live                       { return plan.Live{} }
func (offline) Stats() map[string]wireguard.PeerStats { return map[string]wireguard.PeerStats{} }
