// Package config is the cell's configuration document: one JSON object of
// sections ("cell", "network", "health", and one per capability that adds
// settings), each section owned by one capability that registers its default
// and its validator. It holds no secret (keys and passwords live in the vault
// and the users bucket).
//
// It is a leaf: the sections several capabilities read (Cell, Network) are
// typed here so that none of them imports another to read them; the document
// machinery (Registry, Doc) lets a new capability add its section without
// editing a central struct.
package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/storage"
)

// Cell names the cell.
type Cell struct {
	Name   string `json:"name"`   // required: a DNS label, also the hostname
	Domain string `json:"domain"` // required: the cell's DNS name (and by default the peers' Endpoint)
}

// Network is the tunnel's addressing.
type Network struct {
	WGPort       int    `json:"wg_port"`       // required, 1–65535
	SubnetV4     string `json:"subnet_v4"`     // required, a private IPv4 prefix /16–/29
	SubnetV6     string `json:"subnet_v6"`     // a ULA /64 (fd00::/8)
	WANInterface string `json:"wan_interface"` // "auto" (the default route's) or a name
	// Endpoint is what the peers' configs dial: a name or an address, with
	// or without a port ("home.example.org", "198.51.100.7:51820",
	// "[2001:db8::7]:4500"). Empty means the cell's domain; no port means
	// wg_port. It differs from the domain when the public name is another
	// (a DDNS name) or the home router forwards another outside port.
	Endpoint string `json:"endpoint,omitempty"`
}

// Endpoint is the address phones dial: host and port.
type Endpoint struct {
	Host string // a DNS name or an IP address (no brackets)
	Port int
}

// String is host:port, with brackets around an IPv6 address: the form of a
// WireGuard config's Endpoint line.
func (e Endpoint) String() string {
	if a, err := netip.ParseAddr(e.Host); err == nil {
		return netip.AddrPortFrom(a, uint16(e.Port)).String()
	}
	return e.Host + ":" + strconv.Itoa(e.Port)
}

// Addr is the endpoint's host as an address; ok is false when it is a name.
func (e Endpoint) Addr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(e.Host)
	return a, err == nil
}

// EndpointOf is the endpoint a cell's peers dial: network.endpoint, else the
// domain, on wg_port unless the endpoint names a port. The sections are
// assumed valid.
func EndpointOf(c Cell, n Network) Endpoint {
	e, err := parseEndpoint(n.Endpoint, n.WGPort)
	if err != nil || e.Host == "" {
		return Endpoint{Host: c.Domain, Port: n.WGPort}
	}
	return e
}

// parseEndpoint reads "host", "host:port", "a.b.c.d", "a.b.c.d:port",
// "v6" or "[v6]:port"; an empty string is an empty Endpoint.
func parseEndpoint(s string, defPort int) (Endpoint, error) {
	if s == "" {
		return Endpoint{}, nil
	}
	bad := func() (Endpoint, error) {
		return Endpoint{}, fault.Invalid("invalid_endpoint", "endpoint must be a DNS name or an IP address, optionally with :port (1–65535), such as home.example.org or 198.51.100.7:51820 (got %s)", names.Quote(s))
	}
	if a, err := netip.ParseAddr(s); err == nil { // a bare address, IPv6 included
		if a.Zone() != "" {
			return bad()
		}
		return Endpoint{Host: a.String(), Port: defPort}, nil
	}
	host, port := s, defPort
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return bad()
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
			return Endpoint{}, fault.Invalid("invalid_endpoint_port", "the endpoint's port must be a number from 1 to 65535 (got %s)", names.Quote(p))
		}
		host, port = h, n
	}
	if a, err := netip.ParseAddr(host); err == nil {
		// Brackets belong around an IPv6 address, and only there.
		if a.Zone() != "" || a.Is6() != strings.HasPrefix(s, "[") {
			return bad()
		}
		return Endpoint{Host: a.String(), Port: port}, nil
	}
	if strings.HasPrefix(s, "[") || !names.ValidDomain(host) {
		return bad()
	}
	return Endpoint{Host: host, Port: port}, nil
}

// Validate checks the cell section.
func (cc Cell) Validate() error {
	if err := names.CheckLabel("name", cc.Name); err != nil {
		return err
	}
	if !names.ValidDomain(cc.Domain) {
		return fault.Invalid("invalid_domain", "domain must be a DNS name such as home.example.org (got %s)", names.Quote(cc.Domain))
	}
	return nil
}

// Validate checks the network section.
func (n Network) Validate() error {
	if n.WGPort < 1 || n.WGPort > 65535 {
		return fault.Invalid("invalid_wg_port", "wg_port must be a port number from 1 to 65535 (got %d)", n.WGPort)
	}
	p4, err := netip.ParsePrefix(n.SubnetV4)
	if err != nil || !p4.Addr().Is4() || p4.Masked() != p4 || !p4.Addr().IsPrivate() || p4.Bits() < 16 || p4.Bits() > 29 {
		return fault.Invalid("invalid_subnet_v4", "subnet_v4 must be a private IPv4 network between /16 and /29 written with its network address, such as 10.77.0.0/24 (got %s)", names.Quote(n.SubnetV4))
	}
	p6, err := netip.ParsePrefix(n.SubnetV6)
	if err != nil || !p6.Addr().Is6() || p6.Addr().Is4In6() || p6.Bits() != 64 || p6.Masked() != p6 || p6.Addr().As16()[0] != 0xfd {
		return fault.Invalid("invalid_subnet_v6", "subnet_v6 must be a unique local IPv6 /64 in fd00::/8, such as fd12:3456:789a:1::/64 (got %s)", names.Quote(n.SubnetV6))
	}
	if n.WANInterface != "auto" && !names.ValidInterface(n.WANInterface) {
		return fault.Invalid("invalid_wan_interface", "wan_interface must be \"auto\" or an interface name of 1–15 of A-Z, a-z, 0-9, '_', '.', '-' (got %s)", names.Quote(n.WANInterface))
	}
	if _, err := parseEndpoint(n.Endpoint, n.WGPort); err != nil {
		return err
	}
	return nil
}

// Subnets are the tunnel networks of a Network section and the cell's own
// address in each (the first host address).
type Subnets struct {
	V4, V6       netip.Prefix // V6 is invalid when the cell has no IPv6 tunnel
	Cell4, Cell6 netip.Addr
	Port         int
}

// Subnets parses the section's prefixes.
func (n Network) Subnets() (Subnets, error) {
	var s Subnets
	var err error
	if s.V4, err = netip.ParsePrefix(n.SubnetV4); err != nil {
		return s, err
	}
	s.V4 = s.V4.Masked()
	s.Cell4 = s.V4.Addr().Next()
	if n.SubnetV6 != "" {
		if s.V6, err = netip.ParsePrefix(n.SubnetV6); err != nil {
			return s, err
		}
		s.V6 = s.V6.Masked()
		s.Cell6 = s.V6.Addr().Next()
	}
	s.Port = n.WGPort
	return s, nil
}

// Section is one capability's part of the document.
type Section struct {
	Name string
	// New returns a pointer to the section's type filled with its defaults.
	New func() any
	// Validate checks a decoded value (the pointer New returned).
	Validate func(v any) error
}

// Registry knows every section. The root registers each capability's section
// at start; the settings capability validates a changed document through it.
type Registry struct {
	mu       sync.RWMutex
	sections map[string]Section
}

// NewRegistry returns a registry holding the sections every cell has (cell, network).
func NewRegistry() *Registry {
	r := &Registry{sections: map[string]Section{}}
	r.Register(Section{Name: "cell", New: func() any { return &Cell{} }, Validate: func(v any) error { return v.(*Cell).Validate() }})
	r.Register(Section{Name: "network", New: func() any { return &Network{WANInterface: "auto"} }, Validate: func(v any) error { return v.(*Network).Validate() }})
	return r
}

// Register adds or replaces a section.
func (r *Registry) Register(s Section) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sections[s.Name] = s
}

// Names lists the sections in order.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.sections))
	for n := range r.sections {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Doc is the whole document, a section's JSON under its name.
type Doc map[string]json.RawMessage

// Decode reads section name into dst (a pointer); absent sections leave dst as is.
func (d Doc) Decode(name string, dst any) error {
	raw, ok := d[name]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("config: section %s: %w", name, err)
	}
	return nil
}

// Cell is the cell section.
func (d Doc) Cell() Cell {
	var c Cell
	d.Decode("cell", &c)
	return c
}

// Network is the network section.
func (d Doc) Network() Network {
	n := Network{WANInterface: "auto"}
	d.Decode("network", &n)
	return n
}

// Complete fills every registered section missing from d with its defaults, so
// that GET /api/config shows every setting, also those of capabilities added
// after the cell was set up.
func (r *Registry) Complete(d Doc) Doc {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(Doc, len(r.sections))
	for k, v := range d {
		out[k] = v
	}
	for name, s := range r.sections {
		if _, ok := out[name]; !ok {
			raw, _ := json.Marshal(s.New())
			out[name] = raw
		}
	}
	return out
}

// Validate decodes every section strictly (unknown fields and unknown
// sections are refused) and runs its validator. It returns the document
// re-encoded in canonical form (every field present).
func (r *Registry) Validate(d Doc) (Doc, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(Doc, len(d))
	for name, raw := range d {
		s, ok := r.sections[name]
		if !ok {
			return nil, fault.Invalid("invalid_config", "the config has no section %s (sections: %s)", names.Quote(name), strings.Join(r.namesLocked(), ", "))
		}
		v := s.New()
		if err := exactKeys(name, raw, v); err != nil {
			return nil, err
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return nil, fault.Invalid("invalid_config", "the config does not accept that: %s: %s", name, strings.TrimPrefix(err.Error(), "json: "))
		}
		if err := s.Validate(v); err != nil {
			return nil, err
		}
		out[name], _ = json.Marshal(v)
	}
	return out, nil
}

// exactKeys refuses a setting whose key matches a field only when case is
// ignored (encoding/json would take "Name" for "name", and a merge patch would
// then hold both): every key must be a field's JSON name exactly.
func exactKeys(section string, raw json.RawMessage, v any) error {
	var keys map[string]json.RawMessage
	if json.Unmarshal(raw, &keys) != nil {
		return nil // not an object: the strict decode says why
	}
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	known := map[string]bool{}
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if tag != "" && tag != "-" {
			known[tag] = true
		}
	}
	for k := range keys {
		if known[k] {
			continue
		}
		for f := range known {
			if strings.EqualFold(f, k) {
				return fault.Invalid("invalid_config", "the config has no setting %s.%s; did you mean %s.%s? (names are lower case)", section, names.Quote(k), section, f)
			}
		}
	}
	return nil
}

func (r *Registry) namesLocked() []string {
	out := make([]string, 0, len(r.sections))
	for n := range r.sections {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Load reads the stored document; found is false before setup.
func Load(db *storage.DB) (Doc, bool, error) {
	var d Doc
	found, err := db.Settings().Config(&d)
	return d, found, err
}

// LoadTx reads the stored document inside tx.
func LoadTx(db *storage.DB, tx *storage.Tx) (Doc, bool, error) {
	var d Doc
	found, err := db.Settings().ConfigTx(tx, &d)
	return d, found, err
}

// ErrSetupNeeded is what reading the config answers before setup.
func ErrSetupNeeded() error {
	return fault.Errorf(fault.ErrSetupNeeded, "setup_required", "the cell is not set up yet")
}

// Endpoint is the endpoint the peers' configs dial (EndpointOf the cell and
// network sections).
func (d Doc) Endpoint() Endpoint { return EndpointOf(d.Cell(), d.Network()) }
