package runtime

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTrimLogKeepsTheTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.log")
	var b strings.Builder
	for i := 0; b.Len() <= logMax+1000; i++ {
		fmt.Fprintf(&b, "line %07d\n", i)
	}
	last := strings.TrimSpace(b.String()[strings.LastIndex(strings.TrimSuffix(b.String(), "\n"), "\n"):])
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// The shim's fd: opened with O_APPEND before the trim, written after.
	shim, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer shim.Close()
	trimLog(p, slog.Default())
	fi, _ := os.Stat(p)
	if fi.Size() > logKeep+100 {
		t.Fatalf("size after trim %d, want <= %d", fi.Size(), logKeep+100)
	}
	if _, err := shim.WriteString("after trim\n"); err != nil {
		t.Fatal(err)
	}
	lines, err := tailLines(p, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0] != last || lines[1] != "after trim" {
		t.Errorf("tail = %q, want [%q \"after trim\"]", lines, last)
	}
	fi2, _ := os.Stat(p)
	if fi2.Size() != fi.Size()+int64(len("after trim\n")) {
		t.Errorf("the shim's append left a hole: size %d, want %d", fi2.Size(), fi.Size()+11)
	}
	// Small files are left alone.
	small := filepath.Join(t.TempDir(), "s.log")
	_ = os.WriteFile(small, []byte("a\nb\n"), 0o644)
	trimLog(small, slog.Default())
	if l, _ := tailLines(small, 10); len(l) != 2 || l[0] != "a" {
		t.Errorf("small log = %q", l)
	}
	if l, err := tailLines(filepath.Join(t.TempDir(), "none"), 10); err != nil || l != nil {
		t.Errorf("missing log = %q, %v", l, err)
	}
}
