package setup

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
)

// The setup code guards first contact: until setup is complete, every change
// of the wizard (a step, the completion) needs the cell's one-time code, so that
// the first device on the LAN cannot make itself admin by opening the wizard.
// The code comes from outside the API: `cellctl image build` prints it and
// writes it to the card's boot partition; a cell without one (make run) makes
// its own and writes it to DATA/setup-code and its log. The wizard keeps only
// the code's SHA-256, compares in constant time, and once setup is complete the
// code is void (every change is refused with ErrConflict, code or not).

// CodeWhere says where an operator finds the code; every refusal for a
// missing or wrong code says it.
const CodeWhere = "the setup code is printed by `cellctl image build` and written to the card's boot partition as setup-code.txt; " +
	"with `make run` it is in the log and in DATA/setup-code"

// Code throttle: the 11th wrong code from one source address within the window
// is refused with ErrTooMany, as is everything from that address (the right
// code too) until its oldest failure leaves the window.
const (
	CodeFailLimit  = 10
	CodeFailWindow = 15 * time.Minute
	maxCodeSources = 10000
)

// NewCode returns a fresh setup code: 140 random bits as 28 base32 letters and
// digits in groups of four (ABCD-EFGH-...), made to be read off a screen or a
// file and typed.
func NewCode(r io.Reader) (string, error) {
	b := make([]byte, 18)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	s := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)[:28]
	var out strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			out.WriteByte('-')
		}
		out.WriteString(s[i : i+4])
	}
	return out.String(), nil
}

// normalizeCode is what is hashed and compared: case, dashes and white space do
// not matter, so that a code typed from a printout works.
func normalizeCode(code string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '-', ' ', '\t', '\r', '\n':
			return -1
		}
		if 'a' <= r && r <= 'z' {
			return r - 'a' + 'A'
		}
		return r
	}, code)
}

// codeGate is the hash of the code and the failures per source address.
type codeGate struct {
	mu    sync.Mutex
	hash  [sha256.Size]byte
	set   bool
	fails map[string][]time.Time
	hosts []string // the cell's own host names (lower case, no trailing dot)
}

// SetCode sets the setup code the wizard's changes need; only its SHA-256 is
// kept. An empty code is refused: a wizard without a code refuses every change.
func (c *Wizard) SetCode(code string) error {
	n := normalizeCode(code)
	if n == "" {
		return fault.Invalid("empty_setup_code", "the setup code is empty")
	}
	c.gate.mu.Lock()
	defer c.gate.mu.Unlock()
	c.gate.hash, c.gate.set = sha256.Sum256([]byte(n)), true
	return nil
}

// CheckCode lets a change of the wizard through when code is the setup code.
// Once setup is complete it answers ErrConflict whatever the code; a source
// with CodeFailLimit wrong codes in CodeFailWindow gets ErrTooMany; a missing
// or wrong code is ErrForbidden with a message that says where the code is.
// The code is never part of an error.
func (c *Wizard) CheckCode(code, source string) error {
	if err := c.refuseAfterSetup(); err != nil {
		return err
	}
	now := c.now()
	g := &c.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.recentLocked(source, now)) >= CodeFailLimit {
		return fault.Errorf(fault.ErrTooMany, "too_many_attempts", "too many wrong setup codes from this address; wait 15 minutes and try again")
	}
	if code == "" {
		return fault.Errorf(fault.ErrForbidden, "setup_code_required", "the setup wizard needs the setup code in the X-Setup-Code header: %s", CodeWhere)
	}
	sum := sha256.Sum256([]byte(normalizeCode(code)))
	if subtle.ConstantTimeCompare(sum[:], g.hash[:]) == 1 && g.set {
		return nil
	}
	g.failLocked(source, now)
	return fault.Errorf(fault.ErrForbidden, "wrong_setup_code", "that is not the setup code: %s", CodeWhere)
}

func (g *codeGate) recentLocked(source string, now time.Time) []time.Time {
	ts := g.fails[source]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= CodeFailWindow {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(g.fails, source)
	} else {
		g.fails[source] = ts
	}
	return ts
}

func (g *codeGate) failLocked(source string, now time.Time) {
	if g.fails == nil {
		g.fails = map[string][]time.Time{}
	}
	if len(g.fails) >= maxCodeSources {
		// A spray of source addresses: forget the quiet ones first, then any.
		for k := range g.fails {
			g.recentLocked(k, now)
		}
		for k := range g.fails {
			if len(g.fails) < maxCodeSources/2 {
				break
			}
			delete(g.fails, k)
		}
	}
	ts := g.recentLocked(source, now)
	if len(ts) < 2*CodeFailLimit { // more is never needed to decide
		g.fails[source] = append(ts, now)
	}
}

// SetHostnames names the cell's own host names (its system host name), at which
// the wizard answers besides IP literals, localhost and the cell's domain.
func (c *Wizard) SetHostnames(names ...string) {
	c.gate.mu.Lock()
	defer c.gate.mu.Unlock()
	c.gate.hosts = c.gate.hosts[:0]
	for _, n := range names {
		if n = canonicalHost(n); n != "" {
			c.gate.hosts = append(c.gate.hosts, n)
		}
	}
}

func canonicalHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

// CheckHost lets the wizard answer a request whose Host (host[:port], as the
// client sent it) is one of the cell's own: an IP literal, localhost, a host
// name given to SetHostnames, or the cell's domain (from the wizard's cell step
// or, once set up, the config). Anything else is ErrForbidden: a page on another
// site whose name is made to resolve to the cell (DNS rebinding) sends its own
// name as Host, so it never reaches the wizard.
func (c *Wizard) CheckHost(hostport string) error {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	h = canonicalHost(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
	if h == "" {
		return refuseHost()
	}
	if _, err := netip.ParseAddr(h); err == nil || h == "localhost" {
		return nil
	}
	c.gate.mu.Lock()
	hosts := append([]string(nil), c.gate.hosts...)
	c.gate.mu.Unlock()
	for _, n := range hosts {
		if h == n {
			return nil
		}
	}
	if d := c.domain(); d != "" && h == d {
		return nil
	}
	return refuseHost()
}

func refuseHost() error {
	return fault.Errorf(fault.ErrForbidden, "wrong_host", "the wizard answers only at the cell's own address "+
		"(an IP address, localhost, the cell's host name or its domain)")
}

// domain is the cell's domain: the config's once set up, else the cell step's.
func (c *Wizard) domain() string {
	var doc config.Doc
	if found, err := c.db.Settings().Config(&doc); err == nil && found {
		var cs config.Cell
		if json.Unmarshal(doc["cell"], &cs) == nil && cs.Domain != "" {
			return canonicalHost(cs.Domain)
		}
	}
	var cs config.Cell
	if found, err := c.db.Settings().SetupStep("cell", &cs); err == nil && found {
		return canonicalHost(cs.Domain)
	}
	return ""
}
