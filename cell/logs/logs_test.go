package logs

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRingIsBoundedAndQueried(t *testing.T) {
	b, err := Open(Options{RingLines: 10})
	if err != nil {
		t.Fatal(err)
	}
	api, st := b.Logger("api"), b.Logger("storage")
	for i := 0; i < 25; i++ {
		api.Info("request", "n", i)
		st.Info(fmt.Sprintf("write %d", i))
	}
	all := b.Query("", "", 0)
	if len(all) != 10 {
		t.Fatalf("ring holds %d lines, want 10", len(all))
	}
	if all[len(all)-1].Message != "write 24" {
		t.Fatalf("newest = %+v", all[len(all)-1])
	}
	got := b.Query("storage", "", 3)
	if len(got) != 3 || got[0].Message != "write 22" || got[2].Message != "write 24" {
		t.Fatalf("last 3 of storage = %+v", got)
	}
	if got := b.Query("", "WRITE 23", 0); len(got) != 1 {
		t.Fatalf("search = %+v", got)
	}
	if got := b.Query("api", "n=24", 0); len(got) != 1 {
		t.Fatalf("attribute search = %+v", got)
	}
}

func TestLevelsChangeAtRunTime(t *testing.T) {
	b, _ := Open(Options{})
	l := b.Logger("dns")
	l.Debug("hidden")
	b.Level("dns").Set(slog.LevelDebug)
	l.Debug("shown")
	if got := b.Query("dns", "", 0); len(got) != 1 || got[0].Message != "shown" {
		t.Fatalf("lines = %+v", got)
	}
	if b.Levels()["dns"] != "debug" {
		t.Fatalf("levels = %v", b.Levels())
	}
	quiet, _ := Open(Options{Level: slog.LevelWarn})
	quiet.Logger("firewall").Info("not shown")
	if quiet.Levels()["firewall"] != "warn" || len(quiet.Query("", "", 0)) != 0 {
		t.Fatalf("the starting level is not every component's: %v", quiet.Levels())
	}
	for _, s := range []string{"DEBUG", "info", "Warn", "error"} {
		if _, err := ParseLevel(s); err != nil {
			t.Errorf("ParseLevel(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "trace", "info+1", "$(x)"} {
		if _, err := ParseLevel(s); err == nil {
			t.Errorf("ParseLevel(%q) accepted", s)
		}
	}
}

func TestFilesRotate(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(Options{Dir: dir, FileBytes: 2000, KeepFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	l := b.Logger("api").With("component", "x")
	for i := 0; i < 200; i++ {
		l.Info("a line long enough to fill the file quickly", "i", i)
	}
	b.Close()
	b.Close() // idempotent
	names, _ := filepath.Glob(filepath.Join(dir, "cell.log*"))
	if len(names) != 3 {
		t.Fatalf("files = %v, want cell.log and 2 rotated", names)
	}
	for _, n := range names {
		st, _ := os.Stat(n)
		if st.Size() > 2000 {
			t.Fatalf("%s is %d bytes, over the bound", n, st.Size())
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", n, st.Mode().Perm())
		}
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "cell.log"))
	if !strings.Contains(string(raw), `"i":199`) || !strings.Contains(string(raw), `"component":"x"`) {
		t.Fatalf("newest file lacks the last line: %s", raw)
	}
	b2, _ := Open(Options{Dir: dir})
	defer b2.Close()
	if !b2.Contains(`"i":199`) || b2.Contains("never logged") {
		t.Fatal("Contains does not read the files")
	}
}
