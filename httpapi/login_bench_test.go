package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pic-cell/cell/storage"
)

// loginBenchCell is benchCell's cell with production argon2id and admins more
// admin accounts (admin, admin2, ...), all with benchPassword: one account may log
// in only ten times in a row, and the benchmark logs in more often than that.
func loginBenchCell(b *testing.B, admins int) *httptest.Server {
	b.Helper()
	srv, c, db := benchCellAnd(b, 0)
	for i := 2; i <= admins; i++ {
		hash, err := c.Accounts.Hasher().Hash(benchPassword)
		if err != nil {
			b.Fatal(err)
		}
		if err := db.Users().Create(storage.User{Username: fmt.Sprint("admin", i), Role: storage.RoleAdmin, PasswordHash: hash}); err != nil {
			b.Fatal(err)
		}
	}
	return srv
}

// clientAt is an HTTP client whose connections come from ip (any of 127.0.0.0/8
// on Linux), so the API sees each as another source address.
func clientAt(ip string, conns int) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	tr := &http.Transport{DialContext: func(ctx context.Context, n, a string) (net.Conn, error) { return d.DialContext(ctx, n, a) },
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// postLogin logs in and returns the status, and the body of a refusal.
func postLogin(c *http.Client, base, user, pw string) (int, string, error) {
	res, err := c.Post(base+"/api/auth/login", "application/json", strings.NewReader(`{"username":"`+user+`","password":"`+pw+`"}`))
	if err != nil {
		return 0, "", err
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode == http.StatusOK {
		raw = nil
	}
	return res.StatusCode, string(raw), nil
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// BenchmarkAdminLoginDuringFlood measures the admin's login (the right password,
// from a quiet address, on a new connection: a browser logging in) on a cell with
// production argon2id cost, idle and while 200 other addresses send wrong
// passwords as fast as they are answered (200 logins in flight at all times), in
// alternating windows so that the machine's background load falls on both sides.
// Each of the admin's logins comes from an address of its own that has asked for
// nothing before. Target: p50 and p99 during the flood at most 3x idle. The flood's
// addresses each get ten guesses per 15 minutes, far more than the run needs, so the
// flood keeps the hasher busy throughout; they are refused (busy, then
// tarpitted) far more often than hashed. The first window waits until the flood's
// first comers, as new as the admin's address and so level with it, have had their
// turn (34 hashes): that start, at most one room of 16 hashes ahead of the admin,
// is not what is measured.
func BenchmarkAdminLoginDuringFlood(b *testing.B) {
	const (
		flooders = 200
		windows  = 6 // of each kind
		perWin   = 4 // admin logins per window
		admins   = 8 // accounts the admin's logins rotate over (49 logins, ten in a row each at most)
	)
	srv := loginBenchCell(b, admins)
	sample := 0
	adminLogin := func() time.Duration {
		sample++
		ip := fmt.Sprintf("127.40.%d.%d", sample/250, sample%250+1)
		user := "admin"
		if n := sample%admins + 1; n > 1 {
			user = fmt.Sprint("admin", n)
		}
		c := clientAt(ip, 1)
		defer c.Transport.(*http.Transport).CloseIdleConnections()
		t0 := time.Now()
		code, body, err := postLogin(c, srv.URL, user, benchPassword)
		d := time.Since(t0)
		if err != nil || code != http.StatusOK {
			b.Fatalf("the admin's login %d (%s from %s): %d %s %v", sample, user, ip, code, body, err)
		}
		return d
	}
	var codes sync.Map // status -> *atomic.Int64
	count := func(code int) {
		v, _ := codes.LoadOrStore(code, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	hashed := func() int64 {
		v, ok := codes.Load(http.StatusUnauthorized)
		if !ok {
			return 0
		}
		return v.(*atomic.Int64).Load()
	}
	floodClients := make([]*http.Client, flooders)
	for i := range floodClients {
		floodClients[i] = clientAt(fmt.Sprintf("127.41.%d.%d", i/250, i%250+1), 1)
	}
	startFlood := func() (stop func()) {
		done := make(chan struct{})
		var wg sync.WaitGroup
		for i, c := range floodClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ; n++ {
					select {
					case <-done:
						return
					default:
					}
					code, _, err := postLogin(c, srv.URL, "admin", fmt.Sprintf("guess %d of %d", n, i))
					if err != nil {
						code = -1
					}
					count(code)
				}
			}()
		}
		return func() {
			close(done)
			wg.Wait()
		}
	}

	adminLogin() // warm up: the first login makes the dummy's pages and the server's pool
	var idle, flood []time.Duration
	var floodTime time.Duration
	b.ResetTimer()
	for w := 0; w < windows; w++ {
		for range perWin {
			idle = append(idle, adminLogin())
		}
		stop := startFlood()
		t0 := time.Now()
		time.Sleep(200 * time.Millisecond) // the flood fills the hasher's places first
		// The first flood's addresses are as new as the admin's: the ones that got
		// places before it came are level with it and go first. Measure once they
		// have had their turn, and the flood is one of addresses that ask again.
		for hashed() < 2*17 {
			time.Sleep(10 * time.Millisecond)
		}
		for range perWin {
			flood = append(flood, adminLogin())
		}
		stop()
		floodTime += time.Since(t0)
	}
	b.StopTimer()

	var total int64
	codes.Range(func(k, v any) bool {
		n := v.(*atomic.Int64).Load()
		total += n
		b.Logf("flood answered %d: %d", k, n)
		return true
	})
	p50i, p99i := percentile(idle, 50), percentile(idle, 99)
	p50f, p99f := percentile(flood, 50), percentile(flood, 99)
	b.ReportMetric(float64(p50i.Milliseconds()), "p50-idle-ms")
	b.ReportMetric(float64(p99i.Milliseconds()), "p99-idle-ms")
	b.ReportMetric(float64(p50f.Milliseconds()), "p50-flood-ms")
	b.ReportMetric(float64(p99f.Milliseconds()), "p99-flood-ms")
	b.ReportMetric(float64(p50f)/float64(p50i), "p50-flood/idle")
	b.ReportMetric(float64(p99f)/float64(p99i), "p99-flood/idle")
	b.ReportMetric(float64(total)/floodTime.Seconds(), "flood-req/s")
	reportLoad(b)
	b.Logf("admin logins: idle %v, during the flood %v", idle, flood)
}
