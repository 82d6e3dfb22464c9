package uplink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// DiscoverOptions say where Discover may look beyond the uplink.
type DiscoverOptions struct {
	// URL is a "what is my address" service answering GET with the
	// address as text (http or https); optional.
	URL string
	// Router reports the home router's external address (the port
	// mapper's); optional.
	Router func(ctx context.Context) (netip.Addr, error)
	// Client fetches URL; optional (a client with Timeout).
	Client *http.Client
	// Timeout bounds each of the router's and the URL's answers; optional,
	// 10 s.
	Timeout time.Duration
}

// Source names for Public.Source.
const (
	SourceUplink = "uplink"
	SourceRouter = "router"
	SourceURL    = "url"
)

// Public is the cell's public address as Discover found it.
type Public struct {
	// Addrs are the public addresses, IPv4 first. The IPv6 ones are
	// always the uplink's own.
	Addrs []netip.Addr
	// Source is where the IPv4 address came from: "uplink", "router" or
	// "url"; "uplink" too when only the uplink's IPv6 addresses were
	// found, "" when nothing was.
	Source string
	// CGNAT is set when the uplink's or the router's external address is
	// in 100.64.0.0/10: the provider's NAT stands in front of the home,
	// and the cell cannot be reached over IPv4 without a relay.
	CGNAT bool
	// Error says, for a person, why no public IPv4 address was found, or
	// that the one found cannot be reached (CGNAT); "" when all is well.
	Error string
}

// maxAnswer bounds what Discover reads from the URL.
const maxAnswer = 8 << 10

// Discover finds the cell's public addresses from st (a State from Read)
// and, when the uplink has no public IPv4 address, from o.Router and then
// o.URL. It never fails: what went wrong is in Public.Error.
func Discover(ctx context.Context, st State, o DiscoverOptions) Public {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	var v4, v6 []netip.Addr
	for _, a := range st.Public {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	if len(v4) > 0 {
		return Public{Addrs: append(v4, v6...), Source: SourceUplink}
	}
	var p Public
	var problems []string
	for _, pf := range st.Addrs {
		if pf.Addr().Is4() && Classify(pf.Addr()) == KindCGNAT {
			p.CGNAT = true
			problems = append(problems, fmt.Sprintf("the uplink's address %s is a carrier-grade NAT address (100.64.0.0/10): the provider shares one public address among many customers, and the cell cannot be reached from outside over IPv4 without a relay", pf.Addr()))
			break
		}
	}
	found := func(a netip.Addr, source string) Public {
		p.Addrs = append([]netip.Addr{a}, v6...)
		p.Source = source
		p.Error = strings.Join(problems, "; ")
		return p
	}
	if o.Router != nil {
		a, err := askRouter(ctx, o)
		switch {
		case err != nil:
			problems = append(problems, "the home router did not tell its external address: "+err.Error())
		case Classify(a) == KindCGNAT:
			p.CGNAT = true
			problems = append(problems, fmt.Sprintf("the home router's external address %s is a carrier-grade NAT address (100.64.0.0/10): the provider shares one public address among many customers, and the cell cannot be reached from outside over IPv4 without a relay", a))
		case Classify(a) != KindPublic:
			problems = append(problems, fmt.Sprintf("the home router reports %s as its external address, a %s address: there is another router between it and the internet", a, Classify(a)))
		default:
			if !p.CGNAT {
				return found(a, SourceRouter)
			}
		}
	}
	if o.URL != "" {
		a, err := askURL(ctx, o)
		if err != nil {
			problems = append(problems, err.Error())
		} else {
			return found(a, SourceURL)
		}
	} else if !p.CGNAT {
		problems = append(problems, "no address-discovery URL is configured")
	}
	p.Addrs = v6
	if len(v6) > 0 {
		p.Source = SourceUplink
	}
	p.Error = "no public IPv4 address: " + strings.Join(problems, "; ")
	return p
}

func askRouter(ctx context.Context, o DiscoverOptions) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	a, err := o.Router(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	if !a.IsValid() {
		return netip.Addr{}, errors.New("it answered no address")
	}
	return a.Unmap(), nil
}

func askURL(ctx context.Context, o DiscoverOptions) (netip.Addr, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return netip.Addr{}, errors.New("the address-discovery URL must be an http or https URL")
	}
	// Only the host goes into messages: a URL may carry a token.
	where := u.Scheme + "://" + u.Host
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.URL, nil)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s: %v", where, err)
	}
	req.Header.Set("Accept", "text/plain")
	c := o.Client
	if c == nil {
		c = &http.Client{Timeout: o.Timeout}
	}
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may carry a token
		}
		return netip.Addr{}, fmt.Errorf("%s did not answer: %v", where, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s: reading its answer: %v", where, err)
	}
	if resp.StatusCode != http.StatusOK {
		return netip.Addr{}, fmt.Errorf("%s answered %s", where, resp.Status)
	}
	if len(body) > maxAnswer {
		return netip.Addr{}, fmt.Errorf("%s answered more than %d KiB, not an address", where, maxAnswer>>10)
	}
	text := string(bytes.TrimSpace(body))
	a, err := netip.ParseAddr(text)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s answered %s, not an address", where, quote(text))
	}
	a = a.Unmap().WithZone("")
	if k := Classify(a); k != KindPublic {
		return netip.Addr{}, fmt.Errorf("%s answered %s, a %s address, not a public one", where, a, k)
	}
	return a, nil
}

// quote shows the start of an unexpected answer, safe for a log line.
func quote(s string) string {
	const max = 40
	if s == "" {
		return "nothing"
	}
	cut := s
	if len(cut) > max {
		cut = cut[:max]
		for !utf8.ValidString(cut) && len(cut) > 0 {
			cut = cut[:len(cut)-1]
		}
		return fmt.Sprintf("%q…", cut)
	}
	return fmt.Sprintf("%q", cut)
}
