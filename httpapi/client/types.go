package client

import (
	"net/netip"
	"time"
)

// The API's JSON, field for field. Decoding ignores fields a newer cell adds.

// Secret is a secret the API hands out (a one-time password, a service password).
// It prints as [redacted] with fmt, so that logging a value holding one does not
// leak it; string(s) is the secret.
type Secret string

// String hides the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString hides the secret from %#v too.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// Health is GET /health, the one endpoint open to anyone.
type Health struct {
	OK            bool   `json:"ok"`
	State         string `json:"state"` // ok, degraded or down
	Version       string `json:"version"`
	SetupComplete bool   `json:"setup_complete"`
}

// User is the account of a session (POST /api/auth/login, GET /api/auth/me).
type User struct {
	Username string `json:"username"`
	Role     string `json:"role"` // admin or peer
	// MustChangePassword: the session began with a one-time password; every
	// call but Me, RefreshCSRF, ChangePassword (with the one-time password as
	// current) and Logout answers 403 password_change_required until then.
	MustChangePassword bool `json:"must_change_password"`
}

// Account is one account as GET /api/auth/users lists it.
type Account struct {
	Username          string    `json:"username"`
	Role              string    `json:"role"`
	CreatedAt         time.Time `json:"created_at"`
	PasswordChangedAt time.Time `json:"password_changed_at"`
	// OneTimePasswordState is "unused" or "used" (logged in once, must choose
	// a password) while the account has only a one-time password; "" after.
	OneTimePasswordState string `json:"one_time_password_state,omitempty"`
}

// SetupStatus is GET /api/setup/status, and the answer to every setup change.
type SetupStatus struct {
	Complete bool     `json:"complete"`
	Step     string   `json:"step,omitempty"` // the next step to submit
	Steps    []string `json:"steps"`
	Done     []string `json:"done"`
	// CAFingerprint is the SHA-256 of the cell's CA, to compare with what the
	// browser or `cellctl trust` shows.
	CAFingerprint string `json:"ca_fingerprint,omitempty"`
}

// SetupField is one input of a wizard step.
type SetupField struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Required bool   `json:"required"`
	Default  any    `json:"default,omitempty"`
}

// SetupStepInfo is GET /api/setup/step: the current step and its inputs.
type SetupStepInfo struct {
	Name   string       `json:"name"`
	Fields []SetupField `json:"fields"`
}

// PartStatus is the state of one part of the cell.
type PartStatus struct {
	State  string `json:"state"` // ok, degraded, down or not_configured
	Reason string `json:"reason,omitempty"`
}

// Status is GET /api/status.
type Status struct {
	State         string                `json:"state"`
	Version       string                `json:"version"`
	UptimeSeconds int64                 `json:"uptime_seconds"`
	Parts         map[string]PartStatus `json:"parts"`
}

// HealthRecord is one entry of GET /api/health/history.
type HealthRecord struct {
	Time  time.Time             `json:"time"`
	Parts map[string]PartStatus `json:"parts"`
}

// Config is GET /api/config, the cell's whole configuration document.
type Config struct {
	Cell    CellConfig    `json:"cell"`
	Network NetworkConfig `json:"network"`
	Health  HealthConfig  `json:"health"`
}

// CellConfig names the cell.
type CellConfig struct {
	Name   string `json:"name"`
	Domain string `json:"domain"`
}

// NetworkConfig is the tunnel's addressing.
type NetworkConfig struct {
	WGPort       int    `json:"wg_port"`
	SubnetV4     string `json:"subnet_v4"`
	SubnetV6     string `json:"subnet_v6"`
	WANInterface string `json:"wan_interface"`
	// Endpoint is what the peers' configs dial (host[:port]); empty: the
	// domain and wg_port.
	Endpoint string `json:"endpoint,omitempty"`
}

// HealthConfig drives the health checker.
type HealthConfig struct {
	IntervalSeconds int `json:"interval_seconds"`
	Keep            int `json:"keep"`
}

// PeerPolicy says where a peer may go: each "allow" or "deny".
type PeerPolicy struct {
	Internet string `json:"internet"`
	LAN      string `json:"lan"`
	Peers    string `json:"peers"`
}

// Peer is a peer as the API shows it: no secret, live counters.
type Peer struct {
	Name          string     `json:"name"`
	Description   string     `json:"description"`
	IPv4          netip.Addr `json:"ipv4"`
	IPv6          netip.Addr `json:"ipv6"`
	PublicKey     string     `json:"public_key"`
	KeySource     string     `json:"key_source"` // "cell" (generated) or "user"
	Route         string     `json:"route"`      // full or split
	Enabled       bool       `json:"enabled"`
	Policy        PeerPolicy `json:"policy"`
	CreatedAt     time.Time  `json:"created_at"`
	LastHandshake *time.Time `json:"last_handshake"`
	RxBytes       uint64     `json:"rx_bytes"`
	TxBytes       uint64     `json:"tx_bytes"`
	// ConfigOutdated: the endpoint changed since this peer was last given
	// its config; send it again.
	ConfigOutdated bool `json:"config_outdated"`
}

// NewPeer is the body of POST /api/peers. Only Name is required.
type NewPeer struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	PublicKey   string `json:"public_key,omitempty"` // the user's own key; the cell makes a pair otherwise
	Route       string `json:"route,omitempty"`      // full (default) or split
	Enabled     *bool  `json:"enabled,omitempty"`    // default true
}

// CreatedPeer is the answer to POST /api/peers: the peer and the one-time
// password of its own login, shown this once.
type CreatedPeer struct {
	Peer            Peer   `json:"peer"`
	Username        string `json:"username"`
	OneTimePassword Secret `json:"one_time_password"`
}

// PeerChange is the body of PUT /api/peers/<name>; nil fields stay as they are.
type PeerChange struct {
	Enabled     *bool   `json:"enabled,omitempty"`
	Route       *string `json:"route,omitempty"`
	Description *string `json:"description,omitempty"`
}

// ServiceCredential is one service's connection info for a peer.
type ServiceCredential struct {
	Service  string `json:"service"`
	Name     string `json:"name"`
	URL      string `json:"url"`
	Username string `json:"username"`
	Password Secret `json:"password,omitempty"`
}

// WireGuardStatus is GET /api/wireguard/status.
type WireGuardStatus struct {
	Running   bool              `json:"running"`
	Mode      string            `json:"mode"` // tun or netstack
	Interface string            `json:"interface"`
	Port      int               `json:"port"`
	PublicKey string            `json:"public_key"`
	Peers     []WireGuardPeerSt `json:"peers"`
}

// WireGuardPeerSt is one peer's live state on the device.
type WireGuardPeerSt struct {
	Name          string     `json:"name"`
	PublicKey     string     `json:"public_key"`
	Endpoint      string     `json:"endpoint,omitempty"`
	LastHandshake *time.Time `json:"last_handshake"`
	RxBytes       uint64     `json:"rx_bytes"`
	TxBytes       uint64     `json:"tx_bytes"`
}

// WireGuardHistory is GET /api/wireguard/history: each peer's bytes per
// sampling interval, oldest first.
type WireGuardHistory struct {
	IntervalSeconds int                    `json:"interval_seconds"`
	Peers           []WireGuardPeerHistory `json:"peers"`
}

// WireGuardPeerHistory is one peer's samples.
type WireGuardPeerHistory struct {
	Name   string           `json:"name"`
	Points []WireGuardPoint `json:"points"`
}

// WireGuardPoint is the traffic of one interval ending at T.
type WireGuardPoint struct {
	T       time.Time `json:"t"`
	RxBytes uint64    `json:"rx_bytes"`
	TxBytes uint64    `json:"tx_bytes"`
}

// Routing is GET /api/routing.
type Routing struct {
	NAT      NAT              `json:"nat"`
	Peers    []PeerPolicyView `json:"peers"`
	Forwards []Forward        `json:"forwards"`
}

// NAT says how peers reach the internet.
type NAT struct {
	Enabled      bool     `json:"enabled"`
	WANInterface string   `json:"wan_interface"`
	Masquerade   []string `json:"masquerade"`
	Firewall     bool     `json:"firewall"`
}

// PeerPolicyView is one peer's policy.
type PeerPolicyView struct {
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
	PeerPolicy
}

// PolicyChange is the body of PUT /api/routing/peers/<name>; nil fields stay.
type PolicyChange struct {
	Internet *string `json:"internet,omitempty"`
	LAN      *string `json:"lan,omitempty"`
	Peers    *string `json:"peers,omitempty"`
}

// Forward is a port forward from the WAN to a peer.
type Forward struct {
	Proto     string    `json:"proto"` // tcp or udp
	Port      int       `json:"port"`  // on the WAN
	Peer      string    `json:"peer"`
	ToPort    int       `json:"to_port"`
	CreatedAt time.Time `json:"created_at"`
}

// NewForward is the body of POST /api/routing/forwards; ToPort 0 means Port.
type NewForward struct {
	Proto  string `json:"proto"`
	Port   int    `json:"port"`
	Peer   string `json:"peer"`
	ToPort int    `json:"to_port,omitempty"`
}

// AuditEntry is one entry of the hash-chained audit log.
type AuditEntry struct {
	Seq uint64 `json:"seq"`
	// Time is UTC in the fixed layout 2006-01-02T15:04:05.000000000Z, kept as
	// text since the hash covers it byte for byte.
	Time       string            `json:"time"`
	Actor      string            `json:"actor"`
	SourceIP   string            `json:"source_ip"`
	Action     string            `json:"action"`
	TargetType string            `json:"target_type"`
	TargetID   string            `json:"target_id"`
	Result     string            `json:"result"` // "ok" or the error code
	Details    map[string]string `json:"details"`
	Prev       string            `json:"prev"`
	Hash       string            `json:"hash"`
}

// AuditQuery filters GET /api/audit; zero fields do not filter.
type AuditQuery struct {
	Actor, Action, TargetType, TargetID, Result string
	Since, Until                                time.Time // inclusive
	Limit                                       int       // 0: the cell's default (100)
	Offset                                      int
}

// AuditPage is the answer to GET /api/audit: the matching entries, newest
// first, and how many matched in all.
type AuditPage struct {
	Entries []AuditEntry `json:"entries"`
	Total   int          `json:"total"`
}

// Checkpoint is a signed statement of the audit log's size and head.
type Checkpoint struct {
	Size      uint64 `json:"size"`
	Head      string `json:"head"`
	Time      string `json:"time"`
	PublicKey string `json:"public_key"` // hex ed25519
	Signature string `json:"signature"`  // hex ed25519
}

// AuditVerification is GET /api/audit/verify.
type AuditVerification struct {
	OK           bool        `json:"ok"`
	Entries      uint64      `json:"entries"`
	FirstBadSeq  *uint64     `json:"first_bad_seq"`
	Head         string      `json:"head"`
	Checkpoint   *Checkpoint `json:"checkpoint"`
	CheckpointOK bool        `json:"checkpoint_ok"`
	Reason       string      `json:"reason,omitempty"`
	// PublicKey is the cell's audit key (hex ed25519), the one to check exports
	// with (cellctl audit verify -pubkey).
	PublicKey string `json:"public_key"`
}

// LogLine is one line of the cell's log.
type LogLine struct {
	Time    time.Time      `json:"time"`
	Level   string         `json:"level"`
	Service string         `json:"service"`
	Message string         `json:"msg"`
	Attrs   map[string]any `json:"attrs,omitempty"`
}

// SystemInfo is GET /api/system/info: what runs.
type SystemInfo struct {
	Version       string    `json:"version"`
	Target        string    `json:"target"`
	Hostname      string    `json:"hostname"`
	Built         time.Time `json:"built"`
	RootSlot      string    `json:"root_slot"` // "A" or "B"
	PermanentSlot string    `json:"permanent_slot"`
	UptimeSeconds int64     `json:"uptime_seconds"`
}

// Update phases (UpdateState.Phase).
const (
	PhaseIdle       = ""            // no update has run
	PhaseWriting    = "writing"     // the inactive root is being written
	PhasePending    = "pending"     // written; the next boot tries it
	PhaseTrying     = "trying"      // booted once on trial
	PhaseCommitted  = "committed"   // healthy and permanent
	PhaseRolledBack = "rolled_back" // not healthy; the old root runs
	PhaseFailed     = "failed"      // stopped before the trial
)

// UpdateStatus is GET /api/system/update.
type UpdateStatus struct {
	Running       string      `json:"running_version"`
	Target        string      `json:"target"`
	Slot          int         `json:"root_slot"`
	PermanentSlot int         `json:"permanent_slot"`
	Update        UpdateState `json:"update"`
	KeyConfigured bool        `json:"update_key_configured"`
}

// UpdateState is where the last update is.
type UpdateState struct {
	Phase       string    `json:"phase"`
	Version     string    `json:"version,omitempty"`
	Slot        int       `json:"slot,omitempty"`
	FromVersion string    `json:"from_version,omitempty"`
	FromSlot    int       `json:"from_slot,omitempty"`
	Message     string    `json:"message,omitempty"`
	Updated     time.Time `json:"updated"`
	Reported    bool      `json:"reported,omitempty"`
}

// UpdateAccepted is the answer to POST /api/system/update.
type UpdateAccepted struct {
	Accepted bool   `json:"accepted"`
	Version  string `json:"version"`
	State    string `json:"state"` // pending
	Message  string `json:"message"`
}

// DNSRecord is a custom record of the cell's zone.
type DNSRecord struct {
	ID        uint64    `json:"id"`
	Name      string    `json:"name"`
	FQDN      string    `json:"fqdn"`
	Type      string    `json:"type"`
	Value     string    `json:"value"`
	TTL       uint32    `json:"ttl"`
	CreatedAt time.Time `json:"created_at"`
}

// NewDNSRecord is the body of POST /api/dns/records: Type is A, AAAA, CNAME,
// TXT, MX or SRV; TTL 0 means 300 seconds.
type NewDNSRecord struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
	TTL   uint32 `json:"ttl,omitempty"`
}

// VaultCert is a certificate of the cell's CA (GET /api/vault/certs): never
// its private key.
type VaultCert struct {
	Serial      string     `json:"serial"` // lowercase hex
	Kind        string     `json:"kind"`   // root, issued (through the API) or front (the cell's TLS server)
	CommonName  string     `json:"common_name"`
	SANs        []string   `json:"sans"`
	NotBefore   time.Time  `json:"not_before"`
	NotAfter    time.Time  `json:"not_after"`
	RevokedAt   *time.Time `json:"revoked_at"`
	Status      string     `json:"status"` // valid, revoked or expired
	Fingerprint string     `json:"sha256_fingerprint"`
	Certificate string     `json:"certificate"` // PEM
}

// NewVaultCert is the body of POST /api/vault/certs: CommonName is a DNS name,
// an IP address or a plain name; SANs are DNS names and addresses (at most 32);
// Days is 1-825, 0 meaning 365.
type NewVaultCert struct {
	CommonName string   `json:"common_name"`
	SANs       []string `json:"sans,omitempty"`
	Days       int      `json:"days,omitempty"`
}

// IssuedVaultCert is the answer to POST /api/vault/certs: the certificate, its
// private key (PKCS#8 PEM, shown only here) and the root that signed it (PEM).
type IssuedVaultCert struct {
	VaultCert
	PrivateKey Secret `json:"private_key"`
	CA         string `json:"ca"`
}

// TrustKey is a public key the cell trusts (GET /api/vault/trust-keys).
type TrustKey struct {
	Name        string    `json:"name"`
	PublicKey   string    `json:"public_key"` // standard base64 of the ed25519 key
	Purpose     string    `json:"purpose"`
	Fingerprint string    `json:"sha256_fingerprint"` // as ssh-keygen -l prints it
	CreatedAt   time.Time `json:"created_at"`
}

// NewTrustKey is the body of POST /api/vault/trust-keys; Purpose "" is "general".
type NewTrustKey struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	Purpose   string `json:"purpose,omitempty"`
}

// DNSStatus is GET /api/dns.
type DNSStatus struct {
	State     string   `json:"state"`
	Reason    string   `json:"reason,omitempty"`
	Listening []string `json:"listening"`
	Zone      string   `json:"zone"`
	Serial    uint32   `json:"serial"`
	Records   int      `json:"record_count"`
	Upstreams []struct {
		Address   string  `json:"address"`
		Healthy   bool    `json:"healthy"`
		LastError string  `json:"last_error,omitempty"`
		Answers   uint64  `json:"answers"`
		Failures  uint64  `json:"failures"`
		RTTMillis float64 `json:"rtt_ms"`
	} `json:"upstreams"`
	Cache struct {
		Entries int     `json:"entries"`
		Hits    uint64  `json:"hits"`
		Misses  uint64  `json:"misses"`
		HitRate float64 `json:"hit_rate"`
	} `json:"cache"`
	Refused uint64 `json:"refused"`
	Limited uint64 `json:"rate_limited"`
	Peers   []struct {
		Peer    string `json:"peer"`
		Queries uint64 `json:"queries"`
	} `json:"queries_per_peer"`
}

// CaddyStatus is GET /api/caddy/cert-status.
type CaddyStatus struct {
	Configured   bool        `json:"configured"` // false: the cell runs no front
	Certificates []CaddyCert `json:"certificates"`
}

// CaddyCert is one of the front's names and its certificate.
type CaddyCert struct {
	Name      string     `json:"name"`
	Issuer    string     `json:"issuer,omitempty"` // empty: none yet
	NotAfter  *time.Time `json:"not_after,omitempty"`
	DaysLeft  int        `json:"days_left"`
	LastError string     `json:"last_error,omitempty"`
}

// NetworkStatus is GET /api/network: how the outside reaches the cell.
type NetworkStatus struct {
	Interfaces []struct {
		Name  string   `json:"name"`
		Up    bool     `json:"up"`
		MTU   int      `json:"mtu"`
		Addrs []string `json:"addresses"`
	} `json:"interfaces"`
	Uplink struct {
		Interface string   `json:"interface"`
		Gateway   string   `json:"gateway"`
		Addrs     []string `json:"addresses"`
		Kind      string   `json:"kind"`
		Error     string   `json:"error"`
	} `json:"uplink"`
	PublicAddress struct {
		Addrs  []string `json:"addresses"`
		Source string   `json:"source"`
		CGNAT  bool     `json:"cgnat"`
		Error  string   `json:"error"`
	} `json:"public_address"`
	Endpoint struct {
		Endpoint   string   `json:"endpoint"`
		Host       string   `json:"host"`
		Port       int      `json:"port"`
		Source     string   `json:"source"`
		ResolvesTo []string `json:"resolves_to"`
		Warnings   []string `json:"warnings"`
	} `json:"endpoint"`
	PortMapping struct {
		Enabled   bool       `json:"enabled"`
		State     string     `json:"state"`
		Protocol  string     `json:"protocol"`
		Internal  string     `json:"internal"`
		External  string     `json:"external"`
		Expires   *time.Time `json:"expires"`
		CGNAT     bool       `json:"cgnat"`
		Reason    string     `json:"reason"`
		LastError string     `json:"last_error"`
	} `json:"port_mapping"`
	DDNS          DDNS     `json:"ddns"`
	ResendConfigs []string `json:"resend_configs"`
	Warnings      []string `json:"warnings"`
}

// DDNS is the dynamic DNS setting and state (GET /api/network/ddns); its
// secret is never shown, only whether one is stored.
type DDNS struct {
	Provider        string     `json:"provider"` // off, rfc2136, dyndns2
	Hostname        string     `json:"hostname"`
	Server          string     `json:"server,omitempty"`
	Zone            string     `json:"zone,omitempty"`
	KeyName         string     `json:"key_name,omitempty"`
	Algorithm       string     `json:"algorithm,omitempty"`
	URL             string     `json:"url,omitempty"`
	Username        string     `json:"username,omitempty"`
	IntervalMinutes int        `json:"interval_minutes"`
	SecretSet       bool       `json:"secret_set"`
	Name            string     `json:"name"`
	State           string     `json:"state"` // off, pending, ok, failing, refused
	Addrs           []string   `json:"addresses"`
	LastUpdate      *time.Time `json:"last_update"`
	LastError       string     `json:"last_error"`
	Failures        int        `json:"failures"`
}

// DDNSChange is the body of PUT /api/network/ddns: the whole setting and,
// when it changes, the provider's secret (nil keeps the stored one).
type DDNSChange struct {
	Provider        string  `json:"provider"`
	Hostname        string  `json:"hostname,omitempty"`
	Server          string  `json:"server,omitempty"`
	Zone            string  `json:"zone,omitempty"`
	KeyName         string  `json:"key_name,omitempty"`
	Algorithm       string  `json:"algorithm,omitempty"`
	URL             string  `json:"url,omitempty"`
	Username        string  `json:"username,omitempty"`
	IntervalMinutes int     `json:"interval_minutes,omitempty"`
	Secret          *string `json:"secret,omitempty"`
}

// NetworkTest is the body of POST /api/network/test.
type NetworkTest struct {
	Kind   string `json:"kind"` // ping, dns, http, port, reachability
	Target string `json:"target"`
	Proto  string `json:"proto,omitempty"`
	Type   string `json:"type,omitempty"`
}

// NetworkTestResult is what a test found.
type NetworkTestResult struct {
	Kind    string   `json:"kind"`
	Target  string   `json:"target"`
	OK      bool     `json:"ok"`
	Address string   `json:"address"`
	RTTMS   float64  `json:"rtt_ms"`
	Detail  string   `json:"detail"`
	Answers []string `json:"answers"`
	Status  int      `json:"status"`
}

// NTPStatus is GET /api/ntp: the clock's state.
type NTPStatus struct {
	Synchronised bool       `json:"synchronised"`
	OffsetMS     float64    `json:"offset_ms"`
	LastSync     *time.Time `json:"last_sync"`
	Server       string     `json:"server"`
	Address      string     `json:"address"`
	Stratum      int        `json:"stratum"`
	Servers      []string   `json:"servers"`
	Error        string     `json:"error"`
	Serving      bool       `json:"serving"`
	Time         time.Time  `json:"time"`
	Kernel       struct {
		Synchronised bool    `json:"synchronised"`
		MaxErrorMS   float64 `json:"max_error_ms"`
		Status       int     `json:"status"`
	} `json:"kernel"`
}
