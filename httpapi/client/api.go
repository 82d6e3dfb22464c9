package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The typed calls, by area of the API reference. Each checks the success status
// its route documents.

const (
	get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
)

func peerPath(name string) string { return "/api/peers/" + url.PathEscape(name) }

func withQuery(path string, q url.Values) string {
	if s := q.Encode(); s != "" {
		return path + "?" + s
	}
	return path
}

// ---- core

// Health asks GET /health, which needs no login.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.call(ctx, get, "/health", nil, 200, &h)
	return h, err
}

// Status runs every part's check: GET /api/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.call(ctx, get, "/api/status", nil, 200, &s)
	return s, err
}

// Config is GET /api/config.
func (c *Client) Config(ctx context.Context) (Config, error) {
	var cfg Config
	err := c.call(ctx, get, "/api/config", nil, 200, &cfg)
	return cfg, err
}

// PatchConfig changes part of the config (PUT /api/config, merged into the
// stored document) and returns the whole new one. patch is any value that
// encodes to the part to change, such as
// map[string]any{"cell": map[string]any{"name": "home"}}.
func (c *Client) PatchConfig(ctx context.Context, patch any) (Config, error) {
	var cfg Config
	err := c.call(ctx, put, "/api/config", patch, 200, &cfg)
	return cfg, err
}

// HealthHistory is GET /api/health/history: the newest records first; limit 0
// is the cell's default.
func (c *Client) HealthHistory(ctx context.Context, limit int) ([]HealthRecord, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		History []HealthRecord `json:"history"`
	}
	err := c.call(ctx, get, withQuery("/api/health/history", q), nil, 200, &out)
	return out.History, err
}

// ---- auth

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// Login starts a session (POST /api/auth/login) and fetches its CSRF token, which
// every change from then on carries. A failed login leaves the Client without a
// token.
func (c *Client) Login(ctx context.Context, username, password string) error {
	c.setToken("")
	if err := c.call(ctx, post, "/api/auth/login", loginRequest{username, password}, 200, nil); err != nil {
		return err
	}
	return c.RefreshCSRF(ctx)
}

// RefreshCSRF fetches the session's CSRF token again (GET /api/auth/csrf-token);
// Login does it already.
func (c *Client) RefreshCSRF(ctx context.Context) error {
	var tok struct {
		Token string `json:"token"`
	}
	if err := c.call(ctx, get, "/api/auth/csrf-token", nil, 200, &tok); err != nil {
		return err
	}
	if tok.Token == "" {
		return errors.New("GET /api/auth/csrf-token: the cell gave an empty token")
	}
	c.setToken(tok.Token)
	return nil
}

// Logout ends the session (POST /api/auth/logout) and forgets its token.
func (c *Client) Logout(ctx context.Context) error {
	err := c.call(ctx, post, "/api/auth/logout", nil, 200, nil)
	c.setToken("")
	return err
}

// Me is the session's account: GET /api/auth/me.
func (c *Client) Me(ctx context.Context) (User, error) {
	var u User
	err := c.call(ctx, get, "/api/auth/me", nil, 200, &u)
	return u, err
}

// ChangePassword changes the session's own password.
func (c *Client) ChangePassword(ctx context.Context, current, next string) error {
	body := struct {
		Current string `json:"current_password"`
		New     string `json:"new_password"`
	}{current, next}
	return c.call(ctx, post, "/api/auth/change-password", body, 200, nil)
}

// ResetPassword sets another account's password (admin).
func (c *Client) ResetPassword(ctx context.Context, username, next string) error {
	body := struct {
		Username string `json:"username"`
		New      string `json:"new_password"`
	}{username, next}
	return c.call(ctx, post, "/api/auth/admin/reset-password", body, 200, nil)
}

// ResetOneTimePassword gives another account a new one-time password in place
// of its password (admin), ending its sessions; the answer is the only time it
// is shown. The first login with it must choose a password before anything.
func (c *Client) ResetOneTimePassword(ctx context.Context, username string) (Secret, error) {
	body := struct {
		Username string `json:"username"`
		OneTime  bool   `json:"one_time"`
	}{username, true}
	var out struct {
		OneTimePassword Secret `json:"one_time_password"`
	}
	err := c.call(ctx, post, "/api/auth/admin/reset-password", body, 200, &out)
	return out.OneTimePassword, err
}

// Users lists the accounts (admin).
func (c *Client) Users(ctx context.Context) ([]Account, error) {
	var out struct {
		Users []Account `json:"users"`
	}
	err := c.call(ctx, get, "/api/auth/users", nil, 200, &out)
	return out.Users, err
}

// ---- setup

// SetupStatus is GET /api/setup/status.
func (c *Client) SetupStatus(ctx context.Context) (SetupStatus, error) {
	var s SetupStatus
	err := c.call(ctx, get, "/api/setup/status", nil, 200, &s)
	return s, err
}

// SetupCurrentStep is GET /api/setup/step: the step to submit next and its inputs.
func (c *Client) SetupCurrentStep(ctx context.Context) (SetupStepInfo, error) {
	var s SetupStepInfo
	err := c.call(ctx, get, "/api/setup/step", nil, 200, &s)
	return s, err
}

// SetupStep submits one wizard step (admin, cell or network) with its data, such
// as map[string]any{"username": "admin", "password": pw}. It needs the setup
// code (UseSetupCode).
func (c *Client) SetupStep(ctx context.Context, step string, data any) (SetupStatus, error) {
	body := struct {
		Step string `json:"step"`
		Data any    `json:"data"`
	}{step, data}
	var s SetupStatus
	err := c.call(ctx, post, "/api/setup/step", body, 200, &s)
	return s, err
}

// CompleteSetup finishes the wizard: the admin account and the config are made.
// It needs the setup code (UseSetupCode); afterwards the code opens nothing.
func (c *Client) CompleteSetup(ctx context.Context) (SetupStatus, error) {
	var s SetupStatus
	err := c.call(ctx, post, "/api/setup/complete", nil, 200, &s)
	return s, err
}

// ---- peers

// Peers lists every peer.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var out struct {
		Peers []Peer `json:"peers"`
	}
	err := c.call(ctx, get, "/api/peers", nil, 200, &out)
	return out.Peers, err
}

// CreatePeer adds a peer; the answer holds its login's one-time password.
func (c *Client) CreatePeer(ctx context.Context, p NewPeer) (CreatedPeer, error) {
	var out CreatedPeer
	err := c.call(ctx, post, "/api/peers", p, http.StatusCreated, &out)
	return out, err
}

// Peer is one peer; a name the cell does not know is a *Error with code
// peer_not_found.
func (c *Client) Peer(ctx context.Context, name string) (Peer, error) {
	var p Peer
	err := c.call(ctx, get, peerPath(name), nil, 200, &p)
	return p, err
}

// UpdatePeer changes the fields ch sets and returns the peer as it is now.
func (c *Client) UpdatePeer(ctx context.Context, name string, ch PeerChange) (Peer, error) {
	var p Peer
	err := c.call(ctx, put, peerPath(name), ch, 200, &p)
	return p, err
}

// DeletePeer removes a peer, its keys and its login.
func (c *Client) DeletePeer(ctx context.Context, name string) error {
	return c.call(ctx, del, peerPath(name), nil, 200, nil)
}

// PeerConfig is the peer's WireGuard configuration file (text; it holds the
// peer's private key when the cell made it).
func (c *Client) PeerConfig(ctx context.Context, name string) (string, error) {
	var s string
	err := c.call(ctx, get, peerPath(name)+"/config", nil, 200, &s)
	return s, err
}

// PeerQR is the peer's configuration as a QR code: format "png" (or "") or "svg".
func (c *Client) PeerQR(ctx context.Context, name, format string) ([]byte, error) {
	return c.qr(ctx, peerPath(name)+"/qr", format)
}

func (c *Client) qr(ctx context.Context, path, format string) ([]byte, error) {
	q := url.Values{}
	if format != "" {
		q.Set("format", format)
	}
	var b []byte
	err := c.call(ctx, get, withQuery(path, q), nil, 200, &b)
	return b, err
}

// PeerServiceCredentials is the peer's connection info for the installed services.
func (c *Client) PeerServiceCredentials(ctx context.Context, name string) ([]ServiceCredential, error) {
	return c.credentials(ctx, peerPath(name)+"/service-credentials")
}

func (c *Client) credentials(ctx context.Context, path string) ([]ServiceCredential, error) {
	var out struct {
		Services []ServiceCredential `json:"services"`
	}
	err := c.call(ctx, get, path, nil, 200, &out)
	return out.Services, err
}

// The peer's own area, for a session of role peer.

// MyPeer is the session's own peer: GET /api/peer/me.
func (c *Client) MyPeer(ctx context.Context) (Peer, error) {
	var p Peer
	err := c.call(ctx, get, "/api/peer/me", nil, 200, &p)
	return p, err
}

// MyPeerConfig is the session's own WireGuard configuration file.
func (c *Client) MyPeerConfig(ctx context.Context) (string, error) {
	var s string
	err := c.call(ctx, get, "/api/peer/config", nil, 200, &s)
	return s, err
}

// MyPeerQR is the session's own configuration as a QR code ("png" or "svg").
func (c *Client) MyPeerQR(ctx context.Context, format string) ([]byte, error) {
	return c.qr(ctx, "/api/peer/qr", format)
}

// MyServiceCredentials is the session's own connection info for the services.
func (c *Client) MyServiceCredentials(ctx context.Context) ([]ServiceCredential, error) {
	return c.credentials(ctx, "/api/peer/service-credentials")
}

// WireGuardStatus is the device and every peer on it.
func (c *Client) WireGuardStatus(ctx context.Context) (WireGuardStatus, error) {
	var s WireGuardStatus
	err := c.call(ctx, get, "/api/wireguard/status", nil, 200, &s)
	return s, err
}

// WireGuardHistory is each peer's traffic per interval (admin); peer "" means
// every peer.
func (c *Client) WireGuardHistory(ctx context.Context, peer string) (WireGuardHistory, error) {
	path := "/api/wireguard/history"
	if peer != "" {
		path += "?peer=" + url.QueryEscape(peer)
	}
	var h WireGuardHistory
	err := c.call(ctx, get, path, nil, 200, &h)
	return h, err
}

// ---- routing

// Routing is NAT, every peer's policy and the forwards: GET /api/routing.
func (c *Client) Routing(ctx context.Context) (Routing, error) {
	var r Routing
	err := c.call(ctx, get, "/api/routing", nil, 200, &r)
	return r, err
}

// SetPeerRouting changes a peer's policy (the fields ch sets) and returns it.
func (c *Client) SetPeerRouting(ctx context.Context, name string, ch PolicyChange) (PeerPolicyView, error) {
	var out PeerPolicyView
	err := c.call(ctx, put, "/api/routing/peers/"+url.PathEscape(name), ch, 200, &out)
	return out, err
}

// Forwards lists the port forwards.
func (c *Client) Forwards(ctx context.Context) ([]Forward, error) {
	var out struct {
		Forwards []Forward `json:"forwards"`
	}
	err := c.call(ctx, get, "/api/routing/forwards", nil, 200, &out)
	return out.Forwards, err
}

// AddForward forwards a WAN port to a peer.
func (c *Client) AddForward(ctx context.Context, f NewForward) (Forward, error) {
	var out Forward
	err := c.call(ctx, post, "/api/routing/forwards", f, http.StatusCreated, &out)
	return out, err
}

// DeleteForward removes the forward of a WAN port (proto tcp or udp).
func (c *Client) DeleteForward(ctx context.Context, proto string, port int) error {
	return c.call(ctx, del, "/api/routing/forwards/"+url.PathEscape(proto)+"/"+strconv.Itoa(port), nil, 200, nil)
}

// ---- dns

// DNS is the DNS server's status: GET /api/dns.
func (c *Client) DNS(ctx context.Context) (DNSStatus, error) {
	var out DNSStatus
	err := c.call(ctx, get, "/api/dns", nil, 200, &out)
	return out, err
}

// DNSRecords lists the custom records of the cell's zone.
func (c *Client) DNSRecords(ctx context.Context) ([]DNSRecord, error) {
	var out struct {
		Records []DNSRecord `json:"records"`
	}
	err := c.call(ctx, get, "/api/dns/records", nil, 200, &out)
	return out.Records, err
}

// AddDNSRecord adds a record to the cell's zone; it answers once the server has it.
func (c *Client) AddDNSRecord(ctx context.Context, r NewDNSRecord) (DNSRecord, error) {
	var out DNSRecord
	err := c.call(ctx, post, "/api/dns/records", r, http.StatusCreated, &out)
	return out, err
}

// DeleteDNSRecord removes a record by its id.
func (c *Client) DeleteDNSRecord(ctx context.Context, id uint64) error {
	return c.call(ctx, del, "/api/dns/records/"+strconv.FormatUint(id, 10), nil, 200, nil)
}

// ReloadDNS rebuilds the zone from the database now.
func (c *Client) ReloadDNS(ctx context.Context) error {
	return c.call(ctx, post, "/api/dns/reload", nil, 200, nil)
}

// ---- vault

// VaultCA is the CA's root certificate, which needs no login: format "pem" (or
// "") or "der" (what a phone installs).
func (c *Client) VaultCA(ctx context.Context, format string) ([]byte, error) {
	return c.vaultFile(ctx, "/api/vault/ca", format)
}

// VaultCRL is the CA's revocation list, signed by the root; it needs no login.
// format is "pem" (or "") or "der".
func (c *Client) VaultCRL(ctx context.Context, format string) ([]byte, error) {
	return c.vaultFile(ctx, "/api/vault/crl", format)
}

func (c *Client) vaultFile(ctx context.Context, path, format string) ([]byte, error) {
	q := url.Values{}
	if format != "" {
		q.Set("format", format)
	}
	var b []byte
	err := c.call(ctx, get, withQuery(path, q), nil, 200, &b)
	return b, err
}

// VaultCerts lists every certificate the cell's CA made, the root first.
func (c *Client) VaultCerts(ctx context.Context) ([]VaultCert, error) {
	var out struct {
		Certs []VaultCert `json:"certs"`
	}
	err := c.call(ctx, get, "/api/vault/certs", nil, 200, &out)
	return out.Certs, err
}

// IssueVaultCert has the CA make a key pair and a certificate; the private key
// is in this answer only (the cell keeps no copy).
func (c *Client) IssueVaultCert(ctx context.Context, in NewVaultCert) (IssuedVaultCert, error) {
	var out IssuedVaultCert
	err := c.call(ctx, post, "/api/vault/certs", in, http.StatusCreated, &out)
	return out, err
}

// RevokeVaultCert revokes a certificate by its serial (hex; openssl's colons
// are fine); the CRL lists it from then on.
func (c *Client) RevokeVaultCert(ctx context.Context, serial string) (VaultCert, error) {
	var out VaultCert
	err := c.call(ctx, post, "/api/vault/certs/"+url.PathEscape(serial)+"/revoke", nil, 200, &out)
	return out, err
}

// TrustKeys lists the public keys the cell trusts.
func (c *Client) TrustKeys(ctx context.Context) ([]TrustKey, error) {
	var out struct {
		TrustKeys []TrustKey `json:"trust_keys"`
	}
	err := c.call(ctx, get, "/api/vault/trust-keys", nil, 200, &out)
	return out.TrustKeys, err
}

// TrustKey is one trusted key by its name.
func (c *Client) TrustKey(ctx context.Context, name string) (TrustKey, error) {
	var out TrustKey
	err := c.call(ctx, get, "/api/vault/trust-keys/"+url.PathEscape(name), nil, 200, &out)
	return out, err
}

// AddTrustKey trusts an ed25519 public key (base64 as cellctl keygen prints
// it, a PEM PUBLIC KEY block, or an ssh-ed25519 line).
func (c *Client) AddTrustKey(ctx context.Context, k NewTrustKey) (TrustKey, error) {
	var out TrustKey
	err := c.call(ctx, post, "/api/vault/trust-keys", k, http.StatusCreated, &out)
	return out, err
}

// DeleteTrustKey stops trusting the named key.
func (c *Client) DeleteTrustKey(ctx context.Context, name string) error {
	return c.call(ctx, del, "/api/vault/trust-keys/"+url.PathEscape(name), nil, 200, nil)
}

// VaultAgePublicKey is the age recipient the cell's secrets are encrypted to.
func (c *Client) VaultAgePublicKey(ctx context.Context) (string, error) {
	var out struct {
		PublicKey string `json:"public_key"`
	}
	err := c.call(ctx, get, "/api/vault/age", nil, 200, &out)
	return out.PublicKey, err
}

// ---- audit

// Audit queries the audit log: GET /api/audit.
func (c *Client) Audit(ctx context.Context, q AuditQuery) (AuditPage, error) {
	v := url.Values{}
	for k, s := range map[string]string{"actor": q.Actor, "action": q.Action, "target_type": q.TargetType, "target_id": q.TargetID, "result": q.Result} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Offset > 0 {
		v.Set("offset", strconv.Itoa(q.Offset))
	}
	var page AuditPage
	err := c.call(ctx, get, withQuery("/api/audit", v), nil, 200, &page)
	return page, err
}

// AuditVerify has the cell check its whole chain and checkpoint.
func (c *Client) AuditVerify(ctx context.Context) (AuditVerification, error) {
	var v AuditVerification
	err := c.call(ctx, get, "/api/audit/verify", nil, 200, &v)
	return v, err
}

// AuditExport is the whole log with a fresh signed checkpoint, as the file the
// cell serves: format "csv" (or "") or "json". cellctl audit verify checks it
// offline.
func (c *Client) AuditExport(ctx context.Context, format string) ([]byte, error) {
	q := url.Values{}
	if format != "" {
		q.Set("format", format)
	}
	var b []byte
	err := c.call(ctx, get, withQuery("/api/audit/export", q), nil, 200, &b)
	return b, err
}

// ---- logs

// Logs is the newest lines of the log, of one service ("" for all); lines 0 is
// the cell's default.
func (c *Client) Logs(ctx context.Context, service string, lines int) ([]LogLine, error) {
	return c.logs(ctx, "/api/logs", url.Values{}, service, lines)
}

// SearchLogs is the newest lines holding text, of one service ("" for all).
func (c *Client) SearchLogs(ctx context.Context, text, service string, lines int) ([]LogLine, error) {
	return c.logs(ctx, "/api/logs/search", url.Values{"q": {text}}, service, lines)
}

func (c *Client) logs(ctx context.Context, path string, q url.Values, service string, lines int) ([]LogLine, error) {
	if service != "" {
		q.Set("service", service)
	}
	if lines > 0 {
		q.Set("lines", strconv.Itoa(lines))
	}
	var out struct {
		Lines []LogLine `json:"lines"`
	}
	err := c.call(ctx, get, withQuery(path, q), nil, 200, &out)
	return out.Lines, err
}

// LogLevels is every component's log level.
func (c *Client) LogLevels(ctx context.Context) (map[string]string, error) {
	var out struct {
		Levels map[string]string `json:"levels"`
	}
	err := c.call(ctx, get, "/api/logs/verbosity", nil, 200, &out)
	return out.Levels, err
}

// SetLogLevels sets the levels of the components named (such as {"api":
// "debug"}) and returns every component's level.
func (c *Client) SetLogLevels(ctx context.Context, levels map[string]string) (map[string]string, error) {
	body := struct {
		Levels map[string]string `json:"levels"`
	}{levels}
	var out struct {
		Levels map[string]string `json:"levels"`
	}
	err := c.call(ctx, put, "/api/logs/verbosity", body, 200, &out)
	return out.Levels, err
}

// ---- system

// SystemInfo is what runs: GET /api/system/info.
func (c *Client) SystemInfo(ctx context.Context) (SystemInfo, error) {
	var i SystemInfo
	err := c.call(ctx, get, "/api/system/info", nil, 200, &i)
	return i, err
}

// SystemUpdateStatus is the firmware's slots and the last update's state.
func (c *Client) SystemUpdateStatus(ctx context.Context) (UpdateStatus, error) {
	var s UpdateStatus
	err := c.call(ctx, get, "/api/system/update", nil, 200, &s)
	return s, err
}

// PushUpdate sends a signed update bundle (cellctl update build) as the raw body
// of POST /api/system/update. The cell checks it whole before writing it to the
// inactive root, answers, and then reboots into it on trial; follow the outcome
// with SystemUpdateStatus. The call is bounded only by ctx, not by WithTimeout.
//
// When bundle is an io.Seeker (an *os.File) its size is sent as Content-Length,
// so that an oversized bundle is refused before it is sent. progress, if not nil,
// is called as the body is read, with the bytes sent so far and the total (-1
// when unknown).
func (c *Client) PushUpdate(ctx context.Context, bundle io.Reader, progress func(sent, total int64)) (UpdateAccepted, error) {
	size := int64(-1)
	if s, ok := bundle.(io.Seeker); ok {
		if cur, err := s.Seek(0, io.SeekCurrent); err == nil {
			if end, err := s.Seek(0, io.SeekEnd); err == nil {
				if _, err := s.Seek(cur, io.SeekStart); err != nil {
					return UpdateAccepted{}, err
				}
				size = end - cur
			}
		}
	}
	body := bundle
	if progress != nil {
		body = &progressReader{r: bundle, total: size, fn: progress}
	}
	var out UpdateAccepted
	err := c.send(ctx, post, "/api/system/update", Upload{Body: body, Size: size}, http.StatusAccepted, &out)
	return out, err
}

type progressReader struct {
	r     io.Reader
	sent  int64
	total int64
	fn    func(sent, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.sent += int64(n)
		p.fn(p.sent, p.total)
	}
	return n, err
}

// ---- caddy (the front)

// CaddyCertStatus is the front's certificates, one per name and address:
// GET /api/caddy/cert-status.
func (c *Client) CaddyCertStatus(ctx context.Context) (CaddyStatus, error) {
	var out CaddyStatus
	err := c.call(ctx, get, "/api/caddy/cert-status", nil, 200, &out)
	return out, err
}

// RenewCaddyCerts makes new certificates for every name now and returns them.
func (c *Client) RenewCaddyCerts(ctx context.Context) (CaddyStatus, error) {
	var out CaddyStatus
	err := c.call(ctx, post, "/api/caddy/cert-renew", nil, 200, &out)
	return out, err
}

// ---- services

// StoreEntry is one service of the catalog: GET /api/store.
type StoreEntry struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Version      string   `json:"version"`
	Description  string   `json:"description"`
	Subdomain    string   `json:"subdomain"`
	Capabilities []string `json:"capabilities"`
	Installed    bool     `json:"installed"`
	Available    bool     `json:"available"`
}

// Service is an installed service: GET /api/services/active.
type Service struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Version   string `json:"version"`
	URL       string `json:"url"`
	State     string `json:"state"`
	Reason    string `json:"reason"`
	Restarts  int    `json:"restarts"`
	Accounts  int    `json:"accounts"`
	Subdomain string `json:"subdomain"`
}

// ServiceStatus is a service's container: GET /api/services/catalog/<id>/status.
type ServiceStatus struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	Reason    string `json:"reason"`
	Restarts  int    `json:"restarts"`
	Container string `json:"container"`
	PID       uint32 `json:"pid"`
	Address   string `json:"address"`
}

// Store is the catalog.
func (c *Client) Store(ctx context.Context) ([]StoreEntry, error) {
	var out struct {
		Services []StoreEntry `json:"services"`
	}
	err := c.call(ctx, get, "/api/store", nil, 200, &out)
	return out.Services, err
}

// ActiveServices are the installed services with their state.
func (c *Client) ActiveServices(ctx context.Context) ([]Service, error) {
	var out struct {
		Services []Service `json:"services"`
	}
	err := c.call(ctx, get, "/api/services/active", nil, 200, &out)
	return out.Services, err
}

// InstallService installs id from the catalog; the container follows (state
// installing, then running or failed).
func (c *Client) InstallService(ctx context.Context, id string) (Service, error) {
	var s Service
	err := c.call(ctx, post, "/api/store/install", map[string]string{"id": id}, 202, &s)
	return s, err
}

// RemoveService removes id, keeping its data or not.
func (c *Client) RemoveService(ctx context.Context, id string, keepData bool) error {
	return c.call(ctx, post, "/api/store/remove", map[string]any{"id": id, "keep_data": keepData}, 200, nil)
}

// ServiceStatus is the state of id's container.
func (c *Client) ServiceStatus(ctx context.Context, id string) (ServiceStatus, error) {
	var s ServiceStatus
	err := c.call(ctx, get, "/api/services/catalog/"+url.PathEscape(id)+"/status", nil, 200, &s)
	return s, err
}

// Network is how the outside reaches the cell (admin).
func (c *Client) Network(ctx context.Context) (NetworkStatus, error) {
	var s NetworkStatus
	err := c.call(ctx, get, "/api/network", nil, 200, &s)
	return s, err
}

// DDNS is the dynamic DNS setting and state (admin).
func (c *Client) DDNS(ctx context.Context) (DDNS, error) {
	var d DDNS
	err := c.call(ctx, get, "/api/network/ddns", nil, 200, &d)
	return d, err
}

// SetDDNS replaces the dynamic DNS setting (admin).
func (c *Client) SetDDNS(ctx context.Context, ch DDNSChange) (DDNS, error) {
	var d DDNS
	err := c.call(ctx, put, "/api/network/ddns", ch, 200, &d)
	return d, err
}

// RefreshDDNS looks at the public address again and updates the provider now (admin).
func (c *Client) RefreshDDNS(ctx context.Context) error {
	return c.call(ctx, post, "/api/network/ddns/refresh", nil, 200, nil)
}

// TestNetwork runs one diagnostic (admin).
func (c *Client) TestNetwork(ctx context.Context, t NetworkTest) (NetworkTestResult, error) {
	var r NetworkTestResult
	err := c.call(ctx, post, "/api/network/test", t, 200, &r)
	return r, err
}

// NTP is the clock's state (admin).
func (c *Client) NTP(ctx context.Context) (NTPStatus, error) {
	var s NTPStatus
	err := c.call(ctx, get, "/api/ntp", nil, 200, &s)
	return s, err
}
