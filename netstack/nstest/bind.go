package nstest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BIND is a real BIND9 (named) run by a test as the authoritative primary
// of one zone, which accepts dynamic updates (RFC 2136) signed with one
// TSIG key: the DNS provider of a cell that keeps its public name with
// RFC 2136.
type BIND struct {
	Addr      netip.AddrPort // where named listens (UDP and TCP)
	Zone      string         // the zone, fully qualified ("cell.test.")
	KeyName   string         // the TSIG key's name, fully qualified
	Algorithm string         // the key's algorithm, "hmac-sha256"
	Secret    string         // the key's secret, base64 as in a BIND key file
	Dir       string         // named.conf, the zone file, its journal and named's log
}

// StartBIND runs named inside ns, listening on addr port 53, as the
// primary of zone (which gets an SOA, an NS and the NS's A record, at
// addr) with a fresh random hmac-sha256 key allowed to update it. It
// returns once named answers the zone's SOA, and stops named when t ends
// (printing its log if t failed). It skips t when named is not installed.
//
// named runs as root in the foreground (-g: its log goes to the test, no
// -u: it keeps the rights to write its journal in the test's temporary
// directory, which is also made 0777 in case it drops them), and every path
// in its configuration is absolute, so nothing under /etc/bind is read or
// written. It has no control channel (no rndc key is needed) and does no
// recursion or DNSSEC validation: it is an authoritative server and nothing
// else.
func StartBIND(t testing.TB, ns *NS, addr netip.Addr, zone string) *BIND {
	t.Helper()
	named, err := exec.LookPath("named")
	if err != nil {
		t.Skipf("skipped: needs named (Debian: bind9): %v", err)
	}
	zone = dns.CanonicalName(zone)
	secret := make([]byte, 32)
	rand.Read(secret)
	b := &BIND{
		Addr:      netip.AddrPortFrom(addr, 53),
		Zone:      zone,
		KeyName:   "pic-test-key.",
		Algorithm: "hmac-sha256",
		Secret:    base64.StdEncoding.EncodeToString(secret),
		Dir:       t.TempDir(),
	}
	if err := os.Chmod(b.Dir, 0o777); err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("listen-on port 53 { %s; };\n\tlisten-on-v6 { none; };", addr)
	if addr.Is6() {
		listen = fmt.Sprintf("listen-on { none; };\n\tlisten-on-v6 port 53 { %s; };", addr)
	}
	conf := fmt.Sprintf(`options {
	directory %[1]q;
	pid-file %[2]q;
	session-keyfile %[3]q;
	managed-keys-directory %[1]q;
	%[4]s
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
};
controls { };
key %[5]q {
	algorithm %[6]s;
	secret %[7]q;
};
zone %[8]q {
	type primary;
	file %[9]q;
	journal %[10]q;
	allow-update { key %[5]q; };
};
`, b.Dir, filepath.Join(b.Dir, "named.pid"), filepath.Join(b.Dir, "session.key"), listen,
		b.KeyName, b.Algorithm, b.Secret, zone, filepath.Join(b.Dir, "zone.db"), filepath.Join(b.Dir, "zone.db.jnl"))
	rrtype := "A"
	if addr.Is6() {
		rrtype = "AAAA"
	}
	db := fmt.Sprintf(`$TTL 60
@	IN SOA ns.%[1]s hostmaster.%[1]s 1 3600 600 86400 60
@	IN NS ns.%[1]s
ns	IN %[2]s %[3]s
`, zone, rrtype, addr)
	confPath := filepath.Join(b.Dir, "named.conf")
	for name, text := range map[string]string{confPath: conf, filepath.Join(b.Dir, "zone.db"): db} {
		if err := os.WriteFile(name, []byte(text), 0o666); err != nil {
			t.Fatal(err)
		}
	}

	// No Pdeathsig: it fires when the OS thread that started named exits,
	// and Go ends threads (those NS.Run locked, for one) whenever it likes.
	log := &lockedBuffer{}
	cmd := ns.Command(named, "-g", "-n", "1", "-c", confPath)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start named: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			lines := strings.Split(log.String(), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			t.Logf("named's log:\n%s", strings.Join(lines, "\n"))
		}
	})

	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("named exited at start (%v):\n%s", waitErr, log.String())
		default:
		}
		if _, err := b.query(ns, zone, dns.TypeSOA); err == nil {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("named did not answer the SOA of %s within 15 s:\n%s", zone, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Lookup asks named directly (from inside ns) for name's records of qtype
// and returns their data in presentation form ("198.18.0.7" for an A),
// sorted as named gave them; it fails t when named does not answer.
func (b *BIND) Lookup(t testing.TB, ns *NS, name string, qtype uint16) []string {
	t.Helper()
	r, err := b.query(ns, name, qtype)
	if err != nil {
		t.Fatalf("ask named for %s %s: %v", name, dns.TypeToString[qtype], err)
	}
	var out []string
	for _, rr := range r.Answer {
		if rr.Header().Rrtype != qtype {
			continue
		}
		out = append(out, strings.TrimPrefix(rr.String(), rr.Header().String()))
	}
	return out
}

// query sends one unsigned question over UDP from inside ns; an answer
// other than NOERROR or NXDOMAIN is an error.
func (b *BIND) query(ns *NS, name string, qtype uint16) (*dns.Msg, error) {
	var r *dns.Msg
	err := ns.Run(func() error {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), qtype)
		c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		r, _, err = c.ExchangeContext(ctx, m, net.JoinHostPort(b.Addr.Addr().String(), "53"))
		return err
	})
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("named answered %s", dns.RcodeToString[r.Rcode])
	}
	return r, nil
}
