package setup

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/storage"
)

func TestDefaultULAIsStableAndValid(t *testing.T) {
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	w := New(db, nil, nil, config.NewRegistry(), time.Now, nil)
	a, b := w.DefaultULA(), w.DefaultULA()
	p, err := netip.ParsePrefix(a)
	if a != b || err != nil || p.Bits() != 64 || p.Addr().As16()[0] != 0xfd {
		t.Fatalf("ULA %s / %s: %v", a, b, err)
	}
	if err := (config.Network{WGPort: 1, SubnetV4: "10.77.0.0/24", SubnetV6: a, WANInterface: "auto"}).Validate(); err != nil {
		t.Fatal(err)
	}
}
