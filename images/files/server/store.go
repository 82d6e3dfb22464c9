package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
)

// ErrNotFound is returned for an account that does not exist.
var ErrNotFound = errors.New("no such account")

// ErrBadUsername is returned for a username outside ^[a-z0-9][a-z0-9._-]{0,62}$.
var ErrBadUsername = errors.New("username must match ^[a-z0-9][a-z0-9._-]{0,62}$")

var usernameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidUsername reports whether name may be an account's name. The rule is
// the cell's peer names; it also keeps every name a single, harmless path
// element ("." and ".." cannot match: the first character is alphanumeric).
func ValidUsername(name string) bool { return usernameRE.MatchString(name) }

// account is one login as accounts.json keeps it.
type account struct {
	Username   string `json:"username"`
	Hash       string `json:"hash"`
	QuotaBytes int64  `json:"quota_bytes"`
}

type accountsFile struct {
	Version  int       `json:"version"`
	Accounts []account `json:"accounts"`
}

// loadAccounts reads path; a missing file is no accounts (a fresh volume).
func loadAccounts(path string) (map[string]account, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]account{}, nil
	}
	if err != nil {
		return nil, err
	}
	var f accountsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m := make(map[string]account, len(f.Accounts))
	for _, a := range f.Accounts {
		if !ValidUsername(a.Username) {
			return nil, fmt.Errorf("%s: account %q: %w", path, a.Username, ErrBadUsername)
		}
		m[a.Username] = a
	}
	return m, nil
}

// saveAccounts writes accounts to path atomically: a temporary file beside
// it, fsync, rename, fsync of the directory. A crash leaves either the old or
// the new file, never a torn one: the accounts are the household's logins.
func saveAccounts(path string, accounts map[string]account) error {
	f := accountsFile{Version: 1, Accounts: make([]account, 0, len(accounts))}
	for _, a := range accounts {
		f.Accounts = append(f.Accounts, a)
	}
	sort.Slice(f.Accounts, func(i, j int) bool { return f.Accounts[i].Username < f.Accounts[j].Username })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".accounts-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
