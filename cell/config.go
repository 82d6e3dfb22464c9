package cell

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	"github.com/pic-cell/cell/storage"
)

// Config is the cell's whole configuration document, as GET /api/config shows it. It
// holds no secret (keys and passwords live in the vault and the users bucket).
type Config struct {
	Cell    CellConfig    `json:"cell"`
	Network NetworkConfig `json:"network"`
	Health  HealthConfig  `json:"health"`
}

// CellConfig names the cell.
type CellConfig struct {
	Name   string `json:"name"`   // required: a DNS label, also the hostname
	Domain string `json:"domain"` // required: the cell's DNS name (peers' Endpoint)
}

// NetworkConfig is the tunnel's addressing.
type NetworkConfig struct {
	WGPort       int    `json:"wg_port"`       // required, 1–65535
	SubnetV4     string `json:"subnet_v4"`     // required, a private IPv4 prefix /16–/29
	SubnetV6     string `json:"subnet_v6"`     // a ULA /64 (fd00::/8)
	WANInterface string `json:"wan_interface"` // "auto" (the default route's) or a name
}

// HealthConfig drives the health checker.
type HealthConfig struct {
	IntervalSeconds int `json:"interval_seconds"` // 5–86400, default 60
	Keep            int `json:"keep"`             // records kept, 10–100000, default 1440
}

var (
	labelRe  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	ifaceRe  = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
	userRe   = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,31}$`)
	domainRe = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// ValidLabel reports whether s is a DNS label of 1–63 of a-z, 0-9 and '-', not
// starting or ending with '-'.
func ValidLabel(s string) bool { return labelRe.MatchString(s) }

func checkLabel(field, s string) error {
	if !ValidLabel(s) {
		return Invalid("invalid_"+field, "%s must be a DNS label: 1–63 of a-z, 0-9 and '-', not starting or ending with '-' (got %s)", field, quoteShort(s))
	}
	return nil
}

// quoteShort quotes a user's value for an error message, cut to a readable length.
func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return fmt.Sprintf("%q", s)
}

func checkUsername(s string) error {
	if !userRe.MatchString(s) {
		return Invalid("invalid_username", "username must be 1–32 of a-z, 0-9, '.', '_' and '-', starting with a letter (got %s)", quoteShort(s))
	}
	return nil
}

func (cc CellConfig) validate() error {
	if err := checkLabel("name", cc.Name); err != nil {
		return err
	}
	if len(cc.Domain) > 253 || !domainRe.MatchString(cc.Domain) {
		return Invalid("invalid_domain", "domain must be a DNS name such as home.example.org (got %s)", quoteShort(cc.Domain))
	}
	return nil
}

func (n NetworkConfig) validate() error {
	if n.WGPort < 1 || n.WGPort > 65535 {
		return Invalid("invalid_wg_port", "wg_port must be a port number from 1 to 65535 (got %d)", n.WGPort)
	}
	p4, err := netip.ParsePrefix(n.SubnetV4)
	if err != nil || !p4.Addr().Is4() || p4.Masked() != p4 || !p4.Addr().IsPrivate() || p4.Bits() < 16 || p4.Bits() > 29 {
		return Invalid("invalid_subnet_v4", "subnet_v4 must be a private IPv4 network between /16 and /29 written with its network address, such as 10.77.0.0/24 (got %s)", quoteShort(n.SubnetV4))
	}
	p6, err := netip.ParsePrefix(n.SubnetV6)
	if err != nil || !p6.Addr().Is6() || p6.Addr().Is4In6() || p6.Bits() != 64 || p6.Masked() != p6 || p6.Addr().As16()[0] != 0xfd {
		return Invalid("invalid_subnet_v6", "subnet_v6 must be a unique local IPv6 /64 in fd00::/8, such as fd12:3456:789a:1::/64 (got %s)", quoteShort(n.SubnetV6))
	}
	if n.WANInterface != "auto" && !ifaceRe.MatchString(n.WANInterface) {
		return Invalid("invalid_wan_interface", "wan_interface must be \"auto\" or an interface name of 1–15 of A-Z, a-z, 0-9, '_', '.', '-' (got %s)", quoteShort(n.WANInterface))
	}
	return nil
}

func (h HealthConfig) validate() error {
	if h.IntervalSeconds < 5 || h.IntervalSeconds > 86400 {
		return Invalid("invalid_health_interval", "health.interval_seconds must be from 5 to 86400 (got %d)", h.IntervalSeconds)
	}
	if h.Keep < 10 || h.Keep > 100000 {
		return Invalid("invalid_health_keep", "health.keep must be from 10 to 100000 (got %d)", h.Keep)
	}
	return nil
}

// Validate checks the whole document.
func (cfg Config) Validate() error {
	if err := cfg.Cell.validate(); err != nil {
		return err
	}
	if err := cfg.Network.validate(); err != nil {
		return err
	}
	return cfg.Health.validate()
}

func defaultHealth() HealthConfig { return HealthConfig{IntervalSeconds: 60, Keep: 1440} }

// Config returns the stored config, or ErrSetupNeeded before setup.
func (c *Cell) Config() (Config, error) {
	var cfg Config
	found, err := c.db.Settings().Config(&cfg)
	if err != nil {
		return cfg, err
	}
	if !found {
		return cfg, Errorf(ErrSetupNeeded, "setup_required", "the cell is not set up yet")
	}
	return cfg, nil
}

// PatchConfig applies a JSON merge patch (RFC 7386) to the config, validates the
// result as a whole, and stores it together with audit, the entry of this change, in
// one transaction. The config holds no secret, so the entry's details name the changed
// fields ("changed") and their new values. It returns the new config and the changed
// fields.
func (c *Cell) PatchConfig(patch []byte, audit storage.Entry) (Config, []string, error) {
	c.cfgMu.Lock()
	defer c.cfgMu.Unlock()
	cur, err := c.Config()
	if err != nil {
		return cur, nil, err
	}
	var p any
	if err := json.Unmarshal(patch, &p); err != nil {
		return cur, nil, Invalid("malformed_json", "the body is not valid JSON: %v", err)
	}
	if _, ok := p.(map[string]any); !ok {
		return cur, nil, Invalid("invalid_patch", "the body must be a JSON object (a merge patch of the config)")
	}
	curRaw, _ := json.Marshal(cur)
	var doc, base any
	json.Unmarshal(curRaw, &doc)
	json.Unmarshal(curRaw, &base) // mergePatch changes doc in place
	merged := mergePatch(doc, p)
	mergedRaw, _ := json.Marshal(merged)
	var next Config
	dec := json.NewDecoder(bytes.NewReader(mergedRaw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&next); err != nil {
		return cur, nil, Invalid("invalid_config", "the config does not accept that: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if err := next.Validate(); err != nil {
		return cur, nil, err
	}
	changed := diffFields("", base, merged)
	sort.Strings(changed)
	audit.Details = map[string]string{"changed": strings.Join(changed, ",")}
	for _, f := range changed {
		audit.Details[f] = fmt.Sprint(lookup(merged, f))
	}
	if audit.Time == "" {
		audit.Time = c.now().UTC().Format(storage.TimeFormat)
	}
	if len(changed) == 0 {
		_, err := c.db.Audit().Append(audit)
		return cur, nil, err
	}
	if _, err := c.db.Settings().PutConfigAudited(next, audit); err != nil {
		return cur, nil, err
	}
	return next, changed, nil
}

// mergePatch is RFC 7386: objects merge key by key, null deletes, anything else
// replaces.
func mergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = mergePatch(tm[k], v)
	}
	return tm
}

// diffFields lists the dotted paths whose values differ between a and b.
func diffFields(prefix string, a, b any) []string {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok {
		ar, _ := json.Marshal(a)
		br, _ := json.Marshal(b)
		if !bytes.Equal(ar, br) {
			return []string{prefix}
		}
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, m := range []map[string]any{am, bm} {
		for k := range m {
			if seen[k] {
				continue
			}
			seen[k] = true
			name := k
			if prefix != "" {
				name = prefix + "." + k
			}
			out = append(out, diffFields(name, am[k], bm[k])...)
		}
	}
	return out
}

// defaultULA derives a per-cell unique local /64 from the vault's public key, so the
// default is random across cells but the same on every read of one cell.
func (c *Cell) defaultULA() string {
	sum := sha256.Sum256([]byte(c.db.Vault.PublicKey()))
	var a [16]byte
	a[0] = 0xfd
	copy(a[1:6], sum[:5])
	return netip.PrefixFrom(netip.AddrFrom16(a), 64).String()
}

// lookup finds a dotted path in a decoded JSON document.
func lookup(doc any, path string) any {
	cur := doc
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}
