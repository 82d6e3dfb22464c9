package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pic-cell/cell/httpapi/client"
	"github.com/pic-cell/cell/storage"
)

// healthOn sends GET /health on conn (kept alive) and reads the answer.
func healthOn(conn net.Conn, br *bufio.Reader) error {
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")); err != nil {
		return err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// TestConnectionsPerSource: one source address holds at most
// MaxConnsPerSource connections to the API; the next is closed unanswered,
// and a place freed is taken again.
func TestConnectionsPerSource(t *testing.T) {
	bin := buildDaemon(t)
	d := startDaemon(t, bin, t.TempDir())
	addr := strings.TrimPrefix(d.url, "http://")
	open := func() (net.Conn, *bufio.Reader, error) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, nil, err
		}
		br := bufio.NewReader(conn)
		if err := healthOn(conn, br); err != nil {
			conn.Close()
			return nil, nil, err
		}
		return conn, br, nil
	}
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for i := 0; i < MaxConnsPerSource; i++ {
		conn, _, err := open()
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, MaxConnsPerSource, err)
		}
		held = append(held, conn)
	}
	if conn, _, err := open(); err == nil {
		conn.Close()
		t.Fatalf("connection %d from one source was answered; want it closed", MaxConnsPerSource+1)
	}
	// The held ones still work.
	if err := healthOn(held[0], bufio.NewReader(held[0])); err != nil {
		t.Fatalf("a held connection: %v", err)
	}
	held[1].Close()
	held = append(held[:1], held[2:]...)
	// The daemon sees the close when it next reads that connection: retry
	// until the place is free (bounded generously, never timed).
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, _, err := open()
		if err == nil {
			held = append(held, conn)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a freed place was never taken again: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFullDisk runs the daemon on a small loop-mounted file system, fills it,
// and checks that the cell says so in /api/status, refuses a change with 507
// while reads and login go on, and that after space is freed changes work
// again, the database passes its check and the audit chain verifies.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a loop file system")
	}
	for _, tool := range []string{"mkfs.ext4", "losetup", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s to make and mount a small file system", tool)
		}
	}
	bin := buildDaemon(t)
	tmp := t.TempDir()
	img, mnt := filepath.Join(tmp, "disk.img"), filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a loop file system here: %v\n%s", err, out)
	}
	// Registered first, so it runs last: after the daemon has stopped.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-d", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v\n%s", err, out)
		}
	})
	data := filepath.Join(mnt, "var")
	d := startDaemon(t, bin, data)
	c := newClient(t, d.url)
	setUp(t, c, data)
	logIn(t, c)
	ctx := t.Context()
	if _, err := c.PatchConfig(ctx, map[string]any{"cell": map[string]any{"name": "before"}}); err != nil {
		t.Fatalf("a change with room: %v", err)
	}

	// Fill the disk to 4 MiB free, below the 16 MiB the cell keeps.
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	fill := int64(st.Bavail)*st.Bsize - 4<<20
	filler := filepath.Join(mnt, "filler")
	ff, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fallocate(int(ff.Fd()), 0, 0, fill); err != nil {
		t.Fatalf("fallocate %d bytes: %v", fill, err)
	}
	ff.Close()

	s, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("GET /api/status on a full disk: %v", err)
	}
	if p := s.Parts["disk"]; p.State != storage.StateDown || !strings.Contains(p.Reason, "MiB free") {
		t.Errorf("disk part on a full disk = %+v, want down with the free space", p)
	}
	_, err = c.PatchConfig(ctx, map[string]any{"cell": map[string]any{"name": "after"}})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 507 || ce.Code != "insufficient_storage" {
		t.Fatalf("a change on a full disk: %v, want 507 insufficient_storage", err)
	}
	cfg, err := c.Config(ctx)
	if err != nil {
		t.Fatalf("GET /api/config on a full disk: %v", err)
	}
	if !strings.Contains(fmt.Sprint(cfg), "before") {
		t.Errorf("config on a full disk = %+v, want the name from before", cfg)
	}
	other := newClient(t, d.url)
	if err := other.Login(ctx, "admin", adminPassword); err != nil {
		t.Errorf("login on a full disk: %v", err)
	}

	// Free the space: changes work again, nothing stored was harmed.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PatchConfig(ctx, map[string]any{"cell": map[string]any{"name": "after"}}); err != nil {
		t.Fatalf("a change after space was freed: %v", err)
	}
	if s, err := c.Status(ctx); err != nil || s.Parts["disk"].State != storage.StateOK {
		t.Errorf("disk part after space was freed: %+v, %v", s.Parts["disk"], err)
	}
	v, err := c.AuditVerify(ctx)
	if err != nil || !v.OK {
		t.Errorf("audit chain: %+v, %v", v, err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.wait(60 * time.Second); err != nil {
		t.Fatalf("the daemon's exit: %v\n%s", err, d.log())
	}
	db, err := storage.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		t.Errorf("the database after a full disk: %v", err)
	}
}
