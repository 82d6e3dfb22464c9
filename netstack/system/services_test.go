package system_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/images/oci"
	"github.com/pic-cell/cell/netstack/nstest"
)

// The services end to end: the daemon in tun mode with a real containerd,
// the files service installed from the archive `make images` builds, and
// phones (real WireGuard clients) using it through the tunnel with the
// credentials the cell handed them, by name through the cell's DNS, over
// HTTPS that the vault's CA signed.

// images are the first-party OCI archives, built once per test binary
// (removed by TestMain).
var images = oci.TempArchives{Module: "../.."}

// firstPartyImages is the archives' directory, built the first time.
func firstPartyImages(t testing.TB) string {
	t.Helper()
	dir, err := images.Dir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// inClient runs args in a client's namespace the way a phone that set the
// cell up has it: /etc/resolv.conf names the cell's tunnel address (the
// WireGuard config's DNS line) and the system's CA bundle holds the cell's
// CA (installed from /ca.crt); both bind-mounted in a mount namespace of
// the command's own, so the host's files are untouched.
func inClient(ns *nstest.NS, resolv, caFile string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, "unshare", "-m", "--propagation", "private", "--",
		"sh", "-c", `mount --bind "$0" /etc/resolv.conf && mount --bind "$1" /etc/ssl/certs/ca-certificates.crt && shift && exec "$@"`,
		resolv, caFile}, args...)...)
}

func TestServicesFilesThroughTheTunnel(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon, containerd and a service container")
	}
	requireTools(t, "curl", "cadaver", "dig") // and what NewContainerdHost needs
	top := nstest.NewTopology(t)
	archives := firstPartyImages(t)
	bin := daemonBinary(t)
	data := t.TempDir()
	h := nstest.NewContainerdHost(t, top.Cell)
	d := startDaemon(t, h.Enter(bin, "-data", data, "-listen", "127.0.0.1:3000", "-wg-mode", "tun", "-front", ":443,:80",
		"-containerd", nstest.Socket, "-images", archives, "-cgroup-parent", h.Cgroup, "-log-level", "debug")...)
	a := newAPI(t, "http://127.0.0.1:3000", func(ctx context.Context, network, addr string) (net.Conn, error) {
		return top.Cell.Dial(addr, 5*time.Second)
	})
	a.setUp(data, "cell.test", 51820)
	a.waitRunning()
	ctx := context.Background()

	store, err := a.Store(ctx)
	a.ok("GET /api/store", err)
	if len(store) == 0 || store[0].ID != "files" || !store[0].Available {
		t.Fatalf("the store: %+v", store)
	}
	for _, name := range []string{"alice", "bob"} {
		_, err := a.CreatePeer(ctx, client.NewPeer{Name: name})
		a.ok("POST /api/peers "+name, err)
	}
	resolve := func(string) string { return nstest.CellWAN }
	cfgA, err := a.PeerConfig(ctx, "alice")
	a.ok("alice's config", err)
	cfgB, err := a.PeerConfig(ctx, "bob")
	a.ok("bob's config", err)
	nstest.NewClient(t, top.A, cfgA, resolve)
	nstest.NewClient(t, top.B, cfgB, resolve)
	if !top.A.WaitPing("10.77.0.1", 10*time.Second) || !top.B.WaitPing("10.77.0.1", 10*time.Second) {
		t.Fatal("the phones cannot reach the cell")
	}

	// Install, and kill -9 the cell while the container is being made: on
	// restart the install finishes (or fails cleanly), never a half state.
	start := time.Now()
	svc, err := a.InstallService(ctx, "files")
	a.ok("POST /api/store/install", err)
	if svc.State != "installing" || svc.URL != "https://files.cell.test/" || svc.Accounts != 2 {
		t.Errorf("install answered %+v", svc)
	}
	if _, err := a.InstallService(ctx, "files"); !client.IsCode(err, "already_installed") {
		t.Errorf("install twice: %v", err)
	}
	d.kill9()
	d.start()
	a.waitRunning()
	a.login("admin", adminPW)
	// The phones' sessions were with the dead process: WireGuard makes a new
	// handshake after 15 s without an answer.
	if !top.A.WaitPing("10.77.0.1", 40*time.Second) || !top.B.WaitPing("10.77.0.1", 40*time.Second) {
		t.Fatal("the phones did not come back after the restart")
	}
	st := waitService(t, a, "running", 0, 3*time.Minute)
	t.Logf("install, through a kill -9 of the cell, to running: %v", time.Since(start).Round(time.Millisecond))
	if st.Container != "running" || st.PID == 0 {
		t.Fatalf("status %+v", st)
	}

	ca, err := a.VaultCA(ctx, "pem")
	a.ok("GET the vault's CA", err)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(caFile, ca, 0o644)
	os.WriteFile(resolv, []byte("nameserver 10.77.0.1\n"), 0o644)
	if out, err := top.A.Try("dig", "+short", "@10.77.0.1", "files.cell.test"); err != nil || strings.TrimSpace(out) != "10.77.0.1" {
		t.Errorf("files.cell.test through the cell's DNS: %q %v", out, err)
	}

	creds := func(peer string) client.ServiceCredential {
		cs, err := a.PeerServiceCredentials(ctx, peer)
		a.ok("service credentials of "+peer, err)
		if len(cs) != 1 || cs[0].Service != "files" || cs[0].Username != peer || cs[0].URL != "https://files.cell.test/" || len(cs[0].Password) < 20 {
			t.Fatalf("%s's credentials: %+v", peer, cs)
		}
		return cs[0]
	}
	alice, bob := creds("alice"), creds("bob")
	curl := func(ns *nstest.NS, c client.ServiceCredential, args ...string) (string, error) {
		base := []string{"curl", "-sS", "--max-time", "20", "-u", c.Username + ":" + string(c.Password), "-w", "\n%{http_code}"}
		out, err := inClient(ns, resolv, caFile, append(base, args...)...).CombinedOutput()
		return string(out), err
	}
	status := func(out string) string { return out[strings.LastIndex(out, "\n")+1:] }
	body := filepath.Join(t.TempDir(), "hello.txt")
	os.WriteFile(body, []byte("hello from alice's phone\n"), 0o644)

	// WebDAV from the phone: PUT, PROPFIND, GET, by name, over HTTPS.
	waitFor(t, 30*time.Second, "alice's PUT through the front", func() error {
		out, err := curl(top.A, alice, "-T", body, "https://files.cell.test/hello.txt")
		if err != nil || (status(out) != "201" && status(out) != "204") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	out, err := curl(top.A, alice, "-X", "PROPFIND", "-H", "Depth: 1", "https://files.cell.test/")
	if err != nil || status(out) != "207" || !strings.Contains(out, "hello.txt") {
		t.Errorf("PROPFIND: %v %s", err, out)
	}
	out, err = curl(top.A, alice, "https://files.cell.test/hello.txt")
	if err != nil || !strings.HasPrefix(out, "hello from alice's phone\n") || status(out) != "200" {
		t.Errorf("GET: %v %q", err, out)
	}
	// Bob, from his own phone, sees his home, not alice's. (His first
	// request may find the tunnel still coming back from the restart: it
	// is asked again until the service answers at all.)
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err = curl(top.B, bob, "https://files.cell.test/hello.txt")
		if s := status(out); (s != "" && s != "000") || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if status(out) != "404" {
		t.Errorf("bob read alice's file: %q %v", out, err)
	}
	out, _ = curl(top.B, bob, "-X", "PROPFIND", "-H", "Depth: 1", "https://files.cell.test/")
	if status(out) != "207" || strings.Contains(out, "hello.txt") {
		t.Errorf("bob's listing: %q", out)
	}
	wrong := alice
	wrong.Password = "not the password at all"
	if out, _ := curl(top.A, wrong, "https://files.cell.test/hello.txt"); status(out) != "401" {
		t.Errorf("a wrong password: %q", out)
	}
	// A real WebDAV client from Debian lists the home.
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, ".netrc"), []byte("machine files.cell.test login alice password "+string(alice.Password)+"\n"), 0o600)
	cad := inClient(top.A, resolv, caFile, "env", "HOME="+home, "cadaver", "https://files.cell.test/")
	cad.Stdin = strings.NewReader("ls\nquit\n")
	cadOut, _ := cad.CombinedOutput()
	if !strings.Contains(string(cadOut), "hello.txt") {
		t.Errorf("cadaver's listing has no hello.txt:\n%s", cadOut)
	}

	// The admin sees what each account stores, asked of the service itself.
	var usage struct {
		Users []struct {
			Username   string `json:"username"`
			UsageBytes int64  `json:"usage_bytes"`
		} `json:"users"`
	}
	a.ok("GET /api/files/users", a.Do(ctx, "GET", "/api/files/users", nil, &usage))
	seen := map[string]int64{}
	for _, u := range usage.Users {
		seen[u.Username] = u.UsageBytes
	}
	if len(usage.Users) != 2 || seen["alice"] != int64(len("hello from alice's phone\n")) || seen["bob"] != 0 {
		t.Errorf("files users: %+v", usage.Users)
	}

	// The sandbox: no capabilities, no way out but replies.
	status1, err := a.ServiceStatus(ctx, "files")
	a.ok("status", err)
	proc, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", status1.PID))
	if !strings.Contains(string(proc), "CapEff:\t0000000000000000") {
		t.Errorf("the service's process has capabilities:\n%s", proc)
	}
	pid := strconv.Itoa(int(status1.PID))
	for _, target := range []string{"10.77.250.1:3000", "10.77.250.1:443", "10.77.0.1:443", nstest.ServerAddr + ":80", "10.77.0.2:80"} {
		if out, err := exec.Command("nsenter", "-t", pid, "-n", "--", "curl", "-sS", "--max-time", "2", "http://"+target+"/").CombinedOutput(); err == nil {
			t.Errorf("from inside the service, %s answered: %s", target, out)
		}
	}

	// The service's process killed inside its container: restarted.
	syscall.Kill(int(status1.PID), syscall.SIGKILL)
	st = waitService(t, a, "running", 1, time.Minute)
	if st.PID == status1.PID {
		t.Errorf("same pid after the kill: %+v", st)
	}
	if out, err := curl(top.A, alice, "https://files.cell.test/hello.txt"); err != nil || status(out) != "200" {
		t.Errorf("GET after the service restarted: %v %q", err, out)
	}

	// containerd stopped and started: the service runs on.
	h.StopContainerd()
	if out, err := curl(top.A, alice, "https://files.cell.test/hello.txt"); err != nil || status(out) != "200" {
		t.Errorf("GET while containerd is down: %v %q", err, out)
	}
	h.StartContainerd()
	waitFor(t, time.Minute, "the service after containerd's restart", func() error {
		st, err := a.ServiceStatus(ctx, "files")
		if err != nil || st.State != "running" || st.Container != "running" {
			return fmt.Errorf("%+v %v", st, err)
		}
		return nil
	})

	// A deleted peer's credentials stop working.
	a.ok("DELETE /api/peers/bob", a.DeletePeer(ctx, "bob"))
	waitFor(t, 30*time.Second, "bob's credentials refused", func() error {
		if out, _ := curl(top.A, bob, "https://files.cell.test/"); status(out) != "401" {
			return fmt.Errorf("bob's password still answers %q", out)
		}
		return nil
	})

	// Remove keeping the data; reinstall: alice's file is still there.
	a.ok("remove, keeping the data", a.RemoveService(ctx, "files", true))
	if _, err := os.Stat(filepath.Join(data, "volumes", "files")); err != nil {
		t.Fatalf("the data went with a remove that kept it: %v", err)
	}
	_, err = a.InstallService(ctx, "files")
	a.ok("reinstall", err)
	waitService(t, a, "running", 0, 2*time.Minute)
	alice = creds("alice")
	waitFor(t, 30*time.Second, "alice's file after the reinstall", func() error {
		out, err := curl(top.A, alice, "https://files.cell.test/hello.txt")
		if err != nil || status(out) != "200" || !strings.HasPrefix(out, "hello from alice's phone") {
			return fmt.Errorf("%v %q", err, out)
		}
		return nil
	})
	// Remove without it: the volume is gone, and so is the container.
	a.ok("remove, with the data", a.RemoveService(ctx, "files", false))
	if _, err := os.Stat(filepath.Join(data, "volumes", "files")); !os.IsNotExist(err) {
		t.Errorf("the volume outlived a remove without keep_data: %v", err)
	}
	if st, err := a.ServiceStatus(ctx, "files"); !client.IsCode(err, "service_not_installed") {
		t.Errorf("status after remove: %+v %v", st, err)
	}
	if out, _ := curl(top.A, alice, "https://files.cell.test/hello.txt"); status(out) == "200" {
		t.Errorf("the files service still answers after remove: %q", out)
	}
}

// waitService waits until the files service is in state with at least
// restarts restarts, and returns its status.
func waitService(t *testing.T, a *api, state string, restarts int, d time.Duration) client.ServiceStatus {
	t.Helper()
	var st client.ServiceStatus
	waitFor(t, d, "files "+state, func() error {
		var err error
		st, err = a.ServiceStatus(context.Background(), "files")
		if err != nil {
			return err
		}
		if st.State == "failed" && st.Restarts == 0 && restarts == 0 && !strings.Contains(st.Reason, "restarting") {
			return fmt.Errorf("failed: %s", st.Reason)
		}
		if st.State != state || st.Restarts < restarts {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	return st
}
