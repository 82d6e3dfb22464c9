package server

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/webdav"
)

// errQuota is what a write over an account's quota fails with; the WebDAV
// handler turns any error it causes into 507 Insufficient Storage.
var errQuota = errors.New("quota exceeded")

// usageTTL is how long a computed home size is trusted. The file system keeps
// it current for the changes it makes; the TTL only bounds drift from changes
// made around it (an operator on the volume).
const usageTTL = 10 * time.Minute

// usage is one home's size and quota. Writes reserve bytes before they land
// (inflight), so parallel uploads cannot together overshoot the quota.
type usage struct {
	dir string // the home, an OS path

	mu       sync.Mutex
	limit    int64 // bytes; 0 = unlimited
	bytes    int64
	known    bool
	at       time.Time
	inflight int64
}

func (u *usage) setLimit(limit int64) {
	u.mu.Lock()
	u.limit = limit
	u.mu.Unlock()
}

// current returns the home's size, walking it when not known.
func (u *usage) current() (int64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.currentLocked()
}

func (u *usage) currentLocked() (int64, error) {
	if u.known && time.Since(u.at) < usageTTL {
		return u.bytes, nil
	}
	n, err := dirSize(u.dir)
	if err != nil {
		return 0, err
	}
	u.bytes, u.known, u.at = n, true, time.Now()
	return n, nil
}

// reserve takes n bytes for a write that replaces credit bytes (the file it
// overwrites), if they fit.
func (u *usage) reserve(n, credit int64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.limit <= 0 {
		u.inflight += n
		return true
	}
	cur, err := u.currentLocked()
	if err != nil {
		return false
	}
	if cur+u.inflight+n-credit > u.limit {
		return false
	}
	u.inflight += n
	return true
}

// fits reports whether n more bytes replacing credit bytes would fit, without
// taking them (the Content-Length check before an upload starts).
func (u *usage) fits(n, credit int64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.limit <= 0 {
		return true
	}
	cur, err := u.currentLocked()
	if err != nil {
		return false
	}
	return cur+u.inflight+n-credit <= u.limit
}

// settle ends a reservation of reserved bytes; delta is the change of the
// home's size it made.
func (u *usage) settle(reserved, delta int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.inflight -= reserved
	u.bytes += delta
}

// invalidate makes the next use walk the home again (after a change whose
// size is not known).
func (u *usage) invalidate() {
	u.mu.Lock()
	u.known = false
	u.mu.Unlock()
}

// dirSize sums the sizes of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n, err
}

// reqState is what the file system tells the HTTP layer about one request.
type reqState struct {
	mu    sync.Mutex
	quota bool // a write failed for the quota
}

type reqStateKey struct{}

func stateOf(ctx context.Context) *reqState {
	if st, ok := ctx.Value(reqStateKey{}).(*reqState); ok {
		return st
	}
	return &reqState{}
}

func (st *reqState) setQuota() {
	st.mu.Lock()
	st.quota = true
	st.mu.Unlock()
}

func (st *reqState) overQuota() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.quota
}

// sharedName is the folder every account sees at /shared/.
const sharedName = "shared"

// accountFS is one account's WebDAV tree: its home at / and the household's
// shared folder at /shared. Every access goes through an os.Root, so neither
// ".." nor a symbolic link leads out of the home or the shared folder; a
// write goes to a temporary file under the volume's tmp/ and is renamed into
// place when complete, so a failed or over-quota upload leaves nothing.
type accountFS struct {
	home, shared       *os.Root
	homeDir, sharedDir string // OS paths of the roots
	tmpDir             string
	usage              *usage // the home's
}

// where is a resolved WebDAV name.
type where struct {
	root   *os.Root
	dir    string // the root's OS path
	rel    string // inside the root, "." for the root itself
	shared bool
}

func (w where) top() bool { return w.rel == "." }

func (w where) osPath() string { return filepath.Join(w.dir, filepath.FromSlash(w.rel)) }

func (a *accountFS) resolve(name string) (where, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return where{}, os.ErrNotExist
	}
	clean := path.Clean("/" + name)
	w := where{root: a.home, dir: a.homeDir, rel: clean}
	if clean == "/"+sharedName || strings.HasPrefix(clean, "/"+sharedName+"/") {
		w = where{root: a.shared, dir: a.sharedDir, rel: clean[len("/"+sharedName):], shared: true}
	}
	w.rel = strings.TrimPrefix(w.rel, "/")
	if w.rel == "" {
		w.rel = "."
	}
	return w, nil
}

func (a *accountFS) Mkdir(ctx context.Context, name string, perm os.FileMode) error {
	w, err := a.resolve(name)
	if err != nil {
		return err
	}
	if w.top() {
		return os.ErrExist
	}
	return w.root.Mkdir(w.rel, 0o755)
}

func (a *accountFS) OpenFile(ctx context.Context, name string, flag int, perm os.FileMode) (webdav.File, error) {
	w, err := a.resolve(name)
	if err != nil {
		return nil, err
	}
	writing := flag&(os.O_WRONLY|os.O_RDWR) != 0
	if writing && flag&os.O_CREATE != 0 && flag&os.O_TRUNC != 0 {
		return a.newUpload(ctx, w)
	}
	// Everything else the WebDAV handler opens it only reads (PROPPATCH opens
	// read-write for dead properties, which these files do not hold). Opening
	// read-only keeps every byte written on the upload path, past the quota.
	f, err := w.root.OpenFile(w.rel, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	switch {
	case w.top() && w.shared:
		return &namedFile{File: f, name: sharedName}, nil
	case w.top():
		return &homeRoot{File: f, shared: a.shared}, nil
	}
	return f, nil
}

func (a *accountFS) RemoveAll(ctx context.Context, name string) error {
	w, err := a.resolve(name)
	if err != nil {
		return err
	}
	if w.top() {
		return os.ErrInvalid // neither the home nor the shared folder
	}
	if w.shared {
		return w.root.RemoveAll(w.rel)
	}
	size, sizeErr := dirSize(w.osPath())
	if err := w.root.RemoveAll(w.rel); err != nil {
		a.usage.invalidate()
		return err
	}
	if sizeErr != nil {
		a.usage.invalidate()
	} else {
		a.usage.settle(0, -size)
	}
	return nil
}

func (a *accountFS) Rename(ctx context.Context, oldName, newName string) error {
	from, err := a.resolve(oldName)
	if err != nil {
		return err
	}
	to, err := a.resolve(newName)
	if err != nil {
		return err
	}
	if from.top() || to.top() {
		return os.ErrInvalid
	}
	if from.shared == to.shared {
		return from.root.Rename(from.rel, to.rel)
	}
	// Between the home and the shared folder: os.Root cannot rename across
	// roots. Both are directories of the same volume; check through the
	// roots that the source and the target's parent are inside them, then
	// rename the OS paths.
	if _, err := from.root.Lstat(from.rel); err != nil {
		return err
	}
	if st, err := to.root.Stat(path.Dir(to.rel)); err != nil {
		return err
	} else if !st.IsDir() {
		return os.ErrNotExist
	}
	size, err := dirSize(from.osPath())
	if err != nil {
		return err
	}
	if !to.shared { // into the home: it counts against the quota
		if !a.usage.reserve(size, 0) {
			stateOf(ctx).setQuota()
			return errQuota
		}
		if err := os.Rename(from.osPath(), to.osPath()); err != nil {
			a.usage.settle(size, 0)
			return err
		}
		a.usage.settle(size, size)
		return nil
	}
	if err := os.Rename(from.osPath(), to.osPath()); err != nil {
		return err
	}
	a.usage.settle(0, -size)
	return nil
}

func (a *accountFS) Stat(ctx context.Context, name string) (os.FileInfo, error) {
	w, err := a.resolve(name)
	if err != nil {
		return nil, err
	}
	fi, err := w.root.Stat(w.rel)
	if err != nil {
		return nil, err
	}
	if w.top() && w.shared {
		return namedInfo{FileInfo: fi, name: sharedName}, nil
	}
	return fi, nil
}

// existingSize is the size of the regular file at w, 0 if none: what an
// upload replacing it gives back.
func existingSize(w where) int64 {
	if fi, err := w.root.Lstat(w.rel); err == nil && fi.Mode().IsRegular() {
		return fi.Size()
	}
	return 0
}

// fitsPut reports whether an upload of n bytes to name would fit in the
// quota; the handler asks before reading a body whose length it knows.
func (a *accountFS) fitsPut(name string, n int64) bool {
	w, err := a.resolve(name)
	if err != nil || w.shared {
		return true // the upload itself will fail or is not counted
	}
	return a.usage.fits(n, existingSize(w))
}

func (a *accountFS) newUpload(ctx context.Context, w where) (webdav.File, error) {
	if w.top() {
		return nil, os.ErrInvalid
	}
	parent, err := w.root.Stat(path.Dir(w.rel))
	if err != nil {
		return nil, err // not found: the handler answers 409 Conflict
	}
	if !parent.IsDir() {
		return nil, os.ErrNotExist
	}
	if fi, err := w.root.Lstat(w.rel); err == nil && !fi.Mode().IsRegular() {
		return nil, os.ErrInvalid // a directory (or anything else) stays
	}
	tmp, err := os.CreateTemp(a.tmpDir, "upload-*")
	if err != nil {
		return nil, err
	}
	u := &upload{tmp: tmp, w: w, state: stateOf(ctx)}
	if !w.shared {
		u.usage = a.usage
		u.credit = existingSize(w)
	}
	return u, nil
}

// upload is a file being written: a temporary file renamed over the target
// at Close when every write succeeded.
type upload struct {
	tmp     *os.File
	w       where
	state   *reqState
	usage   *usage // nil for the shared folder
	credit  int64
	written int64
	failed  bool
}

func (u *upload) Write(p []byte) (int, error) {
	if u.failed {
		return 0, errQuota
	}
	if u.usage != nil && !u.usage.reserve(int64(len(p)), u.credit) {
		u.failed = true
		u.state.setQuota()
		return 0, errQuota
	}
	n, err := u.tmp.Write(p)
	u.written += int64(n)
	if u.usage != nil && n < len(p) {
		u.usage.settle(int64(len(p)-n), 0)
	}
	if err != nil {
		u.failed = true
	}
	return n, err
}

func (u *upload) Close() error {
	name := u.tmp.Name()
	err := u.tmp.Sync()
	if cerr := u.tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && u.failed {
		err = errQuota
	}
	if err == nil {
		err = os.Chmod(name, 0o644)
	}
	if err == nil {
		// The parent was checked through the root at open.
		err = os.Rename(name, u.w.osPath())
	}
	if err != nil {
		os.Remove(name)
		if u.usage != nil {
			u.usage.settle(u.written, 0)
		}
		return err
	}
	if u.usage != nil {
		u.usage.settle(u.written, u.written-u.credit)
	}
	return nil
}

func (u *upload) Read([]byte) (int, error) { return 0, os.ErrInvalid }
func (u *upload) Seek(offset int64, whence int) (int64, error) {
	return 0, os.ErrInvalid // the handler only writes uploads front to back
}
func (u *upload) Readdir(int) ([]fs.FileInfo, error) { return nil, os.ErrInvalid }
func (u *upload) Stat() (fs.FileInfo, error)         { return u.tmp.Stat() }

// homeRoot is the home directory as its account lists it: with the shared
// folder as one more entry.
type homeRoot struct {
	*os.File
	shared *os.Root
}

func (h *homeRoot) Readdir(count int) ([]fs.FileInfo, error) {
	infos, err := h.File.Readdir(count)
	if err != nil || count > 0 {
		return infos, err
	}
	out := infos[:0]
	for _, fi := range infos {
		if fi.Name() != sharedName { // unreachable anyway: /shared is the shared folder
			out = append(out, fi)
		}
	}
	if fi, err := h.shared.Stat("."); err == nil {
		out = append(out, namedInfo{FileInfo: fi, name: sharedName})
	}
	return out, nil
}

// namedFile is the shared folder's root, named "shared" rather than ".".
type namedFile struct {
	*os.File
	name string
}

func (f *namedFile) Stat() (fs.FileInfo, error) {
	fi, err := f.File.Stat()
	if err != nil {
		return nil, err
	}
	return namedInfo{FileInfo: fi, name: f.name}, nil
}

type namedInfo struct {
	fs.FileInfo
	name string
}

func (n namedInfo) Name() string { return n.name }
