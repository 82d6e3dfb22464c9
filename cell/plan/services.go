package plan

import (
	"net/netip"
	"path/filepath"

	"github.com/pic-cell/cell/netstack/bridge"
	"github.com/pic-cell/cell/netstack/dns"
	"github.com/pic-cell/cell/netstack/firewall"
)

// BridgeName is the bridge the cell owns for its service containers.
const BridgeName = "pic-svc0"

// DefaultServicesSubnet is where service containers get their addresses
// unless the config's services section names another: inside the cell's
// 10.77.0.0/16, away from the peers' default /24.
const DefaultServicesSubnet = "10.77.250.0/24"

// Service is an installed service as the network needs it: its address on the
// bridge, the name the front serves it under, the ports the front and the
// cell's admin calls reach, and whether it may reach the internet.
type Service struct {
	ID        string
	Subdomain string     // "files": https://files.<domain>
	Addr      netip.Addr // on the bridge
	HTTPPort  int        // what the front proxies to
	Egress    bool
}

// ServicesHost is what the loop learnt of the machine for services: whether
// the bridge part exists, and where the members' network namespaces live.
type ServicesHost struct {
	Bridge   bool
	NetNSDir string // DATA/run/netns: one bind-mounted namespace per service
}

// Gateway is the cell's own address on the services bridge: the subnet's first.
func Gateway(subnet netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(subnet.Masked().Addr().Next(), subnet.Bits())
}

// NetNSPath is the network namespace of service id.
func NetNSPath(dir, id string) string { return filepath.Join(dir, id) }

// buildServices adds the installed services to d: the bridge with a member
// per service, the firewall's services rules, each service's name in the zone
// (the cell's tunnel address: peers reach services only through the front)
// and each service's site on the front.
func buildServices(s Snapshot, d *Desired) {
	if len(s.Services) == 0 && !s.Host.Services.Bridge {
		return
	}
	gw := Gateway(s.ServicesSubnet)
	if s.Host.Services.Bridge {
		bc := bridge.Config{Name: BridgeName, Gateway: gw}
		for _, svc := range s.Services {
			bc.Members = append(bc.Members, bridge.Member{ID: svc.ID, Addr: svc.Addr, NetNS: NetNSPath(s.Host.Services.NetNSDir, svc.ID)})
		}
		d.Bridge = &bc
		if d.Firewall != nil {
			fs := &firewall.Services{Bridge: BridgeName, Subnet: s.ServicesSubnet.Masked(), Gateway: gw.Addr()}
			for _, svc := range s.Services {
				if svc.Egress {
					fs.Egress = append(fs.Egress, svc.Addr)
				}
			}
			d.Firewall.Services = fs
		}
	}
	for _, svc := range s.Services {
		if d.DNS != nil && s.Domain != "" {
			d.DNS.Zone.Records = append(d.DNS.Zone.Records, dns.Record{Name: svc.Subdomain, Type: "A", Value: s.Subnets.Cell4.String()})
			if s.Subnets.Cell6.IsValid() {
				d.DNS.Zone.Records = append(d.DNS.Zone.Records, dns.Record{Name: svc.Subdomain, Type: "AAAA", Value: s.Subnets.Cell6.String()})
			}
		}
		if d.Front != nil && s.Domain != "" && s.Host.Services.Bridge {
			d.Front.Sites = append(d.Front.Sites, FrontSite{Host: svc.Subdomain + "." + s.Domain,
				Upstream: netip.AddrPortFrom(svc.Addr, uint16(svc.HTTPPort))})
		}
	}
}
