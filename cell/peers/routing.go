package peers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/storage"
)

// Routing: NAT, per-peer policy and port forwards. Policy changes apply as
// set elements (constant cost); forwards are rules, so they rebuild the
// firewall table in one batch.

// RoutingView is GET /api/routing.
type RoutingView struct {
	NAT      NATView          `json:"nat"`
	Peers    []PeerPolicyView `json:"peers"`
	Forwards []Forward        `json:"forwards"`
}

// NATView says how peers reach the internet.
type NATView struct {
	Enabled      bool     `json:"enabled"` // masquerade on a WAN interface
	WANInterface string   `json:"wan_interface"`
	Masquerade   []string `json:"masquerade"` // the tunnel subnets masqueraded
	Firewall     bool     `json:"firewall"`   // the cell programs nftables (tun mode)
}

// PeerPolicyView is one peer's policy.
type PeerPolicyView struct {
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
	Policy
}

// Policy is where a peer's traffic may go: "allow" or "deny" each. The API has
// its own types (here and Forward), so that a change of the stored records'
// shape never changes an answer by accident.
type Policy struct {
	Internet string `json:"internet"`
	LAN      string `json:"lan"`
	Peers    string `json:"peers"`
}

func policyOf(p storage.PeerPolicy) Policy {
	return Policy{Internet: p.Internet, LAN: p.LAN, Peers: p.Peers}
}

// Forward is a port forward from the WAN to a peer, as the API shows it.
type Forward struct {
	Proto     string    `json:"proto"`
	Port      uint16    `json:"port"`
	Peer      string    `json:"peer"`
	ToPort    uint16    `json:"to_port"`
	CreatedAt time.Time `json:"created_at"`
}

func forwardOf(f storage.Forward) Forward {
	return Forward{Proto: f.Proto, Port: f.Port, Peer: f.Peer, ToPort: f.ToPort, CreatedAt: f.CreatedAt}
}

// PolicyChange is the body of PUT /api/routing/peers/<name>; absent fields stay.
type PolicyChange struct {
	Internet *string `json:"internet"`
	LAN      *string `json:"lan"`
	Peers    *string `json:"peers"`
}

// NewForward is the body of POST /api/routing/forwards.
type NewForward struct {
	Proto  string `json:"proto"`   // required: tcp or udp
	Port   int    `json:"port"`    // required: the WAN port
	Peer   string `json:"peer"`    // required: the peer's name
	ToPort int    `json:"to_port"` // optional: the peer's port, default Port
}

// ForwardRef names a forward: DELETE /api/routing/forwards/<proto>/<port>.
type ForwardRef struct {
	Proto string `json:"proto"`
	Port  int    `json:"port"`
}

// Routing reports NAT, every peer's policy and the forwards.
func (c *Peers) Routing() (RoutingView, error) {
	v := RoutingView{Peers: []PeerPolicyView{}, NAT: NATView{Masquerade: []string{}}}
	sn, _, err := c.subnets()
	if err != nil {
		return v, err
	}
	live := c.net.Live()
	v.NAT.WANInterface, v.NAT.Firewall = live.WAN, live.Firewall
	v.NAT.Enabled = v.NAT.Firewall && v.NAT.WANInterface != ""
	if v.NAT.Enabled {
		v.NAT.Masquerade = append(v.NAT.Masquerade, sn.V4.String())
		if sn.V6.IsValid() {
			v.NAT.Masquerade = append(v.NAT.Masquerade, sn.V6.String())
		}
	}
	peers, err := c.db.Peers().List()
	if err != nil {
		return v, err
	}
	for _, p := range peers {
		v.Peers = append(v.Peers, PeerPolicyView{Name: p.Name, Enabled: p.Enabled, Policy: policyOf(p.Policy)})
	}
	fwds, err := c.db.Forwards().List()
	v.Forwards = make([]Forward, 0, len(fwds))
	for _, f := range fwds {
		v.Forwards = append(v.Forwards, forwardOf(f))
	}
	return v, err
}

func checkPolicy(field string, v *string) error {
	if v != nil && *v != storage.Allow && *v != storage.Deny {
		return fault.Invalid("invalid_policy", "%s must be \"allow\" or \"deny\", not %s", field, names.Quote(*v))
	}
	return nil
}

// SetPeerPolicy changes where a peer's traffic may go.
func (c *Peers) SetPeerPolicy(ctx context.Context, name string, ch PolicyChange, audit storage.Entry) (PeerPolicyView, error) {
	if err := c.peerName(name); err != nil {
		return PeerPolicyView{}, err
	}
	for f, v := range map[string]*string{"internet": ch.Internet, "lan": ch.LAN, "peers": ch.Peers} {
		if err := checkPolicy(f, v); err != nil {
			return PeerPolicyView{}, err
		}
	}
	if ch.Internet == nil && ch.LAN == nil && ch.Peers == nil {
		return PeerPolicyView{}, fault.Invalid("empty_change", "give at least one of internet, lan, peers")
	}
	p, err := c.db.Peers().Update(name, func(p *storage.Peer) error {
		if ch.Internet != nil {
			p.Policy.Internet = *ch.Internet
		}
		if ch.LAN != nil {
			p.Policy.LAN = *ch.LAN
		}
		if ch.Peers != nil {
			p.Policy.Peers = *ch.Peers
		}
		audit.TargetType, audit.TargetID, audit.Result = "peer", name, "ok"
		audit.Details = map[string]string{"internet": p.Policy.Internet, "lan": p.Policy.LAN, "peers": p.Policy.Peers}
		return nil
	}, func(tx *storage.Tx) error { return c.audit.Within(audit)(tx) })
	if err != nil {
		return PeerPolicyView{}, peerErr(name, err)
	}
	if err := c.applied(ctx, "the policy"); err != nil {
		return PeerPolicyView{}, err
	}
	return PeerPolicyView{Name: p.Name, Enabled: p.Enabled, Policy: policyOf(p.Policy)}, nil
}

// reservedPorts are the cell's own ports on the WAN side, which no forward
// may take: DNS and the ports it listens on (own: the API's and the front's,
// from the daemon's listen addresses; nil: the defaults 80, 443, 3000) on TCP,
// DNS and WireGuard (its configured port) on UDP.
func reservedPorts(sn config.Subnets, own []int) map[string][]int {
	if own == nil {
		own = []int{80, 443, 3000}
	}
	return map[string][]int{"tcp": append([]int{53}, own...), "udp": {53, sn.Port}}
}

func checkForwardRef(proto string, port int) error {
	if proto != "tcp" && proto != "udp" {
		return fault.Invalid("invalid_proto", "proto must be tcp or udp, not %s", names.Quote(proto))
	}
	if port < 1 || port > 65535 {
		return fault.Invalid("invalid_port", "port must be from 1 to 65535 (got %d)", port)
	}
	return nil
}

// AddForward forwards a WAN port to a peer's port.
func (c *Peers) AddForward(ctx context.Context, in NewForward, audit storage.Entry) (Forward, error) {
	if err := checkForwardRef(in.Proto, in.Port); err != nil {
		return Forward{}, err
	}
	if in.ToPort == 0 {
		in.ToPort = in.Port
	}
	if in.ToPort < 1 || in.ToPort > 65535 {
		return Forward{}, fault.Invalid("invalid_to_port", "to_port must be from 1 to 65535 (got %d)", in.ToPort)
	}
	if !names.ValidLabel(in.Peer) {
		return Forward{}, fault.Invalid("invalid_peer", "peer must be a peer's name (got %s)", names.Quote(in.Peer))
	}
	sn, _, err := c.subnets()
	if err != nil {
		return Forward{}, err
	}
	if live := c.net.Live(); live.Mode != "" && !live.Firewall {
		return Forward{}, fault.Errorf(fault.ErrConflict, "forwards_need_tun", "port forwards need the kernel firewall: this cell runs WireGuard in %s mode (start it with -wg-mode tun)", live.Mode)
	}
	for _, p := range reservedPorts(sn, c.ownTCP)[in.Proto] {
		if p == in.Port {
			return Forward{}, fault.Errorf(fault.ErrConflict, "port_reserved", "%s port %d is the cell's own", in.Proto, in.Port)
		}
	}
	f := storage.Forward{Proto: in.Proto, Port: uint16(in.Port), Peer: in.Peer, ToPort: uint16(in.ToPort), CreatedAt: c.now().UTC()}
	audit.TargetType, audit.TargetID, audit.Result = "forward", fmt.Sprintf("%s/%d", f.Proto, f.Port), "ok"
	audit.Details = map[string]string{"peer": f.Peer, "to_port": fmt.Sprint(f.ToPort)}
	err = c.db.Forwards().Create(f, c.audit.Within(audit))
	switch {
	case errors.Is(err, storage.ErrExists):
		return forwardOf(f), fault.Errorf(fault.ErrConflict, "port_taken", "%s port %d is already forwarded", in.Proto, in.Port)
	case errors.Is(err, storage.ErrNotFound):
		return forwardOf(f), fault.Invalid("invalid_peer", "no peer named %s", names.Quote(in.Peer))
	case err != nil:
		return forwardOf(f), err
	}
	if err := c.applied(ctx, "the forward"); err != nil {
		return forwardOf(f), err
	}
	return forwardOf(f), nil
}

// DeleteForward removes a forward.
func (c *Peers) DeleteForward(ctx context.Context, ref ForwardRef, audit storage.Entry) error {
	if err := checkForwardRef(ref.Proto, ref.Port); err != nil {
		return err
	}
	audit.TargetType, audit.TargetID, audit.Result = "forward", fmt.Sprintf("%s/%d", ref.Proto, ref.Port), "ok"
	if _, err := c.db.Forwards().Delete(ref.Proto, uint16(ref.Port), c.audit.Within(audit)); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fault.Errorf(fault.ErrNotFound, "forward_not_found", "no forward of %s port %d", ref.Proto, ref.Port)
		}
		return err
	}
	return c.applied(ctx, "the deletion")
}
