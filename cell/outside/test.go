package outside

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/netstack/probe"
)

// Tester runs one diagnostic probe (netstack/probe's Prober).
type Tester interface {
	Run(ctx context.Context, r probe.Request) (probe.Result, error)
}

// Echo is the reachability test's two halves: asking the outside echo
// service to send its datagram (echo.Ask), and hearing it at the WireGuard
// port (the device's WaitEcho).
type Echo struct {
	Ask  func(ctx context.Context, url, target string, nonce [16]byte) error
	Wait func(ctx context.Context, nonce [16]byte) (netip.AddrPort, error)
}

// TestRequest is the body of POST /api/network/test.
type TestRequest struct {
	Kind   string `json:"kind"`            // ping, dns, http, port, reachability
	Target string `json:"target"`          // reachability: empty (the endpoint) or host:port
	Proto  string `json:"proto,omitempty"` // port: tcp or udp
	Type   string `json:"type,omitempty"`  // dns: A, AAAA, MX, TXT, ...
}

// TestResult is a test's answer.
type TestResult struct {
	Kind    string   `json:"kind"`
	Target  string   `json:"target"`
	OK      bool     `json:"ok"`
	Address string   `json:"address,omitempty"`
	RTTMS   float64  `json:"rtt_ms"`
	Detail  string   `json:"detail"`
	Answers []string `json:"answers,omitempty"`
	Status  int      `json:"status,omitempty"`
}

// reachWait is how long the reachability test listens for the echo.
var reachWait = 5 * time.Second

// Test runs one diagnostic. A probe that finds something down is a result
// with ok false; an error is a bad or forbidden request (400), too many at
// once (429) or a test this cell cannot run (503).
func (x *Outside) Test(ctx context.Context, r TestRequest) (TestResult, error) {
	if r.Kind == "reachability" {
		return x.reachability(ctx, r)
	}
	if x.o.Tester == nil {
		return TestResult{}, fault.Errorf(fault.ErrUnavailable, "tests_unavailable", "%s", errNoTester.Error())
	}
	res, err := x.o.Tester.Run(ctx, probe.Request{Kind: r.Kind, Target: r.Target, Proto: r.Proto, Type: r.Type})
	switch {
	case errors.Is(err, probe.ErrBusy):
		return TestResult{}, fault.Errorf(fault.ErrTooMany, "too_many_tests", "%s", err.Error())
	case errors.Is(err, probe.ErrInvalid):
		return TestResult{}, fault.Invalid("invalid_test", "%s", err.Error())
	case err != nil:
		return TestResult{}, err
	}
	return TestResult{Kind: res.Kind, Target: res.Target, OK: res.OK, Address: res.Address, RTTMS: ms(res.RTT),
		Detail: res.Detail, Answers: res.Answers, Status: res.Status}, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// reachability asks the echo service to send its datagram to the endpoint
// and listens for it at the WireGuard port.
func (x *Outside) reachability(ctx context.Context, r TestRequest) (TestResult, error) {
	doc, err := x.config()
	if err != nil {
		return TestResult{}, err
	}
	var reach Reach
	doc.Decode("outside", &reach)
	if reach.EchoURL == "" {
		return TestResult{}, fault.Errorf(fault.ErrConflict, "no_echo_url", "the reachability test needs an outside echo service: set outside.echo_url in the config")
	}
	if x.o.Echo.Ask == nil || x.o.Echo.Wait == nil {
		return TestResult{}, fault.Errorf(fault.ErrUnavailable, "tests_unavailable", "the WireGuard device is not running: the reachability test needs it")
	}
	if r.Proto != "" || r.Type != "" {
		return TestResult{}, fault.Invalid("invalid_test", "the reachability test takes only a target (host:port, default the endpoint)")
	}
	target := doc.Endpoint().String()
	if r.Target != "" {
		if !validHostPortTarget(r.Target) {
			return TestResult{}, fault.Invalid("invalid_test", "the reachability test's target must be host:port, such as home.example.org:51820")
		}
		target = r.Target
	}
	n := nonce()
	ctx, cancel := context.WithTimeout(ctx, reachWait+10*time.Second)
	defer cancel()
	start := time.Now()
	heard := make(chan netip.AddrPort, 1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		if from, err := x.o.Echo.Wait(wctx, n); err == nil {
			heard <- from
		}
	}()
	res := TestResult{Kind: "reachability", Target: target}
	if err := x.o.Echo.Ask(ctx, reach.EchoURL, target, n); err != nil {
		res.Detail = "the echo service could not be asked: " + err.Error()
		return res, nil
	}
	select {
	case from := <-heard:
		res.OK, res.RTTMS = true, ms(time.Since(start))
		res.Address = from.String()
		res.Detail = fmt.Sprintf("a WireGuard-shaped packet sent from outside to %s arrived (from %s): phones can reach the cell", target, from)
	case <-time.After(reachWait):
		res.Detail = fmt.Sprintf("the echo service sent a packet to %s, and it did not arrive within %s: the port is not forwarded to the cell (check the port mapping, or forward UDP %d on the router by hand), or the endpoint is not the home's address", target, reachWait, doc.Network().WGPort)
	case <-ctx.Done():
		return res, ctx.Err()
	}
	return res, nil
}

// validHostPortTarget accepts host:port with a port, a name or an address.
func validHostPortTarget(s string) bool {
	if len(s) > 260 || strings.ContainsAny(s, " \t\r\n\x00/;$`'\"\\") {
		return false
	}
	_, err := netip.ParseAddrPort(s)
	if err == nil {
		return true
	}
	i := strings.LastIndexByte(s, ':')
	return i > 0 && names.ValidHostPort(s)
}
