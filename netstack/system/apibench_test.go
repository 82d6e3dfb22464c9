package system_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/health"
	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/netstack/nstest"
	"github.com/pic-cell/cell/storage"
)

// phc hashes a password the way the cell does (argon2id, m=19 MiB, t=2).
func phc(pw string) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	key := argon2.IDKey([]byte(pw), salt, 2, 19*1024, 1, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=2,p=1$%s$%s", argon2.Version, 19*1024, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// seedCell writes a set-up cell with n peers straight into a data
// directory, as if they had been added over months.
func seedCell(b *testing.B, dir string, n int) {
	db, err := storage.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	netSec := config.Network{WGPort: 51820, SubnetV4: "10.77.0.0/16", SubnetV6: "fd77::/64", WANInterface: "auto"}
	cfg := map[string]any{"cell": config.Cell{Name: "home", Domain: "cell.test"}, "network": netSec,
		"health": health.Config{IntervalSeconds: 3600, Keep: 10}}
	if err := db.Settings().CompleteSetup(cfg, storage.User{Username: "admin", Role: storage.RoleAdmin, PasswordHash: phc(adminPW)}, nil); err != nil {
		b.Fatal(err)
	}
	v4, v6 := netSec.SubnetV4, netSec.SubnetV6
	for i := range n {
		name := fmt.Sprintf("seed%d", i)
		k := newKey(b)
		psk := newKey(b)
		p := storage.Peer{Name: name, PublicKey: k.PublicKey().String(), Route: storage.RouteFull, Enabled: true,
			Policy: storage.PeerPolicy{Internet: storage.Allow, LAN: storage.Allow, Peers: storage.Deny}}
		err := db.Peers().Create(&p, mustPrefix(v4), mustPrefix(v6),
			map[string][]byte{storage.PeerSecret(name, storage.SecretPresharedKey): psk[:]},
			storage.User{Username: name, Role: storage.RolePeer, PasswordHash: "unused"}, nil)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAPIPeerAdd times POST /api/peers against the daemon in TUN mode,
// from the request until the answer, which comes after the peer's WireGuard
// peer and firewall elements are live, at 100, 1,000 and 10,000 existing
// peers. The request includes the argon2id hash of the peer's one-time
// password (m=19 MiB, t=2), which alone costs tens of milliseconds here.
func BenchmarkAPIPeerAdd(b *testing.B) {
	nstest.RequireRoot(b)
	bin := daemonBinary(b)
	sizes := []int{100, 1000, 10000}
	apis := make([]*api, len(sizes))
	lats := make([][]time.Duration, len(sizes))
	starts := make([]time.Duration, len(sizes))
	for i, n := range sizes {
		ns := nstest.NewNS(b, fmt.Sprintf("apibench%d", n))
		data := b.TempDir()
		seedCell(b, data, n)
		started := time.Now()
		startDaemon(b, privateRun(ns, bin, "-data", data, "-listen", "127.0.0.1:3000", "-wg-mode", "tun", "-log-level", "warn")...)
		a := newAPI(b, "http://127.0.0.1:3000", func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.Dial(addr, 5*time.Second)
		})
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if c, err := ns.Dial("127.0.0.1:3000", time.Second); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("daemon did not start")
			}
			time.Sleep(100 * time.Millisecond)
		}
		a.login("admin", adminPW)
		a.waitRunning()
		// Start-up: the whole device and firewall built from the database.
		starts[i] = time.Since(started)
		apis[i] = a
	}
	k := 0
	for b.Loop() {
		for range 300 {
			for i, a := range apis {
				start := time.Now()
				_, err := a.CreatePeer(context.Background(), client.NewPeer{Name: fmt.Sprintf("new%d", k)})
				a.ok("POST /api/peers", err)
				lats[i] = append(lats[i], time.Since(start))
			}
			k++
		}
	}
	reportLatencies(b, sizes, func(i int) []time.Duration { return lats[i] })
	for i, n := range sizes {
		b.ReportMetric(float64(starts[i].Milliseconds()), fmt.Sprintf("start@%d-ms", n))
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
