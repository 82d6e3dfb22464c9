package httpapi

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/storage"
)

// The login throttle and the hasher's fair share under abuse, through the real API.
// Each source address is a loopback address of its own (Linux routes all of
// 127.0.0.0/8 to lo, so a client binds 127.x.y.z and the API sees that address).

// newEnvHashing is newEnv with argon2id at memoryKiB (0: the production 19 MiB), for
// the tests where hashing must take as long as on a cell.
func newEnvHashing(t *testing.T, memoryKiB uint32) *env {
	t.Helper()
	return buildEnv(t, t.TempDir(), cell.Options{HashMemoryKiB: memoryKiB}, depsOf, nil)
}

// fromAddr is a dialer that binds the client's end of every connection to ip.
func fromAddr(ip string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return d.DialContext
}

// clientFrom is a browser on the machine at ip.
func (e *env) clientFrom(ip string) *client {
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{DialContext: fromAddr(ip)}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &client{e: e, http: &http.Client{Jar: jar, Transport: tr, Timeout: 60 * time.Second}, setupCode: setupCode}
}

func loginBody(user, pw string) map[string]string {
	return map[string]string{"username": user, "password": pw}
}

func wantCode(t *testing.T, what string, r resp, status int, code string) {
	t.Helper()
	if r.status != status || (code != "" && r.code() != code) {
		t.Fatalf("%s: %d %s, want %d %s", what, r.status, r.body, status, code)
	}
}

func TestLoginFailuresElsewhereDoNotLockTheAdminOut(t *testing.T) {
	e := newEnv(t)
	e.setup()
	for i := 1; i <= 10; i++ {
		r := e.clientFrom(fmt.Sprintf("127.0.0.%d", 10+i)).do("POST", "/api/auth/login", loginBody("admin", "wrong password!"))
		wantCode(t, fmt.Sprint("guess ", i), r, 401, "bad_credentials")
	}
	wantCode(t, "the admin from an eleventh address, at once",
		e.clientFrom("127.0.0.21").do("POST", "/api/auth/login", loginBody("admin", adminPassword)), 200, "")
	wantCode(t, "the admin from an address that guessed once",
		e.clientFrom("127.0.0.15").do("POST", "/api/auth/login", loginBody("admin", adminPassword)), 200, "")

	// Ten failures from one address: that address is refused, right password and
	// other accounts too, and told how long to wait; the admin elsewhere is not.
	e.addPeerUser("pat", "peer password 123")
	c := e.clientFrom("127.0.1.1")
	for i := 1; i <= 10; i++ {
		wantCode(t, "guess", c.do("POST", "/api/auth/login", loginBody("admin", "wrong password!")), 401, "bad_credentials")
	}
	r := c.do("POST", "/api/auth/login", loginBody("admin", "wrong password!"))
	wantCode(t, "11th failure from one address", r, 429, "too_many_attempts")
	if ra := r.header.Get("Retry-After"); ra != "900" {
		t.Fatalf("Retry-After %q, want 900", ra)
	}
	wantCode(t, "the right password from it", c.do("POST", "/api/auth/login", loginBody("admin", adminPassword)), 429, "too_many_attempts")
	wantCode(t, "another account from it", c.do("POST", "/api/auth/login", loginBody("pat", "peer password 123")), 429, "too_many_attempts")
	wantCode(t, "the admin from the next address", e.clientFrom("127.0.1.2").do("POST", "/api/auth/login", loginBody("admin", adminPassword)), 200, "")
	// The refusals are audited, all from the locked address (however the audit
	// log groups repeated refusals).
	entries, _, _ := e.cell.Audit.Query(storage.Filter{Action: "auth.login", Result: "too_many_attempts"})
	if len(entries) == 0 {
		t.Fatal("the throttled logins were not audited")
	}
	for _, en := range entries {
		if en.SourceIP != "127.0.1.1" {
			t.Fatalf("a refusal audited from %s: %+v", en.SourceIP, en)
		}
	}
}

// TestLoginLockSurvivesAnAddressFlood locks an address, then sends cheap failures
// (1,025-byte passwords, refused without hashing) for new names from 18,400 other
// addresses: more keys than the throttle's table holds.
func TestLoginLockSurvivesAnAddressFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: 18,400 connections")
	}
	e := newEnv(t)
	e.setup()
	locked := e.clientFrom("127.0.2.1")
	for i := 1; i <= 10; i++ {
		locked.do("POST", "/api/auth/login", loginBody("admin", "wrong password!"))
	}
	wantCode(t, "locked", locked.do("POST", "/api/auth/login", loginBody("admin", adminPassword)), 429, "too_many_attempts")

	const n, workers = 18400, 48
	long := strings.Repeat("x", 1025)
	var next, bad atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < n; i = next.Add(1) - 1 {
				ip := fmt.Sprintf("127.20.%d.%d", i/250, i%250+1)
				tr := &http.Transport{DialContext: fromAddr(ip), DisableKeepAlives: true}
				body := fmt.Sprintf(`{"username":"flood%d","password":%q}`, i, long)
				res, err := (&http.Client{Transport: tr, Timeout: 60 * time.Second}).Post(e.srv.URL+"/api/auth/login", "application/json", strings.NewReader(body))
				if err != nil {
					bad.Add(1)
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 401 {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d of the flood's logins were not refused as wrong", bad.Load())
	}
	wantCode(t, "the locked address after the flood", locked.do("POST", "/api/auth/login", loginBody("admin", adminPassword)), 429, "too_many_attempts")
	wantCode(t, "the admin elsewhere after the flood", e.clientFrom("127.0.2.2").do("POST", "/api/auth/login", loginBody("admin", adminPassword)), 200, "")
}

// TestLoginGuessesAtOnce sends 17 wrong passwords at once from one address to a
// cell that hashes at the production cost: at most ten are hashed (401), the rest
// are refused before hashing.
func TestLoginGuessesAtOnce(t *testing.T) {
	e := newEnvHashing(t, 0)
	e.setup()
	const n = 17
	codes := make(chan string, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.clientFrom("127.0.3.1")
			<-start
			r := c.do("POST", "/api/auth/login", loginBody("admin", "wrong password!"))
			codes <- fmt.Sprint(r.status, " ", r.code())
		}()
	}
	close(start)
	wg.Wait()
	close(codes)
	count := map[string]int{}
	for c := range codes {
		count[c]++
	}
	if count["401 bad_credentials"] > 10 || count["401 bad_credentials"]+count["429 too_many_attempts"] != n {
		t.Fatalf("17 guesses at once: %v, want at most 10 checked and the rest too_many_attempts", count)
	}
	wantCode(t, "the right password after", e.clientFrom("127.0.3.1").do("POST", "/api/auth/login", loginBody("admin", adminPassword)), 429, "too_many_attempts")
}

// TestLoginPeerLoopDoesNotStopTheAdmin has a peer log in with its own password in
// a loop from two addresses, twenty at a time, on a cell that hashes at the
// production cost; meanwhile the admin logs in from quiet addresses, and must get
// in every time.
func TestLoginPeerLoopDoesNotStopTheAdmin(t *testing.T) {
	e := newEnvHashing(t, 0)
	e.setup()
	e.addPeerUser("pat", "peer password 123")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var peerOK, peerRefused atomic.Int64
	started := make(chan struct{}, 100)
	for _, ip := range []string{"127.0.4.1", "127.0.4.2"} {
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tr := &http.Transport{DialContext: fromAddr(ip)}
				defer tr.CloseIdleConnections()
				hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
				first := true
				for {
					select {
					case <-stop:
						return
					default:
					}
					res, err := hc.Post(e.srv.URL+"/api/auth/login", "application/json", strings.NewReader(`{"username":"pat","password":"peer password 123"}`))
					if err == nil {
						io.Copy(io.Discard, res.Body)
						res.Body.Close()
						if res.StatusCode == 200 {
							peerOK.Add(1)
						} else {
							peerRefused.Add(1)
						}
					}
					if first {
						first = false
						started <- struct{}{}
					}
				}
			}()
		}
	}
	for range 20 { // every one of the peer's loops has had an answer
		<-started
	}
	for i := 1; i <= 5; i++ {
		r := e.clientFrom(fmt.Sprintf("127.0.5.%d", i)).do("POST", "/api/auth/login", loginBody("admin", adminPassword))
		wantCode(t, fmt.Sprintf("the admin's login %d during the peer's loop (peer: %d in, %d refused)", i, peerOK.Load(), peerRefused.Load()), r, 200, "")
	}
	close(stop)
	wg.Wait()
	t.Logf("the peer's loop: %d logins in, %d refused", peerOK.Load(), peerRefused.Load())
}

func TestChangePasswordGuessesAreThrottled(t *testing.T) {
	e := newEnv(t)
	e.setup()
	a := e.clientFrom("127.0.6.1")
	a.must(200, "POST", "/api/auth/login", loginBody("admin", adminPassword))
	fetchCSRF(t, a) // change-password needs it like every change but login
	change := func(current string) map[string]string {
		return map[string]string{"current_password": current, "new_password": "a brand new password"}
	}
	for i := 1; i <= 10; i++ {
		wantCode(t, fmt.Sprint("wrong current password ", i), a.do("POST", "/api/auth/change-password", change("wrong password!!")), 403, "bad_credentials")
	}
	r := a.do("POST", "/api/auth/change-password", change(adminPassword))
	wantCode(t, "the right current password after ten wrong", r, 429, "too_many_attempts")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	wantCode(t, "a login from that address", e.clientFrom("127.0.6.1").do("POST", "/api/auth/login", loginBody("admin", adminPassword)), 429, "too_many_attempts")
	b := e.clientFrom("127.0.6.2")
	b.must(200, "POST", "/api/auth/login", loginBody("admin", adminPassword))
	fetchCSRF(t, b)
	b.must(200, "POST", "/api/auth/change-password", change(adminPassword))
}

// fetchCSRF gives a logged-in client its session's CSRF token.
func fetchCSRF(t *testing.T, c *client) {
	t.Helper()
	var tok struct{ Token string }
	c.must(200, "GET", "/api/auth/csrf-token", nil).json(t, &tok)
	if tok.Token == "" {
		t.Fatal("empty CSRF token")
	}
	c.csrf = tok.Token
}

// TestLoginIPv6SourcesPer64 sends logins through the front's connection, where the
// client's address is the X-Forwarded-For the front set: one IPv6 host that takes a
// new address of its /64 for each guess is one source.
func TestLoginIPv6SourcesPer64(t *testing.T) {
	e := newEnv(t)
	e.setup()
	front := httptest.NewUnstartedServer(New(depsOf(e.cell)).Handler())
	front.Config.ConnContext = FrontConnContext
	front.Start()
	defer front.Close()
	login := func(ip, pw string) (int, string) {
		req, _ := http.NewRequest("POST", front.URL+"/api/auth/login", strings.NewReader(fmt.Sprintf(`{"username":"admin","password":%q}`, pw)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", ip)
		res, err := front.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		return res.StatusCode, resp{body: raw}.code()
	}
	for i := 1; i <= 10; i++ {
		if st, _ := login(fmt.Sprintf("2001:db8:1:2:%x::%x", i, i), "wrong password!"); st != 401 {
			t.Fatalf("guess %d: %d", i, st)
		}
	}
	if st, c := login("2001:db8:1:2:ffff::1", adminPassword); st != 429 || c != "too_many_attempts" {
		t.Fatalf("another address of the same /64: %d %s, want 429 too_many_attempts", st, c)
	}
	if st, c := login("2001:db8:1:3::1", adminPassword); st != 200 {
		t.Fatalf("another /64: %d %s", st, c)
	}
}
