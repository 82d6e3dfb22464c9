package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
)

// maxAdminBody caps an admin request's body.
const maxAdminBody = 64 << 10

// maxPassword bounds a password (argon2 hashes any length, but a megabyte
// "password" is an attack, not a login).
const maxPassword = 1024

// AccountInfo is one account as the admin API lists it.
type AccountInfo struct {
	Username   string `json:"username"`
	QuotaBytes int64  `json:"quota_bytes"`
	UsageBytes int64  `json:"usage_bytes"`
}

// AccountList is the body of GET /admin/v1/accounts.
type AccountList struct {
	Accounts []AccountInfo `json:"accounts"`
}

// PutAccount is the body of PUT /admin/v1/accounts/{username}.
type PutAccount struct {
	Password   string `json:"password"`
	QuotaBytes int64  `json:"quota_bytes"`
}

// Usage is the body of GET /admin/v1/usage.
type Usage struct {
	TotalBytes  int64 `json:"total_bytes"`
	SharedBytes int64 `json:"shared_bytes"`
}

// ErrorBody is every admin error's body.
type ErrorBody struct {
	Error string `json:"error"`
}

// AdminHandler serves the admin API; every request needs the bearer token.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/v1/accounts", s.listAccounts)
	mux.HandleFunc("PUT /admin/v1/accounts/{username}", s.putAccount)
	mux.HandleFunc("DELETE /admin/v1/accounts/{username}", s.deleteAccount)
	mux.HandleFunc("GET /admin/v1/usage", s.getUsage)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such admin endpoint")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.adminAuthorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="files-admin"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// adminAuthorized compares the bearer token in constant time: both sides are
// hashed first so that not even the length leaks.
func (s *Server) adminAuthorized(r *http.Request) bool {
	want := s.token.get()
	if want == nil {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	a, b := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256(want)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg})
}

func (s *Server) listAccounts(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	list := AccountList{Accounts: []AccountInfo{}}
	var us []*usage
	for _, name := range sortedNames(s.accounts) {
		list.Accounts = append(list.Accounts, AccountInfo{Username: name, QuotaBytes: s.accounts[name].QuotaBytes})
		us = append(us, s.usageOfLocked(name))
	}
	s.mu.Unlock()
	for i, u := range us { // walks outside s.mu: logins go on meanwhile
		n, err := u.current()
		if err != nil {
			s.log.Warn("measuring a home", "user", list.Accounts[i].Username, "err", err)
		}
		list.Accounts[i].UsageBytes = n
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) username(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("username")
	if !ValidUsername(name) {
		writeError(w, http.StatusBadRequest, ErrBadUsername.Error())
		return "", false
	}
	return name, true
}

func (s *Server) putAccount(w http.ResponseWriter, r *http.Request) {
	name, ok := s.username(w, r)
	if !ok {
		return
	}
	var body PutAccount
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body over 64 KiB")
			return
		}
		writeError(w, http.StatusBadRequest, "body: "+decodeProblem(err))
		return
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "body: more than one JSON value")
		return
	}
	if _, err := io.Copy(io.Discard, dec.Buffered()); err != nil {
		writeError(w, http.StatusBadRequest, "body unreadable")
		return
	}
	if body.QuotaBytes < 0 {
		writeError(w, http.StatusBadRequest, "quota_bytes must be 0 (unlimited) or more")
		return
	}
	if len(body.Password) > maxPassword {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("password longer than %d bytes", maxPassword))
		return
	}
	s.mu.Lock()
	old, exists := s.accounts[name]
	s.mu.Unlock()
	if !exists && body.Password == "" {
		writeError(w, http.StatusBadRequest, "a new account needs a password")
		return
	}
	// The cell re-PUTs every account after a restart: a password that still
	// matches keeps its hash, so nothing is written and no login is
	// forgotten. An empty password on an existing account changes only the
	// quota.
	hash := old.Hash
	if body.Password != "" {
		same := false
		if exists {
			var err error
			same, err = s.verify(r.Context(), old.Hash, body.Password)
			if err != nil && !errors.Is(err, ErrBadHash) {
				writeError(w, http.StatusServiceUnavailable, "request cancelled")
				return
			}
		}
		if !same {
			h, err := hashPassword(body.Password, s.cfg.Argon2)
			if err != nil {
				s.log.Error("hashing a password", "user", name, "err", err)
				writeError(w, http.StatusInternalServerError, "cannot hash the password")
				return
			}
			hash = h
		}
	}
	if err := s.homes.Mkdir(name, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		s.log.Error("making a home", "user", name, "err", err)
		writeError(w, http.StatusInternalServerError, "cannot make the home directory")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, existsNow := s.accounts[name]
	next := account{Username: name, Hash: hash, QuotaBytes: body.QuotaBytes}
	if existsNow && cur == next {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	accounts := copyAccounts(s.accounts)
	accounts[name] = next
	if err := saveAccounts(s.path("accounts.json"), accounts); err != nil {
		s.log.Error("saving accounts", "err", err)
		writeError(w, http.StatusInternalServerError, "cannot save the accounts")
		return
	}
	s.accounts = accounts
	if !existsNow || cur.Hash != next.Hash {
		s.cache.forget(name)
	}
	s.usageOfLocked(name) // the new limit
	s.log.Info("account saved", "user", name, "quota_bytes", next.QuotaBytes, "created", !existsNow)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteAccount(w http.ResponseWriter, r *http.Request) {
	name, ok := s.username(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, exists := s.accounts[name]; !exists {
		writeError(w, http.StatusNotFound, fmt.Sprintf("account %q: %v", name, ErrNotFound))
		return
	}
	accounts := copyAccounts(s.accounts)
	delete(accounts, name)
	if err := saveAccounts(s.path("accounts.json"), accounts); err != nil {
		s.log.Error("saving accounts", "err", err)
		writeError(w, http.StatusInternalServerError, "cannot save the accounts")
		return
	}
	// The login is gone from here on: authenticate and serveDAV both look
	// the account up under s.mu.
	s.accounts = accounts
	s.cache.forget(name)
	delete(s.usage, name)
	s.locks.forget(name, s.cfg.Now())
	// The household's files are moved aside, never deleted. Should the move
	// fail, the home stays where it was and a new account of that name would
	// find it again; the caller hears of it.
	dest, err := s.removeHome(name)
	if err != nil {
		s.log.Error("moving a deleted account's home aside", "user", name, "err", err)
		writeError(w, http.StatusInternalServerError, "account deleted, but its home could not be moved to removed/")
		return
	}
	s.log.Info("account deleted", "user", name, "home_moved_to", dest)
	w.WriteHeader(http.StatusNoContent)
}

// removeHome moves homes/<name> to removed/<name>-<unix seconds>, with a
// suffix if that exists already (two deletions within a second).
func (s *Server) removeHome(name string) (string, error) {
	src := s.path("homes", name)
	if _, err := os.Lstat(src); errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	base := fmt.Sprintf("%s-%d", name, s.cfg.Now().Unix())
	for i := 0; i < 100; i++ {
		dest := base
		if i > 0 {
			dest = fmt.Sprintf("%s.%d", base, i)
		}
		full := s.path("removed", dest)
		if _, err := os.Lstat(full); err == nil {
			continue
		}
		if err := os.Rename(src, full); err != nil {
			return "", err
		}
		return "removed/" + dest, syncDir(s.path("removed"))
	}
	return "", errors.New("no free name under removed/")
}

func (s *Server) getUsage(w http.ResponseWriter, r *http.Request) {
	homes, err := dirSize(s.path("homes"))
	if err != nil {
		writeError(w, http.StatusInternalServerError, "cannot measure the homes")
		return
	}
	shared, err := dirSize(s.path("shared"))
	if err != nil {
		writeError(w, http.StatusInternalServerError, "cannot measure the shared folder")
		return
	}
	writeJSON(w, http.StatusOK, Usage{TotalBytes: homes + shared, SharedBytes: shared})
}

func copyAccounts(m map[string]account) map[string]account {
	out := make(map[string]account, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedNames(m map[string]account) []string { return slices.Sorted(maps.Keys(m)) }

// decodeProblem describes a JSON decoding error without quoting the body: a
// syntax error's message quotes the offending character, which may be one of
// the password's.
func decodeProblem(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("malformed JSON at offset %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "empty or truncated JSON"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return err.Error()[len("json: "):] // a key, not a value
	}
	return "not a JSON object"
}
