package health

import (
	"context"
	"testing"
	"time"

	"github.com/pic-cell/cell/storage"
)

func TestStatusPartsAndOverall(t *testing.T) {
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Vault.Put("probe", []byte("x")); err != nil {
		t.Fatal(err)
	}
	h := New(db, time.Now, "test", "probe")
	st := h.Status(t.Context())
	if st.State != storage.StateOK || st.Parts["storage"].State != storage.StateOK || st.Parts["vault"].State != storage.StateOK || st.Parts["dns"].State != storage.StateNotConfigured {
		t.Fatalf("status = %+v", st)
	}
	h.Register("wireguard", func(context.Context) storage.PartStatus {
		return storage.PartStatus{State: storage.StateDown, Reason: "no device"}
	})
	h.Register("dns", func(context.Context) storage.PartStatus { return storage.PartStatus{State: storage.StateDegraded} })
	st = h.Status(t.Context())
	if st.State != storage.StateDown || st.Parts["wireguard"].Reason != "no device" {
		t.Fatalf("status with a down part = %+v", st)
	}
	rec, err := h.CheckHealth(t.Context())
	if err != nil || rec.Parts["dns"].State != storage.StateDegraded {
		t.Fatalf("health record = %+v, %v", rec, err)
	}
	hist, _ := h.History(10)
	if len(hist) != 1 {
		t.Fatalf("history has %d records", len(hist))
	}
}
