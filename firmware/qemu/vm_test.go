package qemu_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/firmware/qemu"
	"github.com/pic-cell/cell/firmware/update"
	"github.com/pic-cell/cell/httpapi/client"
)

// These tests boot real images in QEMU under OVMF. Without KVM a boot takes
// ~25 s, so each wait is bounded and the whole file stays within a few minutes.

const healthd = "github.com/pic-cell/cell/firmware/qemu/testdata/healthd"

func needVM(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU boot tests are not short")
	}
	if err := qemu.Available(); err != nil {
		t.Skipf("cannot run VMs here: %v", err)
	}
	if err := image.CheckHost("amd64"); err != nil {
		t.Skipf("cannot build the image here: %v", err)
	}
}

func moduleRoot(t testing.TB) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// syncBuffer collects the serial console for the failure message.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testVM struct {
	t      testing.TB
	img    string
	port   int // the guest's 80
	serial *syncBuffer
	vm     *qemu.VM
	// The cell's image: its front answers HTTPS on the guest's 443 (tlsPort)
	// with a certificate of the cell's CA (ca, fetched from /ca.crt on 80).
	front   bool
	tlsPort int
	ca      *x509.CertPool
	caFile  string
	extra   []qemu.Forward
}

// guestAddr is the address slirp's DHCP gives the guest: the front's
// certificate names it, so the tests' clients verify against it.
const guestAddr = "10.0.2.15"

// bootCell boots the cell's image, whose API is reached through its front.
func bootCell(t testing.TB, img string, snapshot bool, extra ...qemu.Forward) *testVM {
	return bootVMWith(t, img, snapshot, true, extra)
}

func bootVM(t testing.TB, img string, snapshot bool) *testVM {
	return bootVMWith(t, img, snapshot, false, nil)
}

func bootVMWith(t testing.TB, img string, snapshot, front bool, extra []qemu.Forward) *testVM {
	t.Helper()
	port, err := qemu.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	v := &testVM{t: t, img: img, port: port, serial: &syncBuffer{}, front: front, extra: extra}
	if front {
		if v.tlsPort, err = qemu.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	v.start(snapshot)
	v.killAtEnd(6000)
	return v
}

// killAtEnd stops the VM when the test ends and, when it failed, logs the
// last tail bytes of the serial console.
func (v *testVM) killAtEnd(tail int) {
	v.t.Cleanup(func() {
		v.vm.Kill()
		if v.t.Failed() {
			s := v.serial.String()
			if len(s) > tail {
				s = s[len(s)-tail:]
			}
			v.t.Logf("serial console (tail):\n%s", s)
		}
	})
}

func (v *testVM) start(snapshot bool) {
	vm, err := qemu.Start(context.Background(), qemu.Options{
		Image: v.img, Serial: v.serial, Snapshot: snapshot,
		Forwards: v.forwards(),
	})
	if err != nil {
		v.t.Fatal(err)
	}
	v.vm = vm
}

func (v *testVM) forwards() []qemu.Forward {
	fw := []qemu.Forward{{Proto: "tcp", HostPort: v.port, GuestPort: 80}}
	if v.front {
		fw = append(fw, qemu.Forward{Proto: "tcp", HostPort: v.tlsPort, GuestPort: 443})
	}
	return append(fw, v.extra...)
}

func (v *testVM) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", v.port, path) }

// base is the URL the clients use: the cell's front by the guest's address
// (dialled through the forward), else the test program's plain port.
func (v *testVM) base() string {
	if v.front {
		return "https://" + guestAddr
	}
	return v.url("")
}

// waitHealth waits for /health and returns how long after QEMU's start it
// came. On the cell's image it first fetches the CA from http://…/ca.crt (the
// front's port 80) and then asks over HTTPS, with that CA pinned.
func (v *testVM) waitHealth(timeout time.Duration) time.Duration {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if v.front {
		pemBytes, err := qemu.WaitHTTP(ctx, v.url("/ca.crt"))
		if err != nil {
			v.t.Fatalf("no /ca.crt within %s: %v", timeout, err)
		}
		v.ca = x509.NewCertPool()
		if !v.ca.AppendCertsFromPEM(pemBytes) {
			v.t.Fatalf("/ca.crt is not a PEM certificate: %q", pemBytes)
		}
		v.caFile = filepath.Join(v.t.TempDir(), "ca.pem")
		os.WriteFile(v.caFile, pemBytes, 0o644)
		c := v.client(3 * time.Second)
		for {
			_, err := c.Health(ctx)
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				v.t.Fatalf("no /health over HTTPS within %s: %v", timeout, err)
			case <-time.After(500 * time.Millisecond):
			}
		}
		return time.Since(v.vm.Started)
	}
	if _, err := qemu.WaitHTTP(ctx, v.url("/health")); err != nil {
		v.t.Fatalf("no /health within %s: %v", timeout, err)
	}
	return time.Since(v.vm.Started)
}

// httpClient is an HTTP client of the VM: on the cell's image HTTPS to the
// front with the CA from /ca.crt and the guest's address as the server name.
func (v *testVM) httpClient() *http.Client {
	if !v.front {
		return &http.Client{}
	}
	if v.ca == nil {
		v.t.Fatal("the cell's CA is not fetched yet: waitHealth first")
	}
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", v.tlsPort)
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: v.ca, ServerName: guestAddr},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, tlsAddr)
		}}}
}

// client is a client of the image's program: the cell's API through its
// front, or the test program (healthd), whose /info and /update are not the
// cell's API but answer JSON all the same.
func (v *testVM) client(timeout time.Duration) *client.Client {
	opts := []client.Option{client.WithTimeout(timeout)}
	if v.front {
		opts = append(opts, client.WithHTTPClient(v.httpClient()))
	}
	return client.New(v.base(), opts...)
}

func (v *testVM) getJSON(path string, dst any) error {
	if err := v.client(5*time.Second).Do(context.Background(), "GET", path, nil, dst); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// post sends a bundle to the test image's install endpoint.
func (v *testVM) post(bundlePath string) (int, string) {
	v.t.Helper()
	code, body, err := postBundle(v.client(3*time.Minute), bundlePath)
	if err != nil {
		v.t.Fatalf("POST /update: %v", err)
	}
	return code, body
}

// postBundle sends a bundle to POST /update and returns the answer, whatever
// its status; err is that of the connection.
func postBundle(c *client.Client, bundlePath string) (int, string, error) {
	f, err := os.Open(bundlePath)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, "", err
	}
	var res client.Response
	err = c.Do(context.Background(), "POST", "/update", client.Upload{Body: f, Size: fi.Size()}, &res)
	var refused *client.Error
	if errors.As(err, &refused) {
		return refused.Status, refused.Message, nil
	}
	return res.Status, string(res.Body), err
}

// waitUpdate polls GET /update until cond holds.
func (v *testVM) waitUpdate(timeout time.Duration, what string, cond func(update.Status) bool) update.Status {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	var st update.Status
	var err error
	for time.Now().Before(deadline) {
		st = update.Status{}
		if err = v.getJSON("/update", &st); err == nil && cond(st) {
			return st
		}
		time.Sleep(time.Second)
	}
	v.t.Fatalf("%s: not within %s (last status %+v, err %v)", what, timeout, st, err)
	return st
}

// fixture builds images and bundles that share one signing key, and images
// that carry one setup code on their boot partition (as `cellctl image build`
// writes it).
type fixture struct {
	t    testing.TB
	dir  string
	key  []byte
	pub  string
	code string
}

func newFixture(t testing.TB) *fixture {
	priv, pub, err := bundle.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	code, err := image.NewSetupCode()
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, dir: t.TempDir(), key: priv, pub: pub, code: code}
}

func (f *fixture) config(version string, trial time.Duration, args ...string) *image.Config {
	return &image.Config{
		Hostname: "celltest", Target: "amd64", Version: version,
		Packages:        []image.Package{{Path: healthd, Args: append([]string{"-listen", "0.0.0.0:80"}, args...)}},
		UpdatePublicKey: f.pub,
		Settings: image.Settings{RootMiB: 160, PermMiB: 300, TrialTimeout: image.Duration(trial),
			Ntp: new(bool), Containerd: new(bool), HealthURL: "http://127.0.0.1:80/health"}, // healthd's port, not the cell's 3000
	}
}

func (f *fixture) image(cfg *image.Config) string {
	f.t.Helper()
	p := filepath.Join(f.dir, "cell-"+cfg.Version+".img")
	if err := image.Build(context.Background(), cfg, image.Options{Dir: moduleRoot(f.t), SetupCode: f.code}, p); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fixture) bundle(cfg *image.Config, extra map[string]string) string {
	f.t.Helper()
	root := filepath.Join(f.dir, "root-"+cfg.Version)
	if err := image.BuildRoot(context.Background(), cfg, image.Options{Dir: moduleRoot(f.t), ExtraFiles: extra}, root); err != nil {
		f.t.Fatal(err)
	}
	key, err := bundle.ParsePrivateKey(f.key)
	if err != nil {
		f.t.Fatal(err)
	}
	p := filepath.Join(f.dir, "cell-"+cfg.Version+".bundle")
	out, err := os.Create(p)
	if err != nil {
		f.t.Fatal(err)
	}
	defer out.Close()
	if err := bundle.Write(out, bundle.Manifest{Version: cfg.Version, Target: cfg.Target}, map[string]string{bundle.PartRoot: root}, key); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func TestBootAnswersHealth(t *testing.T) {
	needVM(t)
	f := newFixture(t)
	img := f.image(f.config("1.0.0", time.Minute))
	v := bootVM(t, img, true)
	took := v.waitHealth(3 * time.Minute)
	t.Logf("/health answered %s after QEMU started (%s)", took.Round(time.Second), qemu.KVMReason())
	var info update.Info
	if err := v.getJSON("/info", &info); err != nil {
		t.Fatal(err)
	}
	if info.Version != "1.0.0" || info.RootSlot != "A" || info.PermanentSlot != "A" || info.Target != "amd64" {
		t.Errorf("info %+v, want version 1.0.0 on root A", info)
	}
	// gokrazy's own web interface (which can update and reboot the device)
	// listens only on its Unix socket, never on the LAN.
	serial := v.serial.String()
	if !strings.Contains(serial, "now listening on /run/gokrazy-http.sock") {
		t.Error("gokrazy's Unix socket listener not seen on the console")
	}
	for _, line := range strings.Split(serial, "\n") {
		if strings.Contains(line, "now listening on") && !strings.Contains(line, "/run/gokrazy-http.sock") {
			t.Errorf("gokrazy listens beyond its Unix socket: %s", line)
		}
	}
}

// TestUpdateCommitRefuseRollback runs one device through a good update (it comes
// back on root B with the new version), refusals over the network (nothing
// changes), and a bad update (its daemon never gets healthy: rolled back on its
// own, the old version runs, the state says why).
func TestUpdateCommitRefuseRollback(t *testing.T) {
	needVM(t)
	f := newFixture(t)
	img := f.image(f.config("1.0.0", time.Minute))
	good := f.bundle(f.config("1.1.0", 2*time.Minute), nil)
	older := f.bundle(f.config("1.0.5", time.Minute), nil)
	bad := f.bundle(f.config("1.2.0", 30*time.Second, "-unhealthy"), nil)

	v := bootVM(t, img, false)
	v.waitHealth(3 * time.Minute)

	start := time.Now()
	if code, body := v.post(good); code != 200 {
		t.Fatalf("good bundle refused: %d %s", code, body)
	}
	st := v.waitUpdate(4*time.Minute, "commit of 1.1.0", func(s update.Status) bool { return s.State.Phase == update.PhaseCommitted })
	t.Logf("update 1.0.0 → 1.1.0 committed %s after the push", time.Since(start).Round(time.Second))
	if st.Running != "1.1.0" || st.Slot != update.SlotB || st.Permanent != update.SlotB {
		t.Fatalf("after the update: %+v, want 1.1.0 on slot 3, permanent", st)
	}

	// Refusals: nothing about the device changes: not the state, not the boot
	// partition, not the inactive root (A, the way back), byte for byte as the
	// host sees the disk image.
	layout := image.LayoutFor(f.config("1.0.0", time.Minute))
	bootBefore := readRegion(t, img, layout.Start[image.PartBoot], layout.Size[image.PartBoot])
	rootABefore := readRegion(t, img, layout.Start[image.PartRootA], layout.Size[image.PartRootA])
	flipped := filepath.Join(f.dir, "flipped.bundle")
	b, _ := os.ReadFile(good)
	b[len(b)-4096] ^= 0x01 // inside the root's bytes
	os.WriteFile(flipped, b, 0o644)
	truncated := filepath.Join(f.dir, "truncated.bundle")
	os.WriteFile(truncated, b[:len(b)/2], 0o644)
	for name, p := range map[string]string{"older version": older, "flipped bit": flipped, "truncated root": truncated} {
		if code, body := v.post(p); code != 400 {
			t.Errorf("%s: got %d %s, want 400", name, code, body)
		}
	}
	after := v.waitUpdate(10*time.Second, "status", func(update.Status) bool { return true })
	if after.State != st.State || after.Permanent != update.SlotB {
		t.Errorf("a refused bundle changed the state: %+v, was %+v", after, st)
	}
	if !bytes.Equal(readRegion(t, img, layout.Start[image.PartBoot], layout.Size[image.PartBoot]), bootBefore) {
		t.Error("a refused bundle changed the boot partition")
	}
	if !bytes.Equal(readRegion(t, img, layout.Start[image.PartRootA], layout.Size[image.PartRootA]), rootABefore) {
		t.Error("a refused bundle wrote to the inactive root")
	}

	// A bundle whose daemon never becomes healthy.
	if code, body := v.post(bad); code != 200 {
		t.Fatalf("bad-daemon bundle refused at install: %d %s", code, body)
	}
	st = v.waitUpdate(5*time.Minute, "rollback of 1.2.0", func(s update.Status) bool { return s.State.Phase == update.PhaseRolledBack })
	if st.Running != "1.1.0" || st.Slot != update.SlotB || st.Permanent != update.SlotB {
		t.Errorf("after the rollback: %+v, want 1.1.0 on slot 3", st)
	}
	if !strings.Contains(st.State.Message, "not healthy") || st.State.Version != "1.2.0" {
		t.Errorf("rollback reason %q (version %s), want it to say not healthy", st.State.Message, st.State.Version)
	}
}

// TestPowerCutWhileWriting kills QEMU while the new root is being written; the
// device comes back on the old root and reports the interrupted update.
func TestPowerCutWhileWriting(t *testing.T) {
	needVM(t)
	f := newFixture(t)
	img := f.image(f.config("1.0.0", time.Minute))
	// 100 MB that does not compress: writing it takes seconds even under KVM.
	junk := filepath.Join(f.dir, "junk")
	b := make([]byte, 100<<20)
	rand.Read(b)
	os.WriteFile(junk, b, 0o644)
	big := f.bundle(f.config("1.1.0", time.Minute), map[string]string{"/junk": junk})

	v := bootVM(t, img, false)
	v.waitHealth(3 * time.Minute)
	go postBundle(v.client(3*time.Minute), big)
	v.waitUpdateFast(3*time.Minute, update.PhaseWriting)
	v.vm.Kill()
	t.Log("power cut while the root was being written")

	v.start(false)
	v.waitHealth(3 * time.Minute)
	var info update.Info
	if err := v.getJSON("/info", &info); err != nil {
		t.Fatal(err)
	}
	if info.Version != "1.0.0" || info.RootSlot != "A" {
		t.Errorf("after the power cut: %+v, want 1.0.0 on root A", info)
	}
	st := v.waitUpdate(10*time.Second, "status", func(update.Status) bool { return true })
	if st.State.Phase != update.PhaseFailed || !strings.Contains(st.State.Message, "interrupted") {
		t.Errorf("state %+v, want failed: interrupted", st.State)
	}
}

// readRegion reads part of a disk image as the host sees it (QEMU writes the
// guest's writes through to the file; only flushes are skipped).
func readRegion(t testing.TB, img string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPowerCutDuringTrial kills QEMU while a new root is on trial (booted, not
// yet healthy): the device comes back on the old root, and the old root's init
// records the rollback.
func TestPowerCutDuringTrial(t *testing.T) {
	needVM(t)
	f := newFixture(t)
	img := f.image(f.config("1.0.0", time.Minute))
	slow := f.bundle(f.config("1.1.0", 2*time.Minute, "-healthy-after", "90s"), nil)
	v := bootVM(t, img, false)
	v.waitHealth(3 * time.Minute)
	if code, body := v.post(slow); code != 200 {
		t.Fatalf("push: %d %s", code, body)
	}
	// The new root's program answers /update while its /health still says no.
	v.waitUpdate(3*time.Minute, "trial", func(s update.Status) bool {
		return s.State.Phase == update.PhaseTrying && s.Slot == update.SlotB
	})
	v.vm.Kill()
	t.Log("power cut during the trial boot")

	v.start(false)
	v.waitHealth(3 * time.Minute)
	st := v.waitUpdate(30*time.Second, "status", func(update.Status) bool { return true })
	if st.Running != "1.0.0" || st.Slot != update.SlotA || st.Permanent != update.SlotA {
		t.Errorf("after the cut: %+v, want 1.0.0 on slot 2", st)
	}
	if st.State.Phase != update.PhaseRolledBack || !strings.Contains(st.State.Message, "did not report healthy") {
		t.Errorf("state %+v, want rolled_back", st.State)
	}
}

// waitUpdateFast polls every 50ms for a phase (a window of a few seconds).
func (v *testVM) waitUpdateFast(timeout time.Duration, phase update.Phase) {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	c := v.client(2 * time.Second)
	for time.Now().Before(deadline) {
		var st update.Status
		if err := c.Do(context.Background(), "GET", "/update", nil, &st); err == nil {
			if st.State.Phase == phase {
				return
			}
			if st.State.Phase.Terminal() || st.State.Phase == update.PhasePending {
				v.t.Fatalf("missed the %s phase: already %s", phase, st.State.Phase)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	v.t.Fatalf("phase %s not seen within %s", phase, timeout)
}
