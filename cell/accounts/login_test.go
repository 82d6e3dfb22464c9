package accounts_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/accounts"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

// The login throttle and the hasher's fair share, through Login and
// ChangePassword over a real database, with a clock the test moves.

const (
	adminPW = "the admin's own password"
	peerPW  = "pat's phone password"
	wrongPW = "not the password at all"
)

type nopAudit struct{}

func (nopAudit) Within(storage.Entry) storage.Within { return nil }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t      *testing.T
	acc    *accounts.Accounts
	hasher *accounts.Hasher
	clock  *clock
	db     *storage.DB
}

// newFixture is an accounts capability with one hashing slot and the users admin
// (role admin), pat (a peer) and carol (a peer).
func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h := accounts.NewHasherWithSlots(64, rand.Reader, 1)
	c := &clock{t: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)}
	f := &fixture{t: t, acc: accounts.New(db, h, nopAudit{}, c.Now, rand.Reader), hasher: h, clock: c, db: db}
	for _, u := range []struct{ name, role, pw string }{
		{"admin", storage.RoleAdmin, adminPW}, {"pat", storage.RolePeer, peerPW}, {"carol", storage.RolePeer, "carol's password"},
	} {
		hash, err := h.Hash(u.pw)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Users().Create(storage.User{Username: u.name, Role: u.role, PasswordHash: hash}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// code is the fault code of err ("" for nil).
func code(err error) string {
	if err == nil {
		return ""
	}
	var fe *fault.Error
	if errors.As(err, &fe) {
		return fe.Code
	}
	return err.Error()
}

func (f *fixture) login(user, pw, src string) error {
	_, _, err := f.acc.Login(user, pw, src, "")
	return err
}

func (f *fixture) want(what string, err error, want string) {
	f.t.Helper()
	if got := code(err); got != want {
		f.t.Fatalf("%s: %q (%v), want %q", what, got, err, want)
	}
}

func TestFailuresElsewhereNeverLockTheAdminOut(t *testing.T) {
	f := newFixture(t)
	// Ten wrong passwords for admin, each from another address...
	for i := 1; i <= 10; i++ {
		f.want(fmt.Sprintf("guess from 10.0.0.%d", i), f.login("admin", wrongPW, fmt.Sprintf("10.0.0.%d", i)), "bad_credentials")
	}
	// ...and the admin logs in at once from an eleventh, and from each of them.
	f.want("admin from an eleventh address", f.login("admin", adminPW, "10.0.0.11"), "")
	f.want("admin from an address that failed once", f.login("admin", adminPW, "10.0.0.3"), "")

	// Ten failures from one address lock that address, for every account and the
	// right password too, with how long to wait; not the others.
	for i := 1; i <= 10; i++ {
		f.want("guess", f.login("admin", wrongPW, "10.0.1.1"), "bad_credentials")
	}
	err := f.login("admin", wrongPW, "10.0.1.1")
	f.want("11th failure from one address", err, "too_many_attempts")
	if d, ok := accounts.RetryAfter(err); !ok || d != accounts.FailWindow {
		t.Fatalf("retry after %v %v, want %v", d, ok, accounts.FailWindow)
	}
	f.want("right password from the locked address", f.login("admin", adminPW, "10.0.1.1"), "too_many_attempts")
	f.want("another account from the locked address", f.login("pat", peerPW, "10.0.1.1"), "too_many_attempts")
	f.want("admin from elsewhere", f.login("admin", adminPW, "10.0.1.2"), "")
	f.want("pat from elsewhere", f.login("pat", peerPW, "10.0.1.2"), "")

	// Spraying names from one address hits the same wall.
	for i := 1; i <= 10; i++ {
		f.want("spray", f.login(fmt.Sprint("user", i), wrongPW, "10.0.2.1"), "bad_credentials")
	}
	f.want("11th name from one address", f.login("carol", "carol's password", "10.0.2.1"), "too_many_attempts")
}

func TestLockGrowsAndEnds(t *testing.T) {
	f := newFixture(t)
	const src = "192.168.1.50"
	for lock, length := 1, accounts.FailWindow; lock <= 3; lock, length = lock+1, length*2 {
		for i := 1; i <= accounts.FailLimit; i++ {
			f.want(fmt.Sprintf("lock %d guess %d", lock, i), f.login("admin", wrongPW, src), "bad_credentials")
		}
		err := f.login("admin", adminPW, src)
		f.want(fmt.Sprintf("lock %d", lock), err, "too_many_attempts")
		if d, _ := accounts.RetryAfter(err); d != length {
			t.Fatalf("lock %d lasts %v, want %v", lock, d, length)
		}
		f.clock.Add(length - time.Second)
		f.want(fmt.Sprintf("lock %d a second before its end", lock), f.login("admin", adminPW, src), "too_many_attempts")
		f.clock.Add(time.Second)
	}
	// Once over, the right password logs in and the account at that address starts
	// afresh; the address alone keeps its count (a success does not wipe guesses
	// at other accounts).
	f.want("after the locks", f.login("admin", adminPW, src), "")
}

// TestGuessesAreCountedBeforeHashing sends 17 wrong passwords at once from one
// address while the hasher is held: at most ten may be hashed.
func TestGuessesAreCountedBeforeHashing(t *testing.T) {
	f := newFixture(t)
	const n = 17
	var hashes atomic.Int32
	gate := make(chan struct{})
	settled := make(chan struct{}, 4*n)
	accounts.OnHash(f.hasher, func(string) {
		if hashes.Add(1) == 1 {
			settled <- struct{}{} // the one hashing; the others wait or were refused
		}
		<-gate
	})
	accounts.OnWait(f.hasher, func(string) { settled <- struct{}{} })
	results := make(chan error, n)
	for range n {
		go func() {
			err := f.login("admin", wrongPW, "10.1.1.1")
			if err != nil && code(err) != "bad_credentials" {
				settled <- struct{}{}
			}
			results <- err
		}()
	}
	for range n {
		<-settled
	}
	close(gate)
	count := map[string]int{}
	for range n {
		count[code(<-results)]++
	}
	if h := hashes.Load(); h > accounts.FailLimit || int(h) != count["bad_credentials"] {
		t.Fatalf("%d hashes for 17 guesses at once (answers %v), want at most %d", h, count, accounts.FailLimit)
	}
	if count["bad_credentials"]+count["too_many_attempts"] != n {
		t.Fatalf("answers %v", count)
	}
	f.want("the right password after", f.login("admin", adminPW, "10.1.1.1"), "too_many_attempts")
}

// TestLockSurvivesATableFlood locks an address, then floods the throttle with
// cheap failures (1,025-byte passwords, refused without hashing) from 18,400
// addresses, twice as many keys as the table holds.
func TestLockSurvivesATableFlood(t *testing.T) {
	f := newFixture(t)
	for i := 1; i <= accounts.FailLimit; i++ {
		f.login("admin", wrongPW, "10.2.0.1")
	}
	f.want("locked", f.login("admin", adminPW, "10.2.0.1"), "too_many_attempts")
	var hashes atomic.Int32
	accounts.OnHash(f.hasher, func(string) { hashes.Add(1) })
	long := strings.Repeat("x", 1025)
	for i := 0; i < 18400; i++ {
		f.clock.Add(time.Millisecond)
		src := fmt.Sprintf("172.16.%d.%d", i/250, i%250+1)
		f.want("flood", f.login(fmt.Sprint("user", i), long, src), "bad_credentials")
		if k := accounts.ThrottleKeys(f.acc); k > accounts.MaxThrottleKeys {
			t.Fatalf("the throttle holds %d keys", k)
		}
	}
	f.want("a name too long to be anyone's", f.login(strings.Repeat("u", 300), wrongPW, "10.2.0.3"), "bad_credentials")
	if hashes.Load() != 0 {
		t.Fatalf("%d oversized passwords or names were hashed", hashes.Load())
	}
	if 2*18400 <= accounts.MaxThrottleKeys {
		t.Fatalf("the flood did not fill the table of %d keys", accounts.MaxThrottleKeys)
	}
	f.want("the locked address after the flood", f.login("admin", adminPW, "10.2.0.1"), "too_many_attempts")
	f.want("the admin elsewhere after the flood", f.login("admin", adminPW, "10.2.0.2"), "")
}

// TestPeerCannotStarveTheAdmin holds the hasher while a peer asks for logins from
// two addresses, more than there are places, and then the admin asks from a third:
// the admin gets a place and the next turn.
func TestPeerCannotStarveTheAdmin(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	var order []string
	gate := make(chan struct{})
	accounts.OnHash(f.hasher, func(src string) {
		mu.Lock()
		order = append(order, src)
		mu.Unlock()
		<-gate
	})
	waiting := make(chan string, 100)
	accounts.OnWait(f.hasher, func(src string) { waiting <- src })
	var refused atomic.Int32
	var wg sync.WaitGroup
	const each = 10
	// settle waits until every one of the peer's n logins hashes, waits, or was
	// refused.
	settle := func(n int) {
		for {
			mu.Lock()
			hashing := len(order)
			mu.Unlock()
			if hashing+accounts.Waiting(f.hasher)+int(refused.Load()) == n {
				return
			}
			runtime.Gosched()
		}
	}
	// The first address takes ten places (its limit of attempts at once), the
	// second as many as its share (17/2) allows, displacing one of the first's.
	for i, src := range []string{"10.3.0.1", "10.3.0.2"} {
		for range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f.login("pat", peerPW, src); err != nil {
					refused.Add(1)
				}
			}()
		}
		settle((i + 1) * each)
	}
	if w := accounts.Waiting(f.hasher); w != accounts.MaxWaiting {
		t.Fatalf("the peer holds %d waiting places, want all %d", w, accounts.MaxWaiting)
	}
	for len(waiting) > 0 {
		<-waiting
	}
	admin := make(chan error, 1)
	go func() { admin <- f.login("admin", adminPW, "192.168.1.20") }()
	select {
	case src := <-waiting:
		if src != "192.168.1.20" {
			t.Fatalf("waiting: %s", src)
		}
	case err := <-admin:
		t.Fatalf("the admin's login during the peer's loop: %v", err)
	}
	close(gate)
	if err := <-admin; err != nil {
		t.Fatalf("the admin's login: %v", err)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(order) < 2 || order[1] != "192.168.1.20" {
		t.Fatalf("hash order %v: the admin's is not the next after the one in progress", order)
	}
}

func TestSuccessfulLoginsAreLimited(t *testing.T) {
	f := newFixture(t)
	for i := 0; i < accounts.SuccessLimitUser; i++ {
		f.want(fmt.Sprint("admin login ", i), f.login("admin", adminPW, fmt.Sprint("10.4.0.", i+1)), "")
	}
	err := f.login("admin", adminPW, "10.4.1.1")
	f.want("one login too many for the account", err, "too_many_logins")
	if d, _ := accounts.RetryAfter(err); d != accounts.SuccessEveryUser {
		t.Fatalf("retry after %v, want %v", d, accounts.SuccessEveryUser)
	}
	f.want("another account", f.login("pat", peerPW, "10.4.1.1"), "")
	f.clock.Add(accounts.SuccessEveryUser)
	f.want("admin after a while", f.login("admin", adminPW, "10.4.1.1"), "")

	// Per source: pat and carol from one address, until the address is used up.
	f.clock.Add(time.Hour)
	n := 0
	for _, u := range []struct{ name, pw string }{{"pat", peerPW}, {"carol", "carol's password"}} {
		for i := 0; i < accounts.SuccessLimitUser && n < accounts.SuccessLimitSource; i, n = i+1, n+1 {
			f.want(u.name, f.login(u.name, u.pw, "10.4.2.1"), "")
		}
	}
	f.want("the admin from a used-up address", f.login("admin", adminPW, "10.4.2.1"), "too_many_logins")
	f.want("the admin elsewhere", f.login("admin", adminPW, "10.4.2.2"), "")
}

func TestChangePasswordGuessesAreThrottled(t *testing.T) {
	f := newFixture(t)
	_, sess, err := f.acc.Login("admin", adminPW, "10.5.0.1", "")
	if err != nil {
		t.Fatal(err)
	}
	from := func(ip string) storage.Entry { return storage.Entry{SourceIP: ip, Action: "auth.change_password"} }
	for i := 1; i <= accounts.FailLimit; i++ {
		f.want(fmt.Sprint("wrong current ", i), f.acc.ChangePassword(sess, wrongPW, "a new long password", from("10.5.0.9")), "bad_credentials")
	}
	f.want("the right current password after ten wrong", f.acc.ChangePassword(sess, adminPW, "a new long password", from("10.5.0.9")), "too_many_attempts")
	f.want("a login from that address", f.login("admin", adminPW, "10.5.0.9"), "too_many_attempts")
	f.want("from another address", f.acc.ChangePassword(sess, adminPW, "a new long password", from("10.5.0.1")), "")
}

func TestIPv6CountsPer64(t *testing.T) {
	f := newFixture(t)
	for i := 1; i <= accounts.FailLimit; i++ {
		// One host, a new address of its /64 for each guess.
		f.want("guess", f.login("admin", wrongPW, fmt.Sprintf("2001:db8:1:2:%x::%x", i, i)), "bad_credentials")
	}
	f.want("another address of the same /64", f.login("admin", adminPW, "2001:db8:1:2:ffff::1"), "too_many_attempts")
	f.want("another /64", f.login("admin", adminPW, "2001:db8:1:3::1"), "")
	// An IPv4 address is itself whatever its form.
	for i := 1; i <= accounts.FailLimit; i++ {
		f.login("pat", wrongPW, "::ffff:10.6.0.1")
	}
	f.want("v4-mapped and plain", f.login("pat", peerPW, "10.6.0.1"), "too_many_attempts")
	f.want("the next IPv4 address", f.login("pat", peerPW, "10.6.0.2"), "")
	if g := accounts.SourceGroup("2001:db8:1:2:aaaa:bbbb:cccc:dddd"); g != "2001:db8:1:2::/64" {
		t.Fatalf("group %q", g)
	}
}

func TestRefusalsToAFloodingSourceComeLate(t *testing.T) {
	f := newFixture(t)
	var slept []time.Duration
	accounts.TarpitSleep(f.acc, func(d time.Duration) { slept = append(slept, d) })
	for i := 1; i <= accounts.FailLimit; i++ {
		f.login("admin", wrongPW, "10.7.0.1")
	}
	if len(slept) != 0 {
		t.Fatalf("wrong passwords were held back: %v", slept)
	}
	for i := 1; i <= accounts.TarpitAfter; i++ {
		f.want("refused", f.login("admin", adminPW, "10.7.0.1"), "too_many_attempts")
	}
	if len(slept) != 0 {
		t.Fatalf("the first %d refusals were held back: %v", accounts.TarpitAfter, slept)
	}
	f.want("refused", f.login("admin", adminPW, "10.7.0.1"), "too_many_attempts")
	if len(slept) != 1 || slept[0] != time.Second {
		t.Fatalf("a refusal past %d: held back %v, want 1s", accounts.TarpitAfter, slept)
	}
	f.want("another address", f.login("admin", adminPW, "10.7.0.2"), "")
	if len(slept) != 1 {
		t.Fatalf("held back: %v", slept)
	}
}
