package outside

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

// DDNSChange is the body of PUT /api/network/ddns: the whole section, and
// the provider's secret (the TSIG key in base64, or the account's password).
// An absent secret keeps the stored one; provider "off" deletes it.
type DDNSChange struct {
	DDNS
	Secret *string `json:"secret,omitempty"`
}

// PutDDNS validates and stores the DDNS section and its secret together with
// the audit entry, in one transaction; the loop then makes a new keeper,
// which updates the provider at once.
func (x *Outside) PutDDNS(raw []byte, audit storage.Entry) (DDNSView, error) {
	ch := DDNSChange{DDNS: DDNS{Provider: ProviderOff, IntervalMinutes: 1440}}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ch); err != nil {
		return DDNSView{}, fault.Invalid("invalid_ddns", "the body must be the ddns settings as JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if ch.Provider == "" {
		ch.Provider = ProviderOff
	}
	if err := ch.DDNS.Validate(); err != nil {
		return DDNSView{}, err
	}
	stored, err := x.secret()
	if err != nil {
		return DDNSView{}, err
	}
	secret := stored
	if ch.Secret != nil {
		secret = *ch.Secret
	}
	var within storage.Within
	switch {
	case ch.Provider == ProviderOff:
		if stored != "" {
			within = func(tx *storage.Tx) error { return x.o.DB.Vault.DeleteTx(tx, SecretName) }
		}
	case secret == "":
		return DDNSView{}, fault.Invalid("missing_secret", "the %s provider needs its secret (%s)", ch.Provider, secretWhat(ch.Provider))
	default:
		doc, err := x.config()
		if err != nil {
			return DDNSView{}, err
		}
		u, err := ch.DDNS.updater(secret, doc.Endpoint().Host, x.o.UserAgent)
		if err != nil {
			return DDNSView{}, err
		}
		if err := plain(u.(interface{ Validate() error }).Validate()); err != nil {
			return DDNSView{}, err
		}
		if ch.Secret != nil {
			within = func(tx *storage.Tx) error { return x.o.DB.Vault.PutTx(tx, SecretName, []byte(secret)) }
		}
	}
	patch, _ := json.Marshal(map[string]any{"ddns": ch.DDNS})
	audit.TargetType, audit.TargetID = "ddns", ch.Provider
	if _, _, err := x.o.Settings.PatchConfigWithin(patch, audit, within); err != nil {
		return DDNSView{}, err
	}
	// The loop hears of the commit and makes the new keeper, which updates
	// the provider at once; until then the state says "pending".
	return x.DDNSStatus(), nil
}

func secretWhat(provider string) string {
	if provider == ProviderRFC2136 {
		return "the TSIG key's secret, base64 as in a BIND key file"
	}
	return "the account's password or token"
}

// RefreshDDNS is POST /api/network/ddns/refresh: look at the public address
// again and send it to the provider now.
func (x *Outside) RefreshDDNS() (DDNSView, error) {
	v := x.DDNSStatus()
	if v.Provider == ProviderOff {
		return v, fault.Errorf(fault.ErrConflict, "ddns_off", "no dynamic DNS provider is set: set one with PUT /api/network/ddns first")
	}
	x.Refresh()
	return v, nil
}

var errNoTester = errors.New("diagnostics are not available on this cell")
