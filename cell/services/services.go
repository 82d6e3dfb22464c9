// Package services owns the cell's service containers as a capability: the
// store (the signed catalog of services a household can install), installing
// and removing services, their status and restarts, the accounts every peer
// gets in every service that has accounts (made at install and when a peer is
// added, removed with the peer, each password generated and kept in the vault),
// the credentials a peer is handed, and the containers, images and volumes
// views of the admin.
//
// Like every capability it only stores intent, in one transaction with its
// audit entry: an install stores the service (the catalog entry it came from,
// an address on the services bridge), its admin token and an account per peer.
// The reconcile loop (cell/reconcile) builds the rest from the database: the
// bridge and the service's network namespace, the firewall, the name in the
// zone, the site on the front, and, through the supervisor
// (images/supervise), the container: imported from the bundled OCI archive,
// created, started, health-checked, its accounts given to it through its
// admin endpoint, restarted with back-off when it dies. A cell killed
// mid-install therefore ends, on restart, in a finished install (the intent
// is stored) or, if the install's transaction never committed, in nothing.
//
// Without containerd (no -containerd socket, or it is not answering) the cell
// runs on and every services route says so with a 503.
package services

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/cell/plan"
	"github.com/pic-cell/cell/images/catalog"
	"github.com/pic-cell/cell/images/runtime"
	"github.com/pic-cell/cell/images/supervise"
	"github.com/pic-cell/cell/storage"
)

// CatalogPurpose is the purpose of the trust keys that may sign the catalog.
const CatalogPurpose = "catalog"

// DefaultCatalogKey is the name of the trust key the cell adds for the
// embedded catalog's signer when it trusts no catalog key at all.
const DefaultCatalogKey = "pic-services"

// Loop is the reconcile loop as the capability needs it.
type Loop interface {
	// Sync waits until the network has every change committed before it.
	Sync(ctx context.Context) error
	// SyncServices waits until the supervisor has converged on the services
	// as they were at the call (or failed them).
	SyncServices(ctx context.Context) error
	// ServiceStates are the supervisor's last states, read without waiting.
	ServiceStates() []supervise.State
}

// Auditor writes a change's audit entry in the transaction that stores it.
type Auditor interface {
	Within(e storage.Entry) storage.Within
}

// Options are what the root hands the capability.
type Options struct {
	DB    *storage.DB
	Audit Auditor
	Loop  Loop // nil: no network loop (the services are stored but never run)
	// Runtime is containerd; nil when the daemon has none: every route that
	// needs it answers 503.
	Runtime runtime.Runtime
	// Catalog returns the signed index and its signature; nil is the
	// embedded default.
	Catalog func() (index, sig []byte)
	// DataDir is the cell's data directory: volumes live in DataDir/volumes/<id>.
	DataDir string
	// Arch is the machine's, as the catalog names images ("amd64", "arm64");
	// "" is this binary's.
	Arch string
	Now  func() time.Time
	Rand io.Reader
}

// Services is the capability.
type Services struct {
	o Options
}

// Section is the "services" section of the config document.
type Section struct {
	// Subnet is the services bridge's network; the cell is its first address.
	Subnet string `json:"subnet"`
}

// ConfigSection registers the "services" section.
func ConfigSection() config.Section {
	return config.Section{Name: "services", New: func() any { return &Section{Subnet: plan.DefaultServicesSubnet} },
		Validate: func(v any) error {
			s := v.(*Section)
			p, err := netip.ParsePrefix(s.Subnet)
			if err != nil || !p.Addr().Is4() || p.Bits() < 16 || p.Bits() > 28 || p.Masked() != p {
				return fault.Invalid("invalid_subnet", "services.subnet must be an IPv4 network from /16 to /28, such as %s (got %s)", plan.DefaultServicesSubnet, names.Quote(s.Subnet))
			}
			return nil
		}}
}

// New returns the capability. It makes sure the cell trusts a key for the
// catalog (the embedded index's signer) when it trusts none.
func New(o Options) (*Services, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Catalog == nil {
		o.Catalog = catalog.DefaultBytes
	}
	if o.Arch == "" {
		o.Arch = goruntime.GOARCH
	}
	s := &Services{o: o}
	if err := s.trustDefaultKey(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Services) trustDefaultKey() error {
	keys, err := s.o.DB.TrustKeys().List()
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.Purpose == CatalogPurpose {
			return nil
		}
	}
	k := storage.TrustKey{Name: DefaultCatalogKey, PublicKey: base64.StdEncoding.EncodeToString(catalog.PublicKey()),
		Purpose: CatalogPurpose, CreatedAt: s.o.Now().UTC()}
	err = s.o.DB.TrustKeys().Create(k, s.o.Audit.Within(storage.Entry{Actor: "system", Action: "vault.trust_key_add",
		TargetType: "trust_key", TargetID: DefaultCatalogKey, Result: "ok", Details: map[string]string{"purpose": CatalogPurpose}}))
	if errors.Is(err, storage.ErrExists) {
		return nil // a key of another purpose has the name: the admin's choice
	}
	return err
}

// catalogTx reads and verifies the catalog against the trusted catalog keys.
func (s *Services) catalogTx(tx *storage.Tx) (catalog.Index, error) {
	keys, err := s.o.DB.TrustKeys().ListTx(tx)
	if err != nil {
		return catalog.Index{}, err
	}
	var pubs []ed25519.PublicKey
	for _, k := range keys {
		if k.Purpose != CatalogPurpose {
			continue
		}
		if raw, err := base64.StdEncoding.DecodeString(k.PublicKey); err == nil && len(raw) == ed25519.PublicKeySize {
			pubs = append(pubs, ed25519.PublicKey(raw))
		}
	}
	index, sig := s.o.Catalog()
	idx, err := catalog.Verify(index, sig, pubs)
	if err != nil {
		if errors.Is(err, catalog.ErrBadSignature) {
			return catalog.Index{}, fault.Errorf(fault.ErrUnavailable, "catalog_untrusted", "the service catalog's signature matches no key the cell trusts for %q: nothing can be installed from it", CatalogPurpose)
		}
		return catalog.Index{}, fault.Errorf(fault.ErrUnavailable, "catalog_invalid", "the service catalog cannot be read: %v", err)
	}
	return idx, nil
}

func entryOf(idx catalog.Index, id string) (catalog.Entry, bool) {
	for _, e := range idx.Services {
		if e.ID == id {
			return e, true
		}
	}
	return catalog.Entry{}, false
}

// EntryOf decodes the catalog entry an installed service was installed from.
func EntryOf(svc storage.InstalledService) (catalog.Entry, error) {
	var e catalog.Entry
	if err := json.Unmarshal(svc.Entry, &e); err != nil {
		return e, fmt.Errorf("service %q: its catalog entry: %w", svc.ID, err)
	}
	return e, nil
}

// StoreEntry is one service of the catalog as GET /api/store shows it.
type StoreEntry struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Version      string   `json:"version"`
	Description  string   `json:"description"`
	Subdomain    string   `json:"subdomain"`
	Capabilities []string `json:"capabilities"`
	Egress       bool     `json:"internet_egress"`
	Accounts     string   `json:"accounts"`
	MemoryBytes  int64    `json:"memory_bytes"`
	Installed    bool     `json:"installed"`
	// Arch says whether the catalog has an image for this cell's machine.
	Available bool `json:"available"`
}

// Store is the catalog, each entry with whether it is installed.
func (s *Services) Store() ([]StoreEntry, error) {
	out := []StoreEntry{}
	err := s.o.DB.View(func(tx *storage.Tx) error {
		idx, err := s.catalogTx(tx)
		if err != nil {
			return err
		}
		for _, e := range idx.Services {
			_, err := s.o.DB.Services().GetTx(tx, e.ID)
			_, ok := e.Images[s.o.Arch]
			out = append(out, StoreEntry{ID: e.ID, Name: e.Name, Version: e.Version, Description: e.Description,
				Subdomain: e.Subdomain, Capabilities: e.Capabilities, Egress: e.Egress, Accounts: e.Accounts,
				MemoryBytes: e.Resources.MemoryBytes, Installed: err == nil, Available: ok})
		}
		return nil
	})
	return out, err
}

// Active is an installed service as GET /api/services/active shows it.
type Active struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Version      string    `json:"version"`
	Subdomain    string    `json:"subdomain"`
	URL          string    `json:"url"`
	Capabilities []string  `json:"capabilities"`
	State        string    `json:"state"` // installing, running, failed, stopped
	Reason       string    `json:"reason,omitempty"`
	Restarts     int       `json:"restarts"`
	Accounts     int       `json:"accounts"`
	InstalledAt  time.Time `json:"installed_at"`
}

// Active lists the installed services with their state.
func (s *Services) Active() ([]Active, error) {
	out := []Active{}
	err := s.o.DB.View(func(tx *storage.Tx) error {
		domain, err := domainTx(s.o.DB, tx)
		if err != nil {
			return err
		}
		list, err := s.o.DB.Services().ListTx(tx)
		if err != nil {
			return err
		}
		for _, svc := range list {
			a, err := s.activeTx(tx, svc, domain)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

func (s *Services) activeTx(tx *storage.Tx, svc storage.InstalledService, domain string) (Active, error) {
	e, err := EntryOf(svc)
	if err != nil {
		return Active{}, err
	}
	accts, err := s.o.DB.Services().AccountsTx(tx, svc.ID)
	if err != nil {
		return Active{}, err
	}
	a := Active{ID: svc.ID, Name: e.Name, Version: svc.Version, Subdomain: e.Subdomain, URL: siteURL(e.Subdomain, domain),
		Capabilities: e.Capabilities, Accounts: len(accts), InstalledAt: svc.InstalledAt}
	a.State, a.Reason, a.Restarts = s.stateOf(svc)
	return a, nil
}

// stateOf is the supervisor's word on a service; before it has one, the
// service is installing.
func (s *Services) stateOf(svc storage.InstalledService) (state, reason string, restarts int) {
	id := svc.ID
	if svc.Stopped {
		return "stopped", "stopped by the admin", 0
	}
	if s.o.Runtime == nil {
		return "failed", "containerd is not available on this cell", 0
	}
	if s.o.Loop == nil {
		return "installing", "waiting for the network", 0
	}
	for _, st := range s.o.Loop.ServiceStates() {
		if st.ID == id {
			return st.Phase, st.Reason, st.Restarts
		}
	}
	return "installing", "", 0
}

func siteURL(sub, domain string) string {
	if domain == "" {
		return ""
	}
	return "https://" + sub + "." + domain + "/"
}

func domainTx(db *storage.DB, tx *storage.Tx) (string, error) {
	doc, found, err := config.LoadTx(db, tx)
	if err != nil || !found {
		return "", err
	}
	return doc.Cell().Domain, nil
}

func (s *Services) needRuntime() error {
	if s.o.Runtime == nil {
		return fault.Errorf(fault.ErrUnavailable, "containerd_unavailable", "this cell runs no service containers: they need containerd (the daemon's -containerd SOCKET) and the kernel network (-wg-mode tun)")
	}
	return nil
}

func notInstalled(id string) error {
	return fault.Errorf(fault.ErrNotFound, "service_not_installed", "the service %s is not installed", names.Quote(id))
}

// CheckID refuses an id that cannot be a service's.
func CheckID(id string) error {
	if !runtime.ValidID(id) {
		return fault.Errorf(fault.ErrNotFound, "service_not_found", "no service with the id %s in the catalog", names.Quote(id))
	}
	return nil
}

// Install stores the intent to run service id with an account for every
// peer, and answers once the network (bridge, firewall, name, site) is built;
// the container follows (state installing, then running or failed).
func (s *Services) Install(ctx context.Context, id string, audit storage.Entry) (Active, error) {
	if err := CheckID(id); err != nil {
		return Active{}, err
	}
	if err := s.needRuntime(); err != nil {
		return Active{}, err
	}
	audit.TargetType, audit.TargetID, audit.Result = "service", id, "ok"
	var out Active
	err := s.o.DB.Update(func(tx *storage.Tx) error {
		idx, err := s.catalogTx(tx)
		if err != nil {
			return err
		}
		e, ok := entryOf(idx, id)
		if !ok {
			return fault.Errorf(fault.ErrNotFound, "service_not_found", "no service with the id %s in the catalog", names.Quote(id))
		}
		if _, err := s.o.DB.Services().GetTx(tx, id); err == nil {
			return fault.Errorf(fault.ErrConflict, "already_installed", "the service %s is installed already", names.Quote(id))
		}
		if _, err := s.o.DB.Peers().GetTx(tx, e.Subdomain); err == nil {
			return fault.Errorf(fault.ErrConflict, "name_taken", "the service's name %s is a peer's name: rename or delete the peer %q first", e.Subdomain, e.Subdomain)
		}
		addr, err := s.freeAddrTx(tx)
		if err != nil {
			return err
		}
		raw, err := json.Marshal(e)
		if err != nil {
			return err
		}
		svc := storage.InstalledService{ID: id, Version: e.Version, Entry: raw, Addr: addr, InstalledAt: s.o.Now().UTC()}
		if err := s.o.DB.Services().PutTx(tx, svc); err != nil {
			return err
		}
		token, err := s.secret()
		if err != nil {
			return err
		}
		if err := s.o.DB.Vault.PutTx(tx, TokenName(id), []byte(token)); err != nil {
			return err
		}
		n := 0
		if e.Accounts == catalog.AccountsPerPeer {
			peers, err := s.o.DB.Peers().ListTx(tx)
			if err != nil {
				return err
			}
			for _, p := range peers {
				if err := s.addAccountTx(tx, id, p.Name, p.Name); err != nil {
					return err
				}
				n++
			}
		}
		audit.Details = map[string]string{"version": e.Version, "accounts": strconv.Itoa(n)}
		if err := s.o.Audit.Within(audit)(tx); err != nil {
			return err
		}
		domain, err := domainTx(s.o.DB, tx)
		if err != nil {
			return err
		}
		out, err = s.activeTx(tx, svc, domain)
		return err
	})
	if err != nil {
		return Active{}, err
	}
	if s.o.Loop != nil {
		if err := s.o.Loop.Sync(ctx); err != nil {
			return out, fault.Errorf(fault.ErrUnavailable, "apply_failed", "the service is stored but the network for it was not built: %v", err)
		}
	}
	return out, nil
}

// freeAddrTx is the lowest address of the services subnet that no installed
// service has (the first is the cell's).
func (s *Services) freeAddrTx(tx *storage.Tx) (netip.Addr, error) {
	subnet, err := SubnetTx(s.o.DB, tx)
	if err != nil {
		return netip.Addr{}, err
	}
	list, err := s.o.DB.Services().ListTx(tx)
	if err != nil {
		return netip.Addr{}, err
	}
	taken := map[netip.Addr]bool{}
	for _, svc := range list {
		taken[svc.Addr] = true
	}
	for a := plan.Gateway(subnet).Addr().Next(); subnet.Contains(a); a = a.Next() {
		if !taken[a] && a.Next().IsValid() && subnet.Contains(a.Next()) { // not the broadcast address
			return a, nil
		}
	}
	return netip.Addr{}, fault.Errorf(fault.ErrConflict, "subnet_full", "the services subnet %s has no free address", subnet)
}

// SubnetTx is the services bridge's network from the config.
func SubnetTx(db *storage.DB, tx *storage.Tx) (netip.Prefix, error) {
	sec := Section{Subnet: plan.DefaultServicesSubnet}
	doc, found, err := config.LoadTx(db, tx)
	if err != nil {
		return netip.Prefix{}, err
	}
	if found {
		if err := doc.Decode("services", &sec); err != nil {
			return netip.Prefix{}, err
		}
	}
	return netip.ParsePrefix(sec.Subnet)
}

// Remove removes service id: its record, accounts and secrets at once, then
// waits for the container to be gone; without keepData its volumes go too.
func (s *Services) Remove(ctx context.Context, id string, keepData bool, audit storage.Entry) error {
	if err := CheckID(id); err != nil {
		return notInstalled(id)
	}
	audit.TargetType, audit.TargetID, audit.Result = "service", id, "ok"
	audit.Details = map[string]string{"keep_data": strconv.FormatBool(keepData)}
	err := s.o.DB.Update(func(tx *storage.Tx) error {
		accts, err := s.o.DB.Services().AccountsTx(tx, id)
		if err != nil {
			return err
		}
		if err := s.o.DB.Services().DeleteTx(tx, id); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return notInstalled(id)
			}
			return err
		}
		for _, a := range accts {
			if err := s.o.DB.Vault.DeleteTx(tx, PasswordName(id, a.Username)); err != nil {
				return err
			}
		}
		if err := s.o.DB.Vault.DeleteTx(tx, TokenName(id)); err != nil {
			return err
		}
		return s.o.Audit.Within(audit)(tx)
	})
	if err != nil {
		return err
	}
	if s.o.Loop != nil {
		if err := s.o.Loop.Sync(ctx); err != nil {
			return fault.Errorf(fault.ErrUnavailable, "apply_failed", "the service is removed from the database but the network was not rebuilt: %v", err)
		}
		if err := s.settle(ctx); err != nil {
			return fault.Errorf(fault.ErrUnavailable, "remove_pending", "the service is removed from the database; its container is still being stopped (%v), and its data is kept", err)
		}
	}
	if !keepData && s.o.Runtime != nil {
		// The data goes only once no container of it runs.
		if st, err := s.o.Runtime.Status(ctx, id); err != nil || st.State != runtime.StateAbsent {
			return fault.Errorf(fault.ErrUnavailable, "remove_pending", "the service is removed from the database; its container is not gone yet, so its data is kept: remove the volume %s once it is", id)
		}
	}
	if !keepData {
		if err := os.RemoveAll(VolumeDir(s.o.DataDir, id)); err != nil {
			return fmt.Errorf("removing the data of %s: %w", id, err)
		}
	}
	return nil
}

// settle waits until the supervisor has worked on every change made before
// the call. A service that ended failed is no error here: its own state
// says so (another service's failure must not fail this request).
func (s *Services) settle(ctx context.Context) error {
	if s.o.Loop == nil {
		return nil
	}
	if err := s.o.Loop.SyncServices(ctx); err != nil && !errors.Is(err, supervise.ErrFailed) {
		return err
	}
	return nil
}

// Restart asks the loop to restart the service's container.
func (s *Services) Restart(ctx context.Context, id string, audit storage.Entry) error {
	if err := CheckID(id); err != nil {
		return notInstalled(id)
	}
	if err := s.needRuntime(); err != nil {
		return err
	}
	audit.TargetType, audit.TargetID, audit.Result = "service", id, "ok"
	err := s.o.DB.Update(func(tx *storage.Tx) error {
		svc, err := s.o.DB.Services().GetTx(tx, id)
		if err != nil {
			return notInstalled(id)
		}
		svc.Restart++
		if err := s.o.DB.Services().PutTx(tx, svc); err != nil {
			return err
		}
		return s.o.Audit.Within(audit)(tx)
	})
	if err != nil {
		return err
	}
	if s.o.Loop != nil {
		return s.o.Loop.Sync(ctx)
	}
	return nil
}

// Status is a service's container status.
type Status struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	Restarts  int       `json:"restarts"`
	Container string    `json:"container"` // containerd's word: running, stopped, created, absent
	PID       uint32    `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	Addr      string    `json:"address"`
}

// Status reads a service's state and its container's.
func (s *Services) Status(ctx context.Context, id string) (Status, error) {
	if err := CheckID(id); err != nil {
		return Status{}, notInstalled(id)
	}
	var svc storage.InstalledService
	err := s.o.DB.View(func(tx *storage.Tx) (err error) {
		svc, err = s.o.DB.Services().GetTx(tx, id)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return Status{}, notInstalled(id)
	}
	if err != nil {
		return Status{}, err
	}
	st := Status{ID: id, Addr: svc.Addr.String(), Container: "unknown"}
	st.State, st.Reason, st.Restarts = s.stateOf(svc)
	if s.o.Runtime != nil {
		if cs, err := s.o.Runtime.Status(ctx, id); err == nil {
			st.Container, st.PID, st.StartedAt = cs.State, cs.PID, cs.StartedAt
		}
	}
	return st, nil
}

// secret is 32 random bytes, as URL-safe base64 (a password or a token).
func (s *Services) secret() (string, error) {
	b := make([]byte, 24)
	if _, err := io.ReadFull(s.o.Rand, b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// TokenName is the vault entry of a service's admin token.
func TokenName(id string) string { return "service/" + id + "/admin-token" }

// PasswordName is the vault entry of an account's password.
func PasswordName(id, user string) string { return "service/" + id + "/account/" + user }

// VolumeDir is where a service's volumes live.
func VolumeDir(dataDir, id string) string { return filepath.Join(dataDir, "volumes", id) }

func sortedIDs(list []storage.InstalledService) []string {
	ids := make([]string, 0, len(list))
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	sort.Strings(ids)
	return slices.Compact(ids)
}
