package setup

import (
	"crypto/rand"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

func testWizard(t *testing.T, now func() time.Time) (*Wizard, *storage.DB) {
	t.Helper()
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return New(db, nil, nil, config.NewRegistry(), now, nil), db
}

func TestNewCode(t *testing.T) {
	re := regexp.MustCompile(`^[A-Z2-7]{4}(-[A-Z2-7]{4}){6}$`)
	seen := map[string]bool{}
	for range 100 {
		c, err := NewCode(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if !re.MatchString(c) {
			t.Fatalf("code %q is not seven groups of four base32 characters", c)
		}
		if seen[c] {
			t.Fatalf("code %q made twice", c)
		}
		seen[c] = true
	}
	if _, err := NewCode(strings.NewReader("short")); err == nil {
		t.Error("a code made from 5 random bytes")
	}
}

func TestCheckCode(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	w, db := testWizard(t, func() time.Time { return now })
	const code = "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23"
	// Before a code is set, nothing opens the wizard.
	for _, c := range []string{"", code, "x"} {
		if err := w.CheckCode(c, "192.0.2.7"); !errors.Is(err, fault.ErrForbidden) {
			t.Fatalf("no code set, CheckCode(%q) = %v, want ErrForbidden", c, err)
		}
	}
	if err := w.SetCode(" - \n"); !errors.Is(err, fault.ErrInvalid) {
		t.Fatalf("SetCode of nothing: %v", err)
	}
	if err := w.SetCode(code + "\n"); err != nil {
		t.Fatal(err)
	}
	if w.gate.hash == [32]byte{} || strings.Contains(string(w.gate.hash[:]), "ABCD") {
		t.Fatal("the gate does not hold the code's hash")
	}
	for _, c := range []string{code, strings.ToLower(code), strings.ReplaceAll(code, "-", ""), " abcd efgh ijkl mnop qrst uvwx yz23 "} {
		if err := w.CheckCode(c, "192.0.2.9"); err != nil {
			t.Errorf("CheckCode(%q): %v", c, err)
		}
	}
	var fe *fault.Error
	if err := w.CheckCode("", "192.0.2.1"); !errors.As(err, &fe) || fe.Code != "setup_code_required" || !strings.Contains(fe.Message, "setup-code.txt") {
		t.Fatalf("no code: %v", err)
	}
	// A missing code is not a guess: it never throttles.
	for range 20 {
		w.CheckCode("", "192.0.2.1")
	}
	for i := 1; i <= CodeFailLimit; i++ {
		if err := w.CheckCode(code[:len(code)-1]+"2", "192.0.2.1"); !errors.As(err, &fe) || fe.Code != "wrong_setup_code" || strings.Contains(fe.Message, code) {
			t.Fatalf("wrong code %d: %v", i, err)
		}
		now = now.Add(time.Minute)
	}
	// The 11th within 15 minutes: throttled, the right code too; another address is not.
	if err := w.CheckCode("WRONG", "192.0.2.1"); !errors.Is(err, fault.ErrTooMany) {
		t.Fatalf("11th wrong code: %v, want ErrTooMany", err)
	}
	if err := w.CheckCode(code, "192.0.2.1"); !errors.Is(err, fault.ErrTooMany) {
		t.Fatalf("right code while throttled: %v, want ErrTooMany", err)
	}
	if err := w.CheckCode(code, "192.0.2.2"); err != nil {
		t.Fatalf("right code from another address: %v", err)
	}
	// The first failure leaves the window 15 minutes after it was made: one more try.
	now = now.Add(CodeFailWindow - CodeFailLimit*time.Minute)
	if err := w.CheckCode(code, "192.0.2.1"); err != nil {
		t.Fatalf("right code after the first failure left the window: %v", err)
	}
	if err := w.CheckCode("WRONG", "192.0.2.1"); !errors.Is(err, fault.ErrForbidden) {
		t.Fatalf("a wrong code after the window: %v", err)
	}
	if err := w.CheckCode(code, "192.0.2.1"); !errors.Is(err, fault.ErrTooMany) {
		t.Fatalf("ten failures in the window again: %v, want ErrTooMany", err)
	}
	// Once set up, the code is void.
	if err := db.Settings().CompleteSetup(config.Doc{}, storage.User{Username: "admin", Role: storage.RoleAdmin}, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{code, "", "WRONG"} {
		if err := w.CheckCode(c, "192.0.2.2"); !errors.Is(err, fault.ErrConflict) {
			t.Fatalf("after setup, CheckCode(%q) = %v, want ErrConflict", c, err)
		}
	}
}

func TestCheckCodeManySources(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	w, _ := testWizard(t, func() time.Time { return now })
	w.SetCode("RIGHT")
	for i := range 3 * maxCodeSources {
		w.CheckCode("WRONG", "src-"+string(rune('a'+i%26))+strings.Repeat("x", i/26))
	}
	if n := len(w.gate.fails); n > maxCodeSources {
		t.Fatalf("%d sources remembered, want at most %d", n, maxCodeSources)
	}
}

func TestCheckHost(t *testing.T) {
	w, db := testWizard(t, time.Now)
	w.SetHostnames("CellTest.", "")
	ok := []string{"127.0.0.1", "127.0.0.1:3000", "192.168.1.20:80", "[::1]:3000", "[::1]", "::1", "[fe80::1%25eth0]:80",
		"localhost", "LocalHost:80", "localhost.", "celltest", "celltest:8080", "CELLTEST."}
	bad := []string{"", ":80", "evil.example", "evil.example:80", "127.0.0.1.nip.io", "localhost.evil.example",
		"celltest.evil.example", "home.example.org", "[evil.example]:80", "0x7f.1"}
	for _, h := range ok {
		if err := w.CheckHost(h); err != nil {
			t.Errorf("CheckHost(%q): %v", h, err)
		}
	}
	for _, h := range bad {
		var fe *fault.Error
		if err := w.CheckHost(h); !errors.As(err, &fe) || !errors.Is(err, fault.ErrForbidden) || fe.Code != "wrong_host" ||
			!strings.Contains(fe.Message, "the wizard answers only at the cell's own address") {
			t.Errorf("CheckHost(%q) = %v, want 403 wrong_host", h, err)
		}
	}
	// The cell step's domain, then the config's once set up.
	if err := db.Settings().PutSetupStep("cell", config.Cell{Name: "home", Domain: "Home.Example.Org"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.CheckHost("home.example.org:443"); err != nil {
		t.Errorf("the cell step's domain: %v", err)
	}
	doc := config.Doc{"cell": []byte(`{"name":"home","domain":"cell.example.net"}`)}
	if err := db.Settings().CompleteSetup(doc, storage.User{Username: "admin", Role: storage.RoleAdmin}, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.CheckHost("cell.example.net"); err != nil {
		t.Errorf("the config's domain: %v", err)
	}
	if err := w.CheckHost("home.example.org"); err == nil {
		t.Error("the wizard's old domain still answers after the config names another")
	}
}
