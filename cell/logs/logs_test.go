package logs

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
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
	// A restarted book appends to cell.log, after what the last one wrote.
	b2, _ := Open(Options{Dir: dir})
	b2.Logger("api").Info("after the restart")
	b2.Close()
	all := filesText(t, dir)
	if last, next := strings.Index(all, `"i":199`), strings.Index(all, "after the restart"); last < 0 || next < last {
		t.Fatalf("the reopened book does not continue the files: %s", all)
	}
}

// filesText is every log file under dir, oldest first.
func filesText(t *testing.T, dir string) string {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "cell.log.*"))
	sort.Sort(sort.Reverse(sort.StringSlice(names))) // cell.log.3 before cell.log.1 (KeepFiles < 10)
	var s strings.Builder
	for _, n := range append(names, filepath.Join(dir, "cell.log")) {
		raw, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		s.Write(raw)
	}
	return s.String()
}

// stalled is an echo that blocks every write until released: a stderr nobody reads.
type stalled struct {
	entered chan struct{}
	release chan struct{}
}

func (s *stalled) Write(p []byte) (int, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	return len(p), nil
}

func TestStalledOutputDoesNotBlockQuery(t *testing.T) {
	out := &stalled{entered: make(chan struct{}, 1), release: make(chan struct{})}
	b, err := Open(Options{Dir: t.TempDir(), Echo: out})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var once sync.Once
	release := func() { once.Do(func() { close(out.release) }) }
	defer release() // before Close, which waits for the output, even when the test fails
	logged := make(chan struct{})
	go func() {
		b.Logger("firewall").Info("table rebuilt")
		close(logged)
	}()
	<-out.entered // the logging call is inside the output now, and stays there
	// A second component logs meanwhile: it waits for the output too, but must
	// not hold the ring while it does.
	go b.Logger("api").Info("request")
	got := make(chan []Line)
	go func() { got <- b.Query("", "", 0) }()
	select {
	case lines := <-got:
		if len(lines) == 0 || lines[0].Message != "table rebuilt" {
			t.Fatalf("Query = %+v, want the stalled line first", lines)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Query waited for the stalled output")
	}
	select {
	case <-logged:
		t.Fatal("the logging call returned before its line was written out")
	default:
	}
	release()
	<-logged
}

// TestFileKeepsRingOrder logs from many goroutines at once: the file must hold
// the lines in the order the ring does, though they are written outside its lock.
func TestFileKeepsRingOrder(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(Options{Dir: dir, RingLines: 10000, Echo: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := b.Logger(fmt.Sprintf("c%d", g))
			for i := range 500 {
				l.Info(fmt.Sprintf("line %d.%d", g, i))
			}
		}()
	}
	wg.Wait()
	b.Close()
	var ring, file []string
	for _, l := range b.Query("", "", 0) {
		ring = append(ring, l.Message)
	}
	for _, raw := range strings.Split(strings.TrimSpace(filesText(t, dir)), "\n") {
		var l Line
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		file = append(file, l.Message)
	}
	if len(ring) != 4000 || !slices.Equal(ring, file) {
		t.Fatalf("the file's %d lines are not the ring's %d in order", len(file), len(ring))
	}
}
