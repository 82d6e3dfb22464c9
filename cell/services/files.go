package services

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/images/accounts"
	"github.com/pic-cell/cell/storage"
)

// FilesID is the files service's id: /api/files/* speaks to it.
const FilesID = "files"

// FilesStatus is GET /api/files/status, which answers whether or not files
// is installed.
type FilesStatus struct {
	Installed bool   `json:"installed"`
	State     string `json:"state,omitempty"`
	Reason    string `json:"reason,omitempty"`
	URL       string `json:"url,omitempty"`
	Accounts  int    `json:"accounts"`
}

// FilesStatus says whether files is installed and how it is.
func (s *Services) FilesStatus() (FilesStatus, error) {
	var out FilesStatus
	err := s.o.DB.View(func(tx *storage.Tx) error {
		svc, err := s.o.DB.Services().GetTx(tx, FilesID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		domain, err := domainTx(s.o.DB, tx)
		if err != nil {
			return err
		}
		a, err := s.activeTx(tx, svc, domain)
		out = FilesStatus{Installed: true, State: a.State, Reason: a.Reason, URL: a.URL, Accounts: a.Accounts}
		return err
	})
	return out, err
}

// FilesUser is a WebDAV account with what it stores.
type FilesUser struct {
	Username   string `json:"username"`
	Peer       string `json:"peer,omitempty"`
	UsageBytes int64  `json:"usage_bytes"`
	QuotaBytes int64  `json:"quota_bytes"`
}

// FilesUsage is the whole volume's use.
type FilesUsage struct {
	Users      []FilesUser `json:"users"`
	TotalBytes int64       `json:"total_bytes"`
}

// ErrFilesNotInstalled is the 404 of /api/files/* while files is not installed.
func filesNotInstalled() error {
	return fault.Errorf(fault.ErrNotFound, "files_not_installed", "the files service is not installed: install it from the store first")
}

// FilesUsers asks the files service for its accounts and what each stores.
func (s *Services) FilesUsers(ctx context.Context) (FilesUsage, error) {
	var (
		svc   storage.InstalledService
		token []byte
		peers = map[string]string{}
	)
	err := s.o.DB.View(func(tx *storage.Tx) error {
		var err error
		if svc, err = s.o.DB.Services().GetTx(tx, FilesID); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return filesNotInstalled()
			}
			return err
		}
		accts, err := s.o.DB.Services().AccountsTx(tx, FilesID)
		for _, a := range accts {
			peers[a.Username] = a.Peer
		}
		if err != nil {
			return err
		}
		token, err = s.o.DB.Vault.GetTx(tx, TokenName(FilesID))
		return err
	})
	if err != nil {
		return FilesUsage{}, err
	}
	e, err := EntryOf(svc)
	if err != nil {
		return FilesUsage{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	admin := "http://" + netip.AddrPortFrom(svc.Addr, uint16(e.AdminPort)).String()
	list, err := accounts.New(admin, string(token), http.DefaultClient).List(ctx)
	if err != nil {
		return FilesUsage{}, fault.Errorf(fault.ErrUnavailable, "files_unavailable", "the files service is not answering (%s): %v", strconv.Quote(svc.Addr.String()), err)
	}
	out := FilesUsage{Users: []FilesUser{}}
	for _, a := range list {
		out.Users = append(out.Users, FilesUser{Username: a.Username, Peer: peers[a.Username], UsageBytes: a.UsageBytes, QuotaBytes: a.QuotaBytes})
		out.TotalBytes += a.UsageBytes
	}
	return out, nil
}
