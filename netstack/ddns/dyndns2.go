package ddns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// DynDNS2 is the dyndns2 protocol over HTTPS, what most commercial
// providers speak (Dyn, No-IP, many routers): GET
// <URL>?hostname=<name>&myip=<ipv4>[,<ipv6>] with basic authentication and
// a User-Agent naming the client.
type DynDNS2 struct {
	URL       string       // https only, path included, e.g. https://members.dyndns.org/nic/update
	Hostname  string       // the name to update
	Username  string       // the account
	Password  string       // the account's password or token; never printed
	UserAgent string       // e.g. "pic-cell/1.2 (+https://example.org)"; "pic-cell" when empty
	Client    *http.Client // nil: a client with a 15 s timeout; tests pass one trusting their CA
}

// String describes the updater without its password.
func (d DynDNS2) String() string {
	return fmt.Sprintf("dyndns2 update of %s at %s as %s", d.Hostname, d.URL, d.Username)
}

// GoString is String, so that %#v does not print the password either.
func (d DynDNS2) GoString() string { return d.String() }

// Validate checks the configuration; its errors say which field is wrong
// and never contain the password.
func (d *DynDNS2) Validate() error {
	if d.URL == "" {
		return errors.New("the provider's URL is empty")
	}
	if !printable(d.URL) || len(d.URL) > 2048 {
		return errors.New("the provider's URL must be printable ASCII of at most 2048 characters")
	}
	u, err := url.Parse(d.URL)
	if err != nil {
		return errors.New("the provider's URL cannot be parsed")
	}
	if u.Scheme != "https" {
		return errors.New("the provider's URL must begin with https:// (the request carries the password)")
	}
	if u.User != nil {
		return errors.New("the provider's URL must not carry a user name or password; use the username and password settings")
	}
	if u.Fragment != "" || strings.Contains(d.URL, "#") {
		return errors.New("the provider's URL must not have a #fragment")
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return errors.New("the provider's URL has no host")
	}
	if a, err := netip.ParseAddr(u.Hostname()); err != nil {
		if err := checkName("the provider's URL host", u.Hostname(), false); err != nil {
			return err
		}
	} else if a.Zone() != "" {
		return errors.New("the provider's URL host must not have a zone")
	}
	if err := checkName("the hostname", d.Hostname, false); err != nil {
		return err
	}
	if !printable(d.Username) || len(d.Username) > 256 || strings.Contains(d.Username, ":") {
		return errors.New("the username must be printable ASCII without a colon, 1 to 256 characters")
	}
	if !printable(d.Password) || len(d.Password) > 256 {
		return errors.New("the password must be printable ASCII, 1 to 256 characters")
	}
	if d.UserAgent != "" && (!printable(d.UserAgent) || len(d.UserAgent) > 256) {
		return errors.New("the user agent must be printable ASCII of at most 256 characters")
	}
	return nil
}

// Update sends one dyndns2 request and maps its answer.
func (d *DynDNS2) Update(ctx context.Context, addrs []netip.Addr) error {
	if err := d.Validate(); err != nil {
		return refusedError("the dyndns2 settings are not usable: %v", err)
	}
	v4, v6, err := splitAddrs(addrs)
	if err != nil {
		return err
	}
	var ips []string
	for _, a := range []netip.Addr{v4, v6} {
		if a.IsValid() {
			ips = append(ips, a.String())
		}
	}
	u, _ := url.Parse(d.URL)
	q := u.Query()
	q.Set("hostname", strings.TrimSuffix(d.Hostname, "."))
	q.Set("myip", strings.Join(ips, ","))
	u.RawQuery = q.Encode()
	host := u.Host

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return refusedError("the dyndns2 request cannot be made: %v", err)
	}
	req.SetBasicAuth(d.Username, d.Password)
	ua := d.UserAgent
	if ua == "" {
		ua = "pic-cell"
	}
	req.Header.Set("User-Agent", ua)

	resp, err := d.client().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no answer from the provider %s in time", host)
		}
		return fmt.Errorf("cannot reach the provider %s: %s", host, clean(err.Error(), 200, d.Password))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	first, _, _ := strings.Cut(string(body), "\n")
	first = strings.TrimSpace(first)
	code, _, _ := strings.Cut(first, " ")

	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return authError("the provider %s refused the username or password (HTTP 401)", host)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return fmt.Errorf("the provider %s answered HTTP %d %s", host, resp.StatusCode, clean(first, 100, d.Password))
	}
	switch code {
	case "good", "nochg":
		return nil
	case "badauth":
		return authError("the provider %s refused the username or password (badauth)", host)
	case "abuse":
		return refusedError("the provider %s has blocked updates of this hostname for abuse (abuse): unblock it on the provider's site", host)
	case "nohost":
		return refusedError("the provider %s has no such hostname in this account (nohost)", host)
	case "notfqdn":
		return refusedError("the provider %s says the hostname is not a full domain name (notfqdn)", host)
	case "badagent":
		return refusedError("the provider %s refuses this client (badagent)", host)
	case "!donator":
		return refusedError("the provider %s says this needs a paid account (!donator)", host)
	case "numhost":
		return refusedError("the provider %s says too many hosts were updated at once (numhost)", host)
	case "!yours":
		return refusedError("the provider %s says the hostname belongs to another account (!yours)", host)
	case "911", "dnserr":
		return fmt.Errorf("the provider %s has a problem on its side (%s); trying again later", host, code)
	}
	return fmt.Errorf("the provider %s gave an answer this client does not know: %q", host, clean(first, 100, d.Password))
}

func (d *DynDNS2) client() *http.Client {
	c := &http.Client{Timeout: 15 * time.Second}
	if d.Client != nil {
		copied := *d.Client
		c = &copied
	}
	next := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return errors.New("the provider redirected to a URL that is not https")
		}
		if len(via) >= 5 {
			return errors.New("the provider redirected too many times")
		}
		if next != nil {
			return next(req, via)
		}
		return nil
	}
	return c
}
