package qemu_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/httpapi/client"
)

// onDisk writes the image to a sparse disk file of size bytes (as flashing
// it to a card of that size does) and returns the file and the size in MiB
// that perm should grow to: from its start to the last whole MiB before the
// backup GPT.
func onDisk(t testing.TB, img string, cfg *image.Config, size int64) (string, int64) {
	t.Helper()
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	l := image.LayoutFor(cfg)
	return img, ((size-33*512)>>20<<20 - l.Start[image.PartPerm]) >> 20
}

// permLines are the init's console lines about /perm.
func permLines(serial string) string {
	var out []string
	for _, l := range strings.Split(serial, "\n") {
		if strings.Contains(l, "component=perm") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, "\n")
}

var diskReason = regexp.MustCompile(`([0-9.]+) MiB free of ([0-9.]+) MiB`)

// TestPermFillsDisk: the cell's image written to a 4 GiB disk boots with a
// /perm of about 3.5 GiB (the init's console line and the cell's own disk
// check both say so); a peer made through the API is still there after a
// power cut and a second boot, which leaves /perm alone and says why.
func TestPermFillsDisk(t *testing.T) {
	needVM(t)
	f := newFixture(t)
	cfg := f.cellConfig("1.0.0")
	img, wantMiB := onDisk(t, f.image(cfg), cfg, 4<<30)

	v := bootCell(t, img, false)
	first := v.waitHealth(4 * time.Minute)
	grew := fmt.Sprintf("perm: grew the data partition from %d MiB to %d MiB and made its ext4 at full size", cfg.Settings.PermMiB, wantMiB)
	if !strings.Contains(v.serial.String(), grew) {
		t.Fatalf("the console does not say %q", grew)
	}
	a := newAPI(t, v)
	a.setupAndLogin(f.code)
	ctx := context.Background()
	total := func() float64 {
		st, err := a.Status(ctx)
		a.ok("GET /api/status", err)
		m := diskReason.FindStringSubmatch(st.Parts["disk"].Reason)
		if m == nil {
			t.Fatalf("the disk part says %+v, want its sizes", st.Parts["disk"])
		}
		n, _ := strconv.ParseFloat(m[2], 64)
		return n
	}
	// ext4 keeps the inode tables and the journal for itself: statfs's total
	// is a few per cent under the partition's size.
	got := total()
	if got < 0.9*float64(wantMiB) || got > float64(wantMiB) {
		t.Errorf("the cell's disk check sees %.1f MiB in all, want about %d MiB", got, wantMiB)
	}
	t.Logf("first boot (with the grow) %s; /perm %.1f MiB of a %d MiB partition", first.Round(time.Second), got, wantMiB)
	created, err := a.CreatePeer(ctx, client.NewPeer{Name: "laptop"})
	a.ok("POST /api/peers", err)
	// The daemon's database syncs each change; a moment for the page to go.
	time.Sleep(2 * time.Second)

	v.vm.Kill()
	mark := len(v.serial.String())
	v.start(false)
	second := v.waitHealth(4 * time.Minute)
	log2 := v.serial.String()[mark:]
	if !strings.Contains(log2, fmt.Sprintf("perm: data partition left as it is, %d MiB: it has been mounted before", wantMiB)) {
		t.Errorf("the second boot's console does not say that /perm was left alone")
	}
	if strings.Contains(log2, "perm: grew") || strings.Contains(log2, "made the data partition") {
		t.Errorf("the second boot touched /perm")
	}
	a = newAPI(t, v)
	a.login()
	peers, err := a.Peers(ctx)
	a.ok("GET /api/peers", err)
	if len(peers) != 1 || peers[0].Name != "laptop" || peers[0].IPv4 != created.Peer.IPv4 {
		t.Errorf("peers after the reboot: %+v, want the laptop made before", peers)
	}
	if got2 := total(); got2 != got {
		t.Errorf("/perm is %.1f MiB after the reboot, was %.1f", got2, got)
	}
	t.Logf("second boot %s; the console about /perm:\n%s", second.Round(time.Second), permLines(v.serial.String()))
}
