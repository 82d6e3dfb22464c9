package outside

import (
	"encoding/base64"
	"net/url"
	"strings"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/netstack/ddns"
)

// Reach is the config's "outside" section: how the cell finds its public
// address, whether it asks the home router for the port, and where the
// reachability test's echo service is.
type Reach struct {
	// PortMapping asks the home router to forward wg_port (UPnP IGD, NAT-PMP
	// or PCP, whichever it speaks). Off for those who forward by hand.
	PortMapping bool `json:"port_mapping"`
	// PublicAddressURL answers GET with the asker's address as text (like
	// api.ipify.org); asked only when neither the uplink nor the router
	// tells the public address. Empty: never asked (no third party learns
	// of the cell unless the admin says so).
	PublicAddressURL string `json:"public_address_url"`
	// EchoURL is the reachability test's echo service (see the package doc);
	// empty: the test is unavailable.
	EchoURL string `json:"echo_url"`
	// CheckMinutes is how often the public address is looked at again
	// although nothing on the uplink changed (the router's side can change
	// unseen): 1 to 1440, default 10.
	CheckMinutes int `json:"check_minutes"`
}

// DDNS is the config's "ddns" section: which provider keeps the public name
// pointing at the public address. Its secret (the TSIG key, the password) is
// in the vault under SecretName, never here.
type DDNS struct {
	// Provider is "off" (the default), "rfc2136" or "dyndns2".
	Provider string `json:"provider"`
	// Hostname is the name kept up to date; empty: the endpoint's name.
	Hostname string `json:"hostname"`
	// RFC 2136: the zone's primary (host[:port]), the zone, the TSIG key's
	// name and algorithm.
	Server    string `json:"server,omitempty"`
	Zone      string `json:"zone,omitempty"`
	KeyName   string `json:"key_name,omitempty"`
	Algorithm string `json:"algorithm,omitempty"`
	// dyndns2: the provider's update URL (https) and the account.
	URL      string `json:"url,omitempty"`
	Username string `json:"username,omitempty"`
	// IntervalMinutes re-sends unchanged addresses this often (providers
	// expire idle names): 5 to 10080, default 1440 (a day).
	IntervalMinutes int `json:"interval_minutes"`
}

// SecretName is the vault entry of the DDNS provider's secret.
const SecretName = "ddns/secret"

// Providers.
const (
	ProviderOff     = "off"
	ProviderRFC2136 = "rfc2136"
	ProviderDynDNS2 = "dyndns2"
)

// ReachSection is the "outside" section's registration.
func ReachSection() config.Section {
	return config.Section{Name: "outside", New: func() any { return &Reach{PortMapping: true, CheckMinutes: 10} },
		Validate: func(v any) error { return v.(*Reach).Validate() }}
}

// DDNSSection is the "ddns" section's registration.
func DDNSSection() config.Section {
	return config.Section{Name: "ddns", New: func() any { return &DDNS{Provider: ProviderOff, IntervalMinutes: 1440} },
		Validate: func(v any) error { return v.(*DDNS).Validate() }}
}

// Validate checks the section.
func (r Reach) Validate() error {
	if r.CheckMinutes < 1 || r.CheckMinutes > 1440 {
		return fault.Invalid("invalid_check_minutes", "outside.check_minutes must be from 1 to 1440 (got %d)", r.CheckMinutes)
	}
	if err := checkURL("outside.public_address_url", r.PublicAddressURL, false); err != nil {
		return err
	}
	return checkURL("outside.echo_url", r.EchoURL, false)
}

// checkURL accepts "" or an http(s) URL with a host, no credentials and no
// fragment; httpsOnly refuses http.
func checkURL(field, s string, httpsOnly bool) error {
	if s == "" {
		return nil
	}
	want := "an http or https URL"
	if httpsOnly {
		want = "an https URL"
	}
	u, err := url.Parse(s)
	bad := err != nil || len(s) > 2048 || u.Host == "" || u.User != nil || u.Fragment != "" || u.Opaque != "" ||
		strings.ContainsAny(s, " \t\r\n\x00") || (u.Scheme != "https" && (httpsOnly || u.Scheme != "http"))
	if bad {
		return fault.Invalid("invalid_url", "%s must be %s with a host and no user name or password in it (got %s)", field, want, names.Quote(s))
	}
	return nil
}

// placeholderSecret stands in for the vault's secret when only the section's
// other fields are checked.
var placeholderSecret = base64.StdEncoding.EncodeToString(make([]byte, 32))

// Validate checks the section (its secret is checked where it is given).
func (d DDNS) Validate() error {
	if d.IntervalMinutes < 5 || d.IntervalMinutes > 10080 {
		return fault.Invalid("invalid_interval", "ddns.interval_minutes must be from 5 to 10080 (a week) (got %d)", d.IntervalMinutes)
	}
	if d.Hostname != "" && !names.ValidDomain(d.Hostname) {
		return fault.Invalid("invalid_hostname", "ddns.hostname must be a DNS name such as home.example.org (got %s)", names.Quote(d.Hostname))
	}
	switch d.Provider {
	case ProviderOff:
		return nil
	case ProviderRFC2136, ProviderDynDNS2:
		u, err := d.updater(placeholderSecret, "example.org", "")
		if err != nil {
			return err
		}
		return plain(u.(interface{ Validate() error }).Validate())
	default:
		return fault.Invalid("invalid_provider", "ddns.provider must be \"off\", \"rfc2136\" (a DNS dynamic update signed with TSIG) or \"dyndns2\" (most commercial providers) (got %s)", names.Quote(d.Provider))
	}
}

// plain makes a validation error of the ddns package a 400.
func plain(err error) error {
	if err == nil {
		return nil
	}
	return fault.Invalid("invalid_ddns", "%s", err.Error())
}

// name is the hostname kept up to date: the section's, else fallback (the
// endpoint's host).
func (d DDNS) name(fallback string) string {
	if d.Hostname != "" {
		return d.Hostname
	}
	return fallback
}

// updater builds the provider's updater with its secret.
func (d DDNS) updater(secret, fallbackName, userAgent string) (ddns.Updater, error) {
	name := d.name(fallbackName)
	switch d.Provider {
	case ProviderRFC2136:
		return &ddns.RFC2136{Server: d.Server, Zone: d.Zone, Name: name, KeyName: d.KeyName, Algorithm: d.Algorithm, Secret: secret}, nil
	case ProviderDynDNS2:
		return &ddns.DynDNS2{URL: d.URL, Hostname: name, Username: d.Username, Password: secret, UserAgent: userAgent}, nil
	}
	return nil, fault.Invalid("invalid_provider", "no dynamic DNS provider is set")
}

func (d DDNS) interval() time.Duration { return time.Duration(d.IntervalMinutes) * time.Minute }
