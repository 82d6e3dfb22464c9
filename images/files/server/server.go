// Package server is the "files" service: WebDAV over the household's volume
// with a home per account, a shared folder, per-account quotas and the admin
// API through which the cell manages the accounts. Package main in
// images/files only parses flags and runs it; see its doc for the contract.
//
// Layout of the data directory (the container's /data volume):
//
//	accounts.json          the accounts (username, argon2id hash, quota), written atomically
//	homes/<username>/      each account's home, its WebDAV /
//	shared/                the household's folder, every account's /shared/
//	removed/<user>-<unix>/ homes of deleted accounts (moved, never deleted)
//	tmp/                   uploads in progress (the root file system is read-only)
//
// The shared folder counts against no account's quota.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/webdav"
)

// Config is what New needs.
type Config struct {
	DataDir   string       // the volume
	TokenFile string       // the admin bearer token, one line; reread when it changes
	Argon2    Argon2Params // for new hashes; zero means DefaultArgon2
	Logger    *slog.Logger // nil: discard
	Now       func() time.Time
}

// Server holds the accounts and serves WebDAV (Handler) and the admin API
// (AdminHandler).
type Server struct {
	cfg    Config
	log    *slog.Logger
	homes  *os.Root // DataDir/homes
	shared *os.Root // DataDir/shared

	cache    *authCache
	throttle *throttle
	token    tokenFile
	// argonSem bounds concurrent argon2 runs: each takes 19 MiB, and a burst
	// of logins must not take the container's memory.
	argonSem chan struct{}
	dummy    string // a hash verified for unknown users, so they take as long

	mu       sync.Mutex
	accounts map[string]account
	usage    map[string]*usage
	locks    *lockTable
}

// New opens (creating when missing) the data directory and loads the accounts.
func New(cfg Config) (*Server, error) {
	if cfg.Argon2 == (Argon2Params{}) {
		cfg.Argon2 = DefaultArgon2
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("files: no data directory")
	}
	for _, d := range []string{"", "homes", "shared", "removed", "tmp"} {
		if err := os.MkdirAll(filepath.Join(cfg.DataDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("files: data directory: %w", err)
		}
	}
	// Uploads a crash interrupted.
	if ents, err := os.ReadDir(filepath.Join(cfg.DataDir, "tmp")); err == nil {
		for _, e := range ents {
			os.RemoveAll(filepath.Join(cfg.DataDir, "tmp", e.Name()))
		}
	}
	accounts, err := loadAccounts(filepath.Join(cfg.DataDir, "accounts.json"))
	if err != nil {
		return nil, fmt.Errorf("files: accounts: %w", err)
	}
	homes, err := os.OpenRoot(filepath.Join(cfg.DataDir, "homes"))
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	shared, err := os.OpenRoot(filepath.Join(cfg.DataDir, "shared"))
	if err != nil {
		homes.Close()
		return nil, fmt.Errorf("files: %w", err)
	}
	dummy, err := hashPassword("no such account", cfg.Argon2)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: log, homes: homes, shared: shared,
		cache:    newAuthCache(),
		throttle: newThrottle(cfg.Now),
		token:    tokenFile{path: cfg.TokenFile, log: log},
		argonSem: make(chan struct{}, 2),
		dummy:    dummy,
		accounts: accounts,
		usage:    map[string]*usage{},
		locks:    newLockTable(),
	}
	if s.token.get() == nil {
		log.Warn("no admin token yet: the admin API refuses every request until the file holds one", "token_file", cfg.TokenFile)
	}
	for name := range accounts {
		if err := homes.Mkdir(name, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("files: home of %q: %w", name, err)
		}
	}
	return s, nil
}

// Close releases the directories New opened.
func (s *Server) Close() error {
	return errors.Join(s.homes.Close(), s.shared.Close())
}

func (s *Server) path(parts ...string) string {
	return filepath.Join(append([]string{s.cfg.DataDir}, parts...)...)
}

// usageOf returns the usage tracker of an existing account; s.mu is held.
func (s *Server) usageOfLocked(name string) *usage {
	u := s.usage[name]
	if u == nil {
		u = &usage{dir: s.path("homes", name)}
		s.usage[name] = u
	}
	u.setLimit(s.accounts[name].QuotaBytes)
	return u
}

// Handler serves GET /healthz and WebDAV (Basic auth, realm "files").
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("/", s.serveDAV)
	return mux
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	for _, d := range []string{"homes", "shared", "tmp"} {
		if st, err := os.Stat(s.path(d)); err != nil || !st.IsDir() {
			http.Error(w, "data directory not usable", http.StatusServiceUnavailable)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok"))
}

// authenticate checks r's Basic credentials; it returns the username or
// writes the refusal.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="files", charset="UTF-8"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
		return "", false
	}
	// The key's username is cut short: a valid one has at most 63 bytes, and
	// 10000 keys of 4 KiB names would be memory for nothing.
	key := truncate(user, 64) + "\x00" + clientIP(r)
	if s.throttle.blocked(key) {
		w.Header().Set("Retry-After", "60")
		http.Error(w, "too many failed logins, wait a minute", http.StatusTooManyRequests)
		return "", false
	}
	s.mu.Lock()
	acct, exists := s.accounts[user]
	s.mu.Unlock()
	if exists && s.cache.ok(user, pass) {
		return user, true
	}
	hash := s.dummy
	if exists {
		hash = acct.Hash
	}
	var good bool
	var err error
	if len(pass) <= maxPassword { // no account has a longer one
		good, err = s.verify(r.Context(), hash, pass)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Error("verifying a password", "user", user, "err", err)
	}
	if good && exists {
		// The account may have changed while argon2 ran: cache only if the
		// hash just verified is still the account's.
		s.mu.Lock()
		cur, still := s.accounts[user]
		if still && cur.Hash == hash {
			s.cache.add(user, pass)
		}
		s.mu.Unlock()
		if still && cur.Hash == hash {
			return user, true
		}
	}
	s.throttle.fail(key)
	s.log.Info("login refused", "user", truncate(user, 64), "client", clientIP(r))
	w.Header().Set("WWW-Authenticate", `Basic realm="files", charset="UTF-8"`)
	http.Error(w, "wrong username or password", http.StatusUnauthorized)
	return "", false
}

func (s *Server) verify(ctx context.Context, hash, pass string) (bool, error) {
	select {
	case s.argonSem <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-s.argonSem }()
	return verifyPassword(hash, pass)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (s *Server) serveDAV(w http.ResponseWriter, r *http.Request) {
	user, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	_, exists := s.accounts[user]
	var u *usage
	if exists {
		u = s.usageOfLocked(user)
	}
	s.mu.Unlock()
	if !exists { // deleted since authenticate
		http.Error(w, "wrong username or password", http.StatusUnauthorized)
		return
	}
	home, err := s.homes.OpenRoot(user)
	if errors.Is(err, os.ErrNotExist) {
		// Removed behind the service's back: an empty home beats a 500.
		s.log.Warn("home missing, making it again", "user", user)
		if err = s.homes.Mkdir(user, 0o755); err == nil || errors.Is(err, os.ErrExist) {
			home, err = s.homes.OpenRoot(user)
		}
	}
	if err != nil {
		s.log.Error("opening a home", "user", user, "err", err)
		http.Error(w, "home not available", http.StatusInternalServerError)
		return
	}
	defer home.Close()
	afs := &accountFS{
		home: home, shared: s.shared,
		homeDir: s.path("homes", user), sharedDir: s.path("shared"), tmpDir: s.path("tmp"),
		usage: u,
	}
	st := &reqState{}
	r = r.WithContext(context.WithValue(r.Context(), reqStateKey{}, st))
	qw := &quotaWriter{ResponseWriter: w, st: st}
	if r.Method == http.MethodPut && r.ContentLength > 0 && !afs.fitsPut(r.URL.Path, r.ContentLength) {
		st.setQuota()
		qw.WriteHeader(http.StatusInsufficientStorage)
		s.log.Info("upload over quota", "user", user, "bytes", r.ContentLength)
		return
	}
	h := &webdav.Handler{
		FileSystem: afs,
		LockSystem: s.locks.forUser(user),
		Logger: func(r *http.Request, err error) {
			if err != nil {
				s.log.Debug("webdav", "user", user, "method", r.Method, "path", r.URL.Path, "err", err)
			}
		},
	}
	h.ServeHTTP(qw, r)
	if st.overQuota() {
		s.log.Info("write over quota refused", "user", user, "method", r.Method, "path", r.URL.Path)
	}
}

// quotaWriter turns the error status of a request that ran into the quota
// into 507 Insufficient Storage (the WebDAV handler would say 405 or 500).
type quotaWriter struct {
	http.ResponseWriter
	st        *reqState
	rewritten bool
}

func (q *quotaWriter) WriteHeader(code int) {
	if code >= 400 && q.st.overQuota() {
		q.rewritten = true
		q.Header().Set("Content-Type", "text/plain; charset=utf-8")
		q.Header().Del("Content-Length")
		q.ResponseWriter.WriteHeader(http.StatusInsufficientStorage)
		q.ResponseWriter.Write([]byte("Insufficient Storage: the account's quota is exhausted\n"))
		return
	}
	q.ResponseWriter.WriteHeader(code)
}

func (q *quotaWriter) Write(b []byte) (int, error) {
	if q.rewritten {
		return len(b), nil
	}
	return q.ResponseWriter.Write(b)
}

func (q *quotaWriter) Unwrap() http.ResponseWriter { return q.ResponseWriter }

// ReadFrom keeps the server's sendfile path for downloads (GET hands an
// *os.File to http.ServeContent, which copies into the writer).
func (q *quotaWriter) ReadFrom(src io.Reader) (int64, error) {
	if q.rewritten {
		return io.Copy(io.Discard, src)
	}
	if rf, ok := q.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{q.ResponseWriter}, src)
}

// tokenFile is the admin token, reread when the file's size or time changes
// (the cell may rotate it while the service runs).
type tokenFile struct {
	path string
	log  *slog.Logger

	mu    sync.Mutex
	mod   time.Time
	size  int64
	token []byte
}

// get returns the current token; nil when the file is missing or empty (then
// no admin request is accepted).
func (t *tokenFile) get() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := os.Stat(t.path)
	if err != nil {
		if t.token != nil {
			t.log.Warn("admin token file unreadable; refusing admin requests", "token_file", t.path, "err", err)
		}
		t.token, t.mod, t.size = nil, time.Time{}, 0
		return nil
	}
	if t.token != nil && st.ModTime().Equal(t.mod) && st.Size() == t.size {
		return t.token
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return nil
	}
	tok := strings.TrimSpace(string(b))
	if i := strings.IndexByte(tok, '\n'); i >= 0 {
		tok = strings.TrimSpace(tok[:i])
	}
	if tok == "" {
		return nil
	}
	if t.token != nil {
		t.log.Info("admin token changed", "token_file", t.path)
	}
	t.token, t.mod, t.size = []byte(tok), st.ModTime(), st.Size()
	return t.token
}
