package runtime

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
)

// The log file of a container is written by its shim, which opens it with
// O_APPEND (the "file" scheme of pkg/process/io.go in containerd 1.6,
// cmd/containerd-shim-runc-v2/process/io.go in 2.x): every write
// goes to the file's end as it is at that moment, so truncating the file
// under the shim is safe (the next line lands at the new end, no hole).
// trimLog keeps the last logKeep bytes of a file grown past logMax: it reads
// them, truncates the file and appends them again. Lines the shim writes
// between the read and the append are kept, but land before the tail they
// followed; nothing is lost but the old head.
const (
	logMax  = 1 << 20
	logKeep = 256 << 10
	// tailMax bounds what Logs reads.
	tailMax = 256 << 10
	// linesMax bounds what Logs returns.
	linesMax = 2000
)

func trimLog(path string, log *slog.Logger) {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() <= logMax {
		return
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		log.Warn("log trim: open", "path", path, "err", err)
		return
	}
	defer f.Close()
	tail := make([]byte, logKeep)
	n, err := f.ReadAt(tail, fi.Size()-logKeep)
	if err != nil && !errors.Is(err, io.EOF) {
		log.Warn("log trim: read", "path", path, "err", err)
		return
	}
	tail = tail[:n]
	// Start at a line.
	if i := bytes.IndexByte(tail, '\n'); i >= 0 {
		tail = tail[i+1:]
	}
	if err := f.Truncate(0); err != nil {
		log.Warn("log trim: truncate", "path", path, "err", err)
		return
	}
	if _, err := f.Write(append([]byte("[log trimmed]\n"), tail...)); err != nil {
		log.Warn("log trim: write", "path", path, "err", err)
	}
}

// tailLines returns up to max last lines of the file (at most tailMax bytes
// of it are read). A missing file has no lines.
func tailLines(path string, max int) ([]string, error) {
	if max <= 0 || max > linesMax {
		max = linesMax
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := fi.Size() - tailMax
	if off < 0 {
		off = 0
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return nil, err
	}
	if off > 0 {
		// The first line read is likely cut.
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	if len(b) == 0 {
		return nil, nil
	}
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = string(l)
	}
	return out, nil
}
