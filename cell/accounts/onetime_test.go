package accounts_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pic-cell/cell/cell/accounts"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

// newOneTimeUser stores a peer account that has only a one-time password, as
// the peers capability creates one, and returns the password.
func (f *fixture) newOneTimeUser(name string) string {
	f.t.Helper()
	pw, key := f.hasher.OneTime()
	if err := f.db.Users().Create(storage.User{Username: name, Role: storage.RolePeer, OneTimeHash: key}); err != nil {
		f.t.Fatal(err)
	}
	return pw
}

func TestOneTimeLoginWorksOnceWithoutHashing(t *testing.T) {
	f := newFixture(t)
	otp := f.newOneTimeUser("dana")
	if u, _ := f.db.Users().Get("dana"); u.OneTimeHash != storage.OneTimeKey(otp) || u.PasswordHash != "" || strings.Contains(u.OneTimeHash, otp) {
		t.Fatalf("stored account: %+v", u)
	}
	var hashes atomic.Int32
	accounts.OnHash(f.hasher, func(string) { hashes.Add(1) })

	id, sess, err := f.acc.Login("dana", otp, "198.18.0.9", "")
	if err != nil || id == "" || !sess.MustChangePassword {
		t.Fatalf("first login: %v %+v, want a session that must change its password", err, sess)
	}
	if n := hashes.Load(); n != 0 {
		t.Errorf("the one-time login ran %d argon2id hashes, want 0", n)
	}
	got, err := f.acc.Session(id)
	if err != nil || !got.MustChangePassword {
		t.Errorf("stored session: %v %+v, want must_change_password", err, got)
	}
	// Used up: a second login with it fails like any wrong password (hashing
	// against the dummy, so it costs what a wrong password costs).
	if _, _, err := f.acc.Login("dana", otp, "198.18.0.9", ""); !errors.Is(err, fault.ErrUnauthorized) {
		t.Errorf("second login: %v, want unauthorized", err)
	}
	if n := hashes.Load(); n != 1 {
		t.Errorf("the refused second login ran %d hashes, want 1", n)
	}

	// The used one-time password still proves the person to change-password,
	// which lifts the gate from this session and ends the one-time password.
	if err := f.acc.ChangePassword(got, wrongPW, "dana's own password", storage.Entry{SourceIP: "198.18.0.9"}); !errors.Is(err, fault.ErrForbidden) {
		t.Errorf("change with a wrong current password: %v", err)
	}
	if err := f.acc.ChangePassword(got, otp, "dana's own password", storage.Entry{SourceIP: "198.18.0.9"}); err != nil {
		t.Fatalf("change with the one-time password: %v", err)
	}
	if s, err := f.acc.Session(id); err != nil || s.MustChangePassword {
		t.Errorf("session after the change: %v %+v, want kept and ungated", err, s)
	}
	if u, _ := f.db.Users().Get("dana"); u.OneTimeHash != "" || u.MustChangePassword || u.PasswordHash == "" {
		t.Errorf("account after the change: one-time %q must %v hash %v", u.OneTimeHash, u.MustChangePassword, u.PasswordHash != "")
	}
	if _, s, err := f.acc.Login("dana", "dana's own password", "198.18.0.9", ""); err != nil || s.MustChangePassword {
		t.Errorf("login with the own password: %v %+v", err, s)
	}
	if _, _, err := f.acc.Login("dana", otp, "198.18.0.9", ""); !errors.Is(err, fault.ErrUnauthorized) {
		t.Errorf("one-time login after the change: %v", err)
	}
	if err := f.acc.ChangePassword(got, otp, "yet another password", storage.Entry{SourceIP: "198.18.0.9"}); !errors.Is(err, fault.ErrForbidden) {
		t.Errorf("change with the spent one-time password: %v", err)
	}
}

// Logins racing with one one-time password: exactly one gets a session.
func TestOneTimeLoginRace(t *testing.T) {
	f := newFixture(t)
	otp := f.newOneTimeUser("eve")
	const n = 8
	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := f.acc.Login("eve", otp, fmt.Sprintf("198.18.1.%d", i+1), "")
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, fault.ErrUnauthorized):
				refused.Add(1)
			default:
				t.Errorf("login: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || refused.Load() != n-1 {
		t.Errorf("%d logins succeeded and %d were refused, want 1 and %d", ok.Load(), refused.Load(), n-1)
	}
}

func TestResetOneTime(t *testing.T) {
	f := newFixture(t)
	admin := storage.Session{Username: "admin", Role: storage.RoleAdmin}
	id, _, err := f.acc.Login("pat", peerPW, "198.18.0.9", "")
	if err != nil {
		t.Fatal(err)
	}
	otp, err := f.acc.ResetOneTime(admin, "pat", storage.Entry{})
	if err != nil || len(otp) != 26 {
		t.Fatalf("reset: %q %v", otp, err)
	}
	if _, err := f.acc.Session(id); err == nil {
		t.Error("pat's session outlived the reset")
	}
	if _, _, err := f.acc.Login("pat", peerPW, "198.18.0.9", ""); !errors.Is(err, fault.ErrUnauthorized) {
		t.Errorf("the old password after the reset: %v", err)
	}
	if _, s, err := f.acc.Login("pat", otp, "198.18.0.9", ""); err != nil || !s.MustChangePassword {
		t.Errorf("the new one-time password: %v %+v", err, s)
	}
	us, _ := f.acc.Users()
	var states []string
	for _, u := range us {
		states = append(states, u.Username+":"+u.OneTimePassword)
	}
	if got, want := strings.Join(states, " "), "admin: carol: pat:used"; got != want {
		t.Errorf("users = %s, want %s", got, want)
	}
	for _, tc := range []struct {
		user string
		want error
	}{{"admin", fault.ErrForbidden}, {"nobody", fault.ErrNotFound}} {
		if _, err := f.acc.ResetOneTime(admin, tc.user, storage.Entry{}); !errors.Is(err, tc.want) {
			t.Errorf("reset %s: %v, want %v", tc.user, err, tc.want)
		}
	}
}
