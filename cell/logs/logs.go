// Package logs owns the cell's logging: one log/slog logger per component (api,
// storage, audit, wireguard, firewall, ...), each with a level that can be changed at
// run time, writing JSON lines both to a bounded in-memory ring (what the API serves)
// and to size-rotated files under DATA/logs.
//
// Choices: the ring keeps the newest 5,000 lines; a file rotates at 4 MiB and three
// old files are kept (cell.log.1 ... cell.log.3). Secrets are kept out by the callers,
// who never pass one as an attribute; the API's own logging records method, route
// pattern and status, never bodies or query values.
//
// The ring and the output (the file and the echo) have separate locks: a slow disk
// or a stalled stderr reader holds up the components that log, never GET /api/logs,
// which reads only the ring. A line is in the file, in ring order, when the logging
// call returns.
package logs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Line is one log record as served by the API.
type Line struct {
	Time    time.Time      `json:"time"`
	Level   string         `json:"level"`
	Service string         `json:"service"`
	Message string         `json:"msg"`
	Attrs   map[string]any `json:"attrs,omitempty"`
}

// Options sizes the ring and the files.
type Options struct {
	Dir       string // where cell.log lives; empty: no files
	RingLines int
	FileBytes int64
	KeepFiles int
	Echo      io.Writer  // also write text lines here (stderr in the daemon); nil: no
	Level     slog.Level // every component's starting level (zero: info)
}

// Book is the cell's log: components take loggers from it, the API reads it back.
type Book struct {
	opts Options

	mu      sync.Mutex // guards ring, start, n, pending; never held across I/O
	ring    []Line
	start   int
	n       int
	pending []encoded // lines in the ring, not yet written out, in ring order

	outMu sync.Mutex // guards file, size, and every write to them or to the echo
	file  *os.File
	size  int64

	levels sync.Map // component -> *slog.LevelVar
}

// encoded is a line as the outputs take it, made before any lock is taken.
type encoded struct {
	json []byte // with its newline; nil without a file
	echo string // "" without an echo
}

// Open starts a log book, creating Dir.
func Open(o Options) (*Book, error) {
	if o.RingLines <= 0 {
		o.RingLines = 5000
	}
	if o.FileBytes <= 0 {
		o.FileBytes = 4 << 20
	}
	if o.KeepFiles <= 0 {
		o.KeepFiles = 3
	}
	b := &Book{opts: o, ring: make([]Line, o.RingLines)}
	if o.Dir != "" {
		if err := os.MkdirAll(o.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("logs: %w", err)
		}
		if err := b.openFileLocked(); err != nil { // outMu is not needed before Open returns
			return nil, err
		}
	}
	return b, nil
}

func (b *Book) path() string { return filepath.Join(b.opts.Dir, "cell.log") }

func (b *Book) openFileLocked() error {
	f, err := os.OpenFile(b.path(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("logs: %w", err)
	}
	b.file, b.size = f, st.Size()
	return nil
}

// rotateLocked shifts cell.log.N-1 to cell.log.N and starts a new cell.log.
// outMu must be held.
func (b *Book) rotateLocked() error {
	b.file.Close()
	b.file = nil
	for i := b.opts.KeepFiles - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", b.path(), i), fmt.Sprintf("%s.%d", b.path(), i+1))
	}
	if err := os.Rename(b.path(), b.path()+".1"); err != nil {
		return err
	}
	return b.openFileLocked()
}

// Close flushes and closes the file. It is safe to call more than once.
func (b *Book) Close() error {
	b.outMu.Lock()
	defer b.outMu.Unlock()
	if b.file == nil {
		return nil
	}
	err := b.file.Close()
	b.file = nil
	return err
}

// Level returns the level variable of a component, creating it at Info.
func (b *Book) Level(component string) *slog.LevelVar {
	if v, ok := b.levels.Load(component); ok {
		return v.(*slog.LevelVar)
	}
	lv := new(slog.LevelVar)
	lv.Set(b.opts.Level)
	v, _ := b.levels.LoadOrStore(component, lv)
	return v.(*slog.LevelVar)
}

// Levels returns every known component's level name.
func (b *Book) Levels() map[string]string {
	out := map[string]string{}
	b.levels.Range(func(k, v any) bool {
		out[k.(string)] = strings.ToLower(v.(*slog.LevelVar).Level().String())
		return true
	})
	return out
}

// ParseLevel accepts debug, info, warn, error (any case).
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		err := l.UnmarshalText([]byte(s))
		return l, err
	}
	return l, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
}

// Logger returns the logger of a component; its records carry service=component.
func (b *Book) Logger(component string) *slog.Logger {
	return slog.New(&handler{book: b, service: component, level: b.Level(component)})
}

// write puts l in the ring, then writes out every pending line. Whoever holds
// outMu takes the pending lines as one batch under mu, so batches leave in ring
// order; a caller whose line a batch before it took finds nothing left and
// returns, its line already written.
func (b *Book) write(l Line) {
	var e encoded
	if b.opts.Dir != "" {
		raw, _ := json.Marshal(l)
		e.json = append(raw, '\n')
	}
	if b.opts.Echo != nil {
		e.echo = fmt.Sprintf("%s %-5s %s: %s%s\n", l.Time.Format(time.RFC3339), l.Level, l.Service, l.Message, formatAttrs(l.Attrs))
	}
	b.mu.Lock()
	idx := (b.start + b.n) % len(b.ring)
	b.ring[idx] = l
	if b.n < len(b.ring) {
		b.n++
	} else {
		b.start = (b.start + 1) % len(b.ring)
	}
	if e.json != nil || e.echo != "" {
		b.pending = append(b.pending, e)
	}
	b.mu.Unlock()
	if e.json == nil && e.echo == "" {
		return
	}

	b.outMu.Lock()
	defer b.outMu.Unlock()
	b.mu.Lock()
	batch := b.pending
	b.pending = nil
	b.mu.Unlock()
	for _, e := range batch {
		b.writeOutLocked(e)
	}
}

// writeOutLocked writes one line to the file (rotating first when it would
// pass the bound) and to the echo. outMu must be held.
func (b *Book) writeOutLocked(e encoded) {
	if b.file != nil && e.json != nil {
		if b.size+int64(len(e.json)) > b.opts.FileBytes && b.size > 0 {
			if err := b.rotateLocked(); err != nil {
				fmt.Fprintln(os.Stderr, "logs: rotate:", err)
			}
		}
		if b.file != nil {
			n, _ := b.file.Write(e.json)
			b.size += int64(n)
		}
	}
	if e.echo != "" {
		io.WriteString(b.opts.Echo, e.echo)
	}
}

func formatAttrs(a map[string]any) string {
	if len(a) == 0 {
		return ""
	}
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var s strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&s, " %s=%v", k, a[k])
	}
	return s.String()
}

// Query selects lines from the ring, oldest first: the last n (n<=0: all) of those
// whose service is service (empty: any) and, when q is not empty, whose message or
// attributes contain q (case-insensitive).
func (b *Book) Query(service, q string, n int) []Line {
	b.mu.Lock()
	snapshot := make([]Line, 0, b.n)
	for i := 0; i < b.n; i++ {
		snapshot = append(snapshot, b.ring[(b.start+i)%len(b.ring)])
	}
	b.mu.Unlock()
	q = strings.ToLower(q)
	var out []Line
	for _, l := range snapshot {
		if service != "" && l.Service != service {
			continue
		}
		if q != "" && !strings.Contains(strings.ToLower(l.Message+formatAttrs(l.Attrs)), q) {
			continue
		}
		out = append(out, l)
	}
	if n > 0 && len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

type handler struct {
	book    *Book
	service string
	level   *slog.LevelVar
	attrs   []slog.Attr
	group   string
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *handler) Handle(_ context.Context, r slog.Record) error {
	attrs := map[string]any{}
	add := func(a slog.Attr) {
		key := a.Key
		if h.group != "" {
			key = h.group + "." + key
		}
		attrs[key] = a.Value.Resolve().Any()
		if err, ok := attrs[key].(error); ok {
			attrs[key] = err.Error()
		}
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(func(a slog.Attr) bool { add(a); return true })
	if len(attrs) == 0 {
		attrs = nil
	}
	h.book.write(Line{Time: r.Time.UTC(), Level: strings.ToLower(r.Level.String()), Service: h.service, Message: r.Message, Attrs: attrs})
	return nil
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}
