package outside

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/netstack/portmap"
	"github.com/pic-cell/cell/netstack/uplink"
	"github.com/pic-cell/cell/storage"
)

// Status is GET /api/network.
type Status struct {
	Interfaces    []Interface  `json:"interfaces"`
	Uplink        UplinkView   `json:"uplink"`
	PublicAddress PublicView   `json:"public_address"`
	Endpoint      EndpointView `json:"endpoint"`
	PortMapping   PortMapView  `json:"port_mapping"`
	DDNS          DDNSView     `json:"ddns"`
	// ResendConfigs are the peers whose configs name another endpoint than
	// the cell's now: send each its config (QR or file) again.
	ResendConfigs []string `json:"resend_configs"`
	// Warnings are every reason, in plain words, why a phone outside the
	// home may not reach the cell.
	Warnings []string `json:"warnings"`
}

// Interface is one network interface of the cell.
type Interface struct {
	Name  string   `json:"name"`
	Up    bool     `json:"up"`
	MTU   int      `json:"mtu"`
	MAC   string   `json:"mac,omitempty"`
	Addrs []string `json:"addresses"`
}

// UplinkView is the uplink: the default route's interface and gateway.
type UplinkView struct {
	Interface string   `json:"interface"`
	Gateway   string   `json:"gateway,omitempty"`
	Addrs     []string `json:"addresses"`
	Kind      string   `json:"kind,omitempty"` // the first IPv4 address's: public, private, cgnat, ...
	Error     string   `json:"error,omitempty"`
}

// PublicView is the public address and where it came from.
type PublicView struct {
	Addrs     []string   `json:"addresses"`
	Source    string     `json:"source,omitempty"` // uplink, router, url
	CGNAT     bool       `json:"cgnat"`
	Error     string     `json:"error,omitempty"`
	CheckedAt *time.Time `json:"checked_at,omitempty"`
}

// EndpointView is what phones dial, and what is wrong with it.
type EndpointView struct {
	Endpoint   string   `json:"endpoint"` // host:port, as in the configs
	Host       string   `json:"host"`
	Port       int      `json:"port"`
	Source     string   `json:"source"` // "setting" (network.endpoint) or "domain"
	ResolvesTo []string `json:"resolves_to,omitempty"`
	Warnings   []string `json:"warnings"`
}

// PortMapView is the port mapping on the home router.
type PortMapView struct {
	Enabled   bool       `json:"enabled"`
	State     string     `json:"state"` // off, trying, mapped, failing
	Protocol  string     `json:"protocol,omitempty"`
	Internal  string     `json:"internal,omitempty"`
	External  string     `json:"external,omitempty"` // the router's public address and port
	Expires   *time.Time `json:"expires,omitempty"`
	CGNAT     bool       `json:"cgnat"`
	Reason    string     `json:"reason,omitempty"`
	LastError string     `json:"last_error,omitempty"`
}

// DDNSView is the dynamic DNS state: the section (no secret), whether a
// secret is stored, and the keeper's progress.
type DDNSView struct {
	DDNS
	SecretSet  bool       `json:"secret_set"`
	Name       string     `json:"name,omitempty"` // the name kept up to date
	State      string     `json:"state"`          // off, pending, ok, failing, refused
	Addrs      []string   `json:"addresses"`      // what the provider was last told
	LastUpdate *time.Time `json:"last_update,omitempty"`
	LastError  string     `json:"last_error,omitempty"`
	Failures   int        `json:"failures"`
	NextTry    *time.Time `json:"next_try,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// Status gathers the view; the endpoint's name is looked up (bounded by a
// short deadline).
func (x *Outside) Status(ctx context.Context) (Status, error) {
	st := Status{Interfaces: []Interface{}, ResendConfigs: []string{}, Warnings: []string{}}
	doc, err := x.config()
	if err != nil {
		return st, err
	}
	if ifs, err := x.o.Interfaces(); err == nil {
		for _, i := range ifs {
			v := Interface{Name: i.Name, Up: i.Flags&net.FlagUp != 0, MTU: i.MTU, MAC: i.HardwareAddr.String(), Addrs: []string{}}
			if as, err := i.Addrs(); err == nil {
				for _, a := range as {
					v.Addrs = append(v.Addrs, a.String())
				}
			}
			st.Interfaces = append(st.Interfaces, v)
		}
	}
	st.DDNS = x.ddnsView(doc)
	x.mu.Lock()
	up, upErr, pub, checked, m := x.up, x.upErr, x.public, x.checkedAt, x.mapper
	x.mu.Unlock()

	st.Uplink = UplinkView{Interface: up.Interface, Addrs: []string{}, Error: upErr}
	if up.Gateway.IsValid() {
		st.Uplink.Gateway = up.Gateway.String()
	}
	for _, p := range up.Addrs {
		st.Uplink.Addrs = append(st.Uplink.Addrs, p.String())
		if st.Uplink.Kind == "" && p.Addr().Is4() {
			st.Uplink.Kind = uplink.Classify(p.Addr())
		}
	}
	st.PublicAddress = PublicView{Addrs: fmtAddrs(pub.Addrs), Source: pub.Source, CGNAT: pub.CGNAT, Error: pub.Error, CheckedAt: timePtr(checked)}

	var reach Reach
	doc.Decode("outside", &reach)
	st.PortMapping = PortMapView{Enabled: reach.PortMapping, State: "off"}
	if reach.PortMapping && x.o.NewPortMapper == nil {
		st.PortMapping.Reason = "this cell runs without a port mapper (development mode)"
	}
	if m != nil {
		ps := m.Status()
		st.PortMapping.State, st.PortMapping.CGNAT, st.PortMapping.Reason, st.PortMapping.LastError = ps.State, ps.CGNAT, ps.Reason, ps.LastError
		if ps.Mapping != nil {
			st.PortMapping.Protocol = string(ps.Mapping.Protocol)
			st.PortMapping.Internal = ps.Mapping.Internal.String()
			st.PortMapping.External = ps.Mapping.External.String()
			st.PortMapping.Expires = timePtr(ps.Mapping.Expires)
		}
	}

	ep := doc.Endpoint()
	st.Endpoint = EndpointView{Endpoint: ep.String(), Host: ep.Host, Port: ep.Port, Source: "domain", Warnings: []string{}}
	if doc.Network().Endpoint != "" {
		st.Endpoint.Source = "setting"
	}
	st.Endpoint.ResolvesTo, st.Endpoint.Warnings = x.checkEndpoint(ctx, ep.Host, pub)

	if x.o.OutdatedConfigs != nil {
		if names, err := x.o.OutdatedConfigs(); err == nil && len(names) > 0 {
			st.ResendConfigs = names
		}
	}
	st.Warnings = append(st.Warnings, st.Endpoint.Warnings...)
	if pub.Error != "" {
		st.Warnings = append(st.Warnings, pub.Error)
	}
	if st.PortMapping.CGNAT && !pub.CGNAT {
		st.Warnings = append(st.Warnings, st.PortMapping.Reason)
	}
	if reach.PortMapping && st.PortMapping.State == portmap.StateFailing && st.PortMapping.Reason != "" && !strings.Contains(pub.Error, st.PortMapping.Reason) {
		st.Warnings = append(st.Warnings, "port mapping: "+st.PortMapping.Reason)
	}
	if m != nil {
		if ps := m.Status(); ps.Mapping != nil && int(ps.Mapping.External.Port()) != ep.Port {
			st.Warnings = append(st.Warnings, fmt.Sprintf("the home router forwards outside port %d to the cell, but the devices dial port %d: set network.endpoint to %s", ps.Mapping.External.Port(), ep.Port, config.Endpoint{Host: ep.Host, Port: int(ps.Mapping.External.Port())}))
		}
	}
	if st.DDNS.State == "failing" || st.DDNS.State == "refused" {
		st.Warnings = append(st.Warnings, "dynamic DNS: "+st.DDNS.LastError)
	}
	if len(st.ResendConfigs) > 0 {
		st.Warnings = append(st.Warnings, fmt.Sprintf("the endpoint changed: %d device(s) still have a config naming the old one and must be sent theirs again", len(st.ResendConfigs)))
	}
	return st, nil
}

// checkEndpoint resolves a name endpoint and says what is wrong with it.
func (x *Outside) checkEndpoint(ctx context.Context, host string, pub uplink.Public) ([]string, []string) {
	warn := []string{}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err := x.o.Resolve(rctx, host)
		cancel()
		if err != nil || len(res) == 0 {
			return nil, append(warn, fmt.Sprintf("the endpoint %s does not resolve: phones cannot find the cell (set up dynamic DNS, or point the name at the home's public address)", host))
		}
		for _, a := range res {
			addrs = append(addrs, a.Unmap())
		}
	}
	for _, a := range addrs {
		if k := uplink.Classify(a); k != uplink.KindPublic {
			warn = append(warn, fmt.Sprintf("the endpoint %s is a %s address (%s): phones outside the home cannot reach it", host, k, a))
		}
	}
	if len(pub.Addrs) > 0 {
		match := false
		for _, a := range addrs {
			if slices.Contains(pub.Addrs, a) {
				match = true
			}
		}
		if !match {
			warn = append(warn, fmt.Sprintf("the endpoint %s points at %s, but the home's public address is %s", host, joinAddrs(addrs), joinAddrs(pub.Addrs)))
		}
	}
	return fmtAddrs(addrs), warn
}

func joinAddrs(as []netip.Addr) string {
	s := ""
	for i, a := range as {
		if i > 0 {
			s += ", "
		}
		s += a.String()
	}
	return s
}

// ddnsView is the DDNS view: the stored section, and the state of the keeper
// the loop runs for it ("pending" until the loop has taken a change up).
func (x *Outside) ddnsView(doc config.Doc) DDNSView {
	var d DDNS
	if doc != nil {
		doc.Decode("ddns", &d)
	}
	if d.Provider == "" {
		d.Provider = ProviderOff
	}
	v := DDNSView{DDNS: d, State: "off", Addrs: []string{}}
	secret, _ := x.secret()
	v.SecretSet = secret != ""
	if d.Provider == ProviderOff {
		return v
	}
	if doc != nil {
		v.Name = d.name(doc.Endpoint().Host)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.ddnsCfg != d || x.ddnsName != v.Name || x.keeperSecret != secret {
		v.State = "pending"
		return v
	}
	if x.ddnsErr != "" {
		v.State, v.LastError = "failing", x.ddnsErr
	}
	if x.keeper != nil {
		ks := x.keeper.Status()
		v.State, v.LastError, v.Failures = ks.State, ks.LastError, ks.Failures
		v.Addrs = fmtAddrs(ks.Addrs)
		v.LastUpdate, v.NextTry = timePtr(ks.LastUpdate), timePtr(ks.NextTry)
	}
	return v
}

// DDNSStatus is GET /api/network/ddns.
func (x *Outside) DDNSStatus() DDNSView {
	doc, _ := x.config()
	return x.ddnsView(doc)
}

// CheckDDNS is the ddns part of /api/status.
func (x *Outside) CheckDDNS(context.Context) storage.PartStatus {
	v := x.DDNSStatus()
	switch v.State {
	case "off":
		return storage.PartStatus{State: storage.StateNotConfigured, Reason: "no dynamic DNS provider is set"}
	case "ok":
		return storage.PartStatus{State: storage.StateOK}
	case "pending":
		return storage.PartStatus{State: storage.StateOK, Reason: "waiting for the public address"}
	default:
		return storage.PartStatus{State: storage.StateDegraded, Reason: v.LastError}
	}
}
