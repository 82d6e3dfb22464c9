package httpapi

import (
	"context"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/vault"
	"github.com/pic-cell/cell/storage"
)

// VaultService is the vault area's view of the cell (cell/vault): the CA, the
// certificates it issued, the CRL, the trust keys and the age public key.
type VaultService interface {
	RootPEM() []byte
	RootDER() []byte
	Certs() ([]vault.Cert, error)
	IssueCert(ctx context.Context, in vault.NewCert, audit storage.Entry) (vault.Issued, error)
	Revoke(ctx context.Context, serial string, audit storage.Entry) (vault.Cert, error)
	CRL() (der, pem []byte, err error)
	TrustKeys() ([]vault.TrustKey, error)
	TrustKey(name string) (vault.TrustKey, error)
	AddTrustKey(in vault.NewTrustKey, audit storage.Entry) (vault.TrustKey, error)
	DeleteTrustKey(name string, audit storage.Entry) error
	AgePublicKey() string
}

// The root and the CRL are public, before setup too: a new device fetches the
// root to trust the cell's certificates, and anything checking one fetches the
// CRL, before anyone could log it in.
func (s *Server) vaultRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/vault/ca", Access: Public, Handle: s.vaultCA},
		{Method: "GET", Path: "/api/vault/crl", Access: Public, Handle: s.vaultCRL},
		{Method: "GET", Path: "/api/vault/certs", Access: Admin, Handle: s.vaultCerts},
		{Method: "POST", Path: "/api/vault/certs", Access: Admin, Action: "vault.cert_issue", TargetType: "cert", Status: 201, Handle: s.vaultIssue},
		{Method: "POST", Path: "/api/vault/certs/:serial/revoke", Access: Admin, Action: "vault.cert_revoke", TargetType: "cert", Handle: s.vaultRevoke},
		{Method: "GET", Path: "/api/vault/trust-keys", Access: Admin, Handle: s.vaultTrustKeys},
		{Method: "POST", Path: "/api/vault/trust-keys", Access: Admin, Action: "vault.trust_key_add", TargetType: "trust_key", Status: 201, Handle: s.vaultAddTrustKey},
		{Method: "GET", Path: "/api/vault/trust-keys/:name", Access: Admin, Handle: s.vaultTrustKey},
		{Method: "DELETE", Path: "/api/vault/trust-keys/:name", Access: Admin, Action: "vault.trust_key_delete", TargetType: "trust_key", Handle: s.vaultDeleteTrustKey},
		{Method: "GET", Path: "/api/vault/age", Access: Admin, Handle: s.vaultAge},
	}
}

// derOrPEM reads ?format=: "pem" (or none) or "der".
func derOrPEM(req *Request) (der bool, err error) {
	switch f := req.URL.Query().Get("format"); f {
	case "", "pem":
		return false, nil
	case "der":
		return true, nil
	default:
		return false, fault.Invalid("invalid_format", "format must be pem (the default) or der")
	}
}

// vaultCA is the root certificate: PEM, or DER (?format=der) as phones install it.
func (s *Server) vaultCA(req *Request) (any, error) {
	der, err := derOrPEM(req)
	if err != nil {
		return nil, err
	}
	if der {
		return Raw{ContentType: "application/x-x509-ca-cert", Filename: "cell-ca.crt", Body: s.deps.Vault.RootDER()}, nil
	}
	return Raw{ContentType: "application/x-pem-file", Filename: "cell-ca.pem", Body: s.deps.Vault.RootPEM()}, nil
}

func (s *Server) vaultCRL(req *Request) (any, error) {
	asDER, err := derOrPEM(req)
	if err != nil {
		return nil, err
	}
	der, pem, err := s.deps.Vault.CRL()
	if err != nil {
		return nil, err
	}
	if asDER {
		return Raw{ContentType: "application/pkix-crl", Filename: "cell-ca.crl", Body: der}, nil
	}
	return Raw{ContentType: "application/x-pem-file", Filename: "cell-ca.crl.pem", Body: pem}, nil
}

func (s *Server) vaultCerts(req *Request) (any, error) {
	cs, err := s.deps.Vault.Certs()
	if err != nil {
		return nil, err
	}
	return map[string]any{"certs": cs}, nil
}

// vaultIssue answers with the new certificate and its private key: the only
// response that ever holds it.
func (s *Server) vaultIssue(req *Request) (any, error) {
	var in vault.NewCert
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	out, err := s.deps.Vault.IssueCert(req.Context(), in, s.auditEntry(req, nil))
	if err != nil {
		return nil, err
	}
	req.Audited()
	return out, nil
}

func (s *Server) vaultRevoke(req *Request) (any, error) {
	serial := req.Params.ByName("serial")
	if len(serial) <= 64 {
		req.TargetID = serial
	}
	c, err := s.deps.Vault.Revoke(req.Context(), serial, s.auditEntry(req, nil))
	if err != nil {
		return nil, err
	}
	req.Audited()
	return c, nil
}

func (s *Server) vaultTrustKeys(req *Request) (any, error) {
	ks, err := s.deps.Vault.TrustKeys()
	if err != nil {
		return nil, err
	}
	return map[string]any{"trust_keys": ks}, nil
}

func (s *Server) vaultTrustKey(req *Request) (any, error) {
	return s.deps.Vault.TrustKey(req.Params.ByName("name"))
}

func (s *Server) vaultAddTrustKey(req *Request) (any, error) {
	var in vault.NewTrustKey
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if len(in.Name) <= 63 {
		req.TargetID = in.Name
	}
	k, err := s.deps.Vault.AddTrustKey(in, s.auditEntry(req, nil))
	if err != nil {
		return nil, err
	}
	req.Audited()
	return k, nil
}

func (s *Server) vaultDeleteTrustKey(req *Request) (any, error) {
	name := req.Params.ByName("name")
	if len(name) <= 63 {
		req.TargetID = name
	}
	if err := s.deps.Vault.DeleteTrustKey(name, s.auditEntry(req, nil)); err != nil {
		return nil, err
	}
	req.Audited()
	return map[string]any{"deleted": name}, nil
}

func (s *Server) vaultAge(req *Request) (any, error) {
	return map[string]any{"public_key": s.deps.Vault.AgePublicKey()}, nil
}
