package services

import (
	"context"
	"errors"
	"regexp"
	"time"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/images/catalog"
	"github.com/pic-cell/cell/storage"
)

// usernameRe is what a service account may be named: a peer's name fits.
var usernameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Account is a service account as the API lists it (never its password).
type Account struct {
	Service   string    `json:"service"`
	Username  string    `json:"username"`
	Peer      string    `json:"peer,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Credentials are what a user needs to sign in to a service.
type Credentials struct {
	Service  string `json:"service"`
	Name     string `json:"name"`
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password"`
}

func accountOf(a storage.ServiceAccount) Account {
	return Account{Service: a.Service, Username: a.Username, Peer: a.Peer, CreatedAt: a.CreatedAt}
}

func accountNotFound(id, user string) error {
	return fault.Errorf(fault.ErrNotFound, "account_not_found", "the service %s has no account %s", names.Quote(id), names.Quote(user))
}

// addAccountTx makes an account with a new password inside tx.
func (s *Services) addAccountTx(tx *storage.Tx, id, user, peer string) error {
	pw, err := s.secret()
	if err != nil {
		return err
	}
	a := storage.ServiceAccount{Service: id, Username: user, Peer: peer, CreatedAt: s.o.Now().UTC()}
	if err := s.o.DB.Services().PutAccountTx(tx, a); err != nil {
		if errors.Is(err, storage.ErrExists) {
			return fault.Errorf(fault.ErrConflict, "account_exists", "the service %s has an account %s already", names.Quote(id), names.Quote(user))
		}
		return err
	}
	return s.o.DB.Vault.PutTx(tx, PasswordName(id, user), []byte(pw))
}

// installedTx reads an installed service with its entry.
func (s *Services) installedTx(tx *storage.Tx, id string) (storage.InstalledService, catalog.Entry, error) {
	svc, err := s.o.DB.Services().GetTx(tx, id)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return svc, catalog.Entry{}, notInstalled(id)
		}
		return svc, catalog.Entry{}, err
	}
	e, err := EntryOf(svc)
	return svc, e, err
}

// Accounts lists service id's accounts.
func (s *Services) Accounts(id string) ([]Account, error) {
	if err := CheckID(id); err != nil {
		return nil, notInstalled(id)
	}
	out := []Account{}
	err := s.o.DB.View(func(tx *storage.Tx) error {
		if _, _, err := s.installedTx(tx, id); err != nil {
			return err
		}
		list, err := s.o.DB.Services().AccountsTx(tx, id)
		for _, a := range list {
			out = append(out, accountOf(a))
		}
		return err
	})
	return out, err
}

// NewAccount is the body of POST /api/services/catalog/<id>/accounts: an
// account for a peer (username: the peer's name), or under a username of the
// admin's choosing.
type NewAccount struct {
	Peer     string `json:"peer"`
	Username string `json:"username"`
}

// AddAccount provisions an account; the loop gives it to the service.
func (s *Services) AddAccount(ctx context.Context, id string, in NewAccount, audit storage.Entry) (Account, error) {
	if err := CheckID(id); err != nil {
		return Account{}, notInstalled(id)
	}
	user := in.Username
	if user == "" {
		user = in.Peer
	}
	if user == "" {
		return Account{}, fault.Invalid("missing_username", "give the peer the account is for (\"peer\") or a username")
	}
	if !usernameRe.MatchString(user) {
		return Account{}, fault.Invalid("invalid_username", "a service account's username is 1–63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit (got %s)", names.Quote(user))
	}
	audit.TargetType, audit.TargetID, audit.Result = "service_account", id+"/"+user, "ok"
	var out Account
	err := s.o.DB.Update(func(tx *storage.Tx) error {
		_, e, err := s.installedTx(tx, id)
		if err != nil {
			return err
		}
		if e.Accounts == catalog.AccountsNone {
			return fault.Errorf(fault.ErrConflict, "no_accounts", "the service %s has no accounts", names.Quote(id))
		}
		if in.Peer != "" {
			if _, err := s.o.DB.Peers().GetTx(tx, in.Peer); err != nil {
				return fault.Errorf(fault.ErrNotFound, "peer_not_found", "no peer named %s", names.Quote(in.Peer))
			}
		}
		if err := s.addAccountTx(tx, id, user, in.Peer); err != nil {
			return err
		}
		a, err := s.o.DB.Services().AccountTx(tx, id, user)
		if err != nil {
			return err
		}
		out = accountOf(a)
		return s.o.Audit.Within(audit)(tx)
	})
	if err != nil {
		return Account{}, err
	}
	return out, s.sync(ctx)
}

// DeleteAccount deprovisions an account.
func (s *Services) DeleteAccount(ctx context.Context, id, user string, audit storage.Entry) error {
	if err := CheckID(id); err != nil {
		return notInstalled(id)
	}
	if !usernameRe.MatchString(user) {
		return accountNotFound(id, user)
	}
	audit.TargetType, audit.TargetID, audit.Result = "service_account", id+"/"+user, "ok"
	err := s.o.DB.Update(func(tx *storage.Tx) error {
		if _, _, err := s.installedTx(tx, id); err != nil {
			return err
		}
		if err := s.o.DB.Services().DeleteAccountTx(tx, id, user); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return accountNotFound(id, user)
			}
			return err
		}
		if err := s.o.DB.Vault.DeleteTx(tx, PasswordName(id, user)); err != nil {
			return err
		}
		return s.o.Audit.Within(audit)(tx)
	})
	if err != nil {
		return err
	}
	return s.sync(ctx)
}

func (s *Services) sync(ctx context.Context) error {
	if s.o.Loop == nil {
		return nil
	}
	if err := s.o.Loop.Sync(ctx); err != nil {
		return fault.Errorf(fault.ErrUnavailable, "apply_failed", "the change is stored but the loop did not apply it: %v", err)
	}
	return nil
}

// Credentials hands over an account's stored credentials (the one place the
// password leaves the vault, with GET .../credentials and the peer's own).
func (s *Services) Credentials(id, user string) (Credentials, error) {
	if err := CheckID(id); err != nil {
		return Credentials{}, notInstalled(id)
	}
	if !usernameRe.MatchString(user) {
		return Credentials{}, accountNotFound(id, user)
	}
	var out Credentials
	err := s.o.DB.View(func(tx *storage.Tx) error {
		_, e, err := s.installedTx(tx, id)
		if err != nil {
			return err
		}
		if _, err := s.o.DB.Services().AccountTx(tx, id, user); err != nil {
			return accountNotFound(id, user)
		}
		out, err = s.credentialsTx(tx, e, user)
		return err
	})
	return out, err
}

func (s *Services) credentialsTx(tx *storage.Tx, e catalog.Entry, user string) (Credentials, error) {
	domain, err := domainTx(s.o.DB, tx)
	if err != nil {
		return Credentials{}, err
	}
	pw, err := s.o.DB.Vault.GetTx(tx, PasswordName(e.ID, user))
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{Service: e.ID, Name: e.Name, URL: siteURL(e.Subdomain, domain), Username: user, Password: string(pw)}, nil
}

// PeerCredentials are a peer's credentials in every installed service
// (GET /api/peers/<name>/service-credentials and the peer's own).
func (s *Services) PeerCredentials(peer string) ([]Credentials, error) {
	out := []Credentials{}
	err := s.o.DB.View(func(tx *storage.Tx) error {
		if _, err := s.o.DB.Peers().GetTx(tx, peer); err != nil {
			return fault.Errorf(fault.ErrNotFound, "peer_not_found", "no peer named %s", names.Quote(peer))
		}
		return s.peerAccountsTx(tx, peer, func(svc storage.InstalledService, a storage.ServiceAccount) error {
			e, err := EntryOf(svc)
			if err != nil {
				return err
			}
			c, err := s.credentialsTx(tx, e, a.Username)
			out = append(out, c)
			return err
		})
	})
	return out, err
}

// peerAccountsTx calls fn with each account made for peer, service by service.
func (s *Services) peerAccountsTx(tx *storage.Tx, peer string, fn func(storage.InstalledService, storage.ServiceAccount) error) error {
	list, err := s.o.DB.Services().ListTx(tx)
	if err != nil {
		return err
	}
	for _, svc := range list {
		accts, err := s.o.DB.Services().AccountsTx(tx, svc.ID)
		if err != nil {
			return err
		}
		for _, a := range accts {
			if a.Peer != peer {
				continue
			}
			if err := fn(svc, a); err != nil {
				return err
			}
		}
	}
	return nil
}

// PeerCreated is the peers' OnCreate hook: the new peer gets an account in
// every installed service that gives each peer one, in the peer's storing
// transaction. A peer may not take an installed service's name.
func (s *Services) PeerCreated(tx *storage.Tx, p storage.Peer) error {
	list, err := s.o.DB.Services().ListTx(tx)
	if err != nil {
		return err
	}
	for _, svc := range list {
		e, err := EntryOf(svc)
		if err != nil {
			return err
		}
		if e.Subdomain == p.Name {
			return fault.Errorf(fault.ErrConflict, "name_taken", "%s is the name of the installed service %q", p.Name, svc.ID)
		}
		if e.Accounts != catalog.AccountsPerPeer {
			continue
		}
		if _, err := s.o.DB.Services().AccountTx(tx, svc.ID, p.Name); err == nil {
			continue // an admin's account of that name: the peer gets none of its own
		}
		if err := s.addAccountTx(tx, svc.ID, p.Name, p.Name); err != nil {
			return err
		}
	}
	return nil
}

// PeerDeleted is the peers' OnDelete hook: the peer's accounts go with it,
// in the same transaction (the loop then removes them from the services, and
// their passwords stop working).
func (s *Services) PeerDeleted(tx *storage.Tx, p storage.Peer) error {
	return s.peerAccountsTx(tx, p.Name, func(svc storage.InstalledService, a storage.ServiceAccount) error {
		if err := s.o.DB.Services().DeleteAccountTx(tx, svc.ID, a.Username); err != nil {
			return err
		}
		return s.o.DB.Vault.DeleteTx(tx, PasswordName(svc.ID, a.Username))
	})
}
