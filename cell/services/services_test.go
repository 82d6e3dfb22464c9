package services

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/netip"
	"testing"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/images/catalog"
	"github.com/pic-cell/cell/images/runtime"
	"github.com/pic-cell/cell/storage"
)

type noAudit struct{}

func (noAudit) Within(storage.Entry) storage.Within { return func(*storage.Tx) error { return nil } }

// newServices is the capability over a fresh database, with a catalog of the
// default files entry under each id, signed with a key the cell trusts.
func newServices(t *testing.T, ids ...string) (*Services, *storage.DB) {
	t.Helper()
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	def, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	var idx catalog.Index
	idx.Version = def.Version
	for _, id := range ids {
		e := def.Services[0]
		e.ID, e.Subdomain = id, id
		idx.Services = append(idx.Services, e)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	raw, sig, err := catalog.Sign(idx, priv)
	if err != nil {
		t.Fatal(err)
	}
	err = db.TrustKeys().Create(storage.TrustKey{Name: "test", PublicKey: base64.StdEncoding.EncodeToString(pub), Purpose: CatalogPurpose}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{DB: db, Audit: noAudit{}, Runtime: runtime.NewFake(nil), DataDir: t.TempDir(), Rand: rand.Reader,
		Catalog: func() ([]byte, []byte) { return raw, sig }})
	if err != nil {
		t.Fatal(err)
	}
	return s, db
}

// Addresses on the bridge: the lowest free one after the cell's, given back
// at remove.
func TestInstallAddresses(t *testing.T) {
	s, db := newServices(t, "files", "notes", "music")
	ctx := context.Background()
	addr := func(id string) netip.Addr {
		var a netip.Addr
		db.View(func(tx *storage.Tx) error {
			svc, err := db.Services().GetTx(tx, id)
			a = svc.Addr
			return err
		})
		return a
	}
	for _, id := range []string{"files", "notes"} {
		if _, err := s.Install(ctx, id, storage.Entry{}); err != nil {
			t.Fatal(err)
		}
	}
	if addr("files") != netip.MustParseAddr("10.77.250.2") || addr("notes") != netip.MustParseAddr("10.77.250.3") {
		t.Errorf("addresses %v %v", addr("files"), addr("notes"))
	}
	if err := s.Remove(ctx, "files", true, storage.Entry{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Install(ctx, "music", storage.Entry{}); err != nil {
		t.Fatal(err)
	}
	if got := addr("music"); got != netip.MustParseAddr("10.77.250.2") {
		t.Errorf("music got %v, want the freed 10.77.250.2", got)
	}
	if _, err := s.Install(ctx, "music", storage.Entry{}); !errors.Is(err, fault.ErrConflict) {
		t.Errorf("install twice: %v", err)
	}
	// The cell still trusts only the test's key for catalogs: it added no
	// default one beside it.
	keys, _ := db.TrustKeys().List()
	if len(keys) != 1 {
		t.Errorf("trust keys %+v, want the test's alone", keys)
	}
}

func TestSubnetSection(t *testing.T) {
	v := ConfigSection().Validate
	for _, c := range []struct {
		subnet string
		ok     bool
	}{
		{"10.77.250.0/24", true}, {"172.30.0.0/16", true}, {"10.77.250.1/24", false}, {"10.0.0.0/8", false},
		{"fd00::/64", false}, {"not a subnet", false}, {"10.77.250.0/30", false},
	} {
		err := v(&Section{Subnet: c.subnet})
		if (err == nil) != c.ok {
			t.Errorf("subnet %q: %v, want ok=%v", c.subnet, err, c.ok)
		}
	}
}
