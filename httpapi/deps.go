package httpapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"

	"github.com/pic-cell/cell/cell/accounts"
	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/health"
	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/cell/setup"
	"github.com/pic-cell/cell/storage"
)

// The small interfaces the API needs, one per capability (cell/<capability>
// implements each); tests may fake any one. Every change takes the audit entry
// the HTTP layer built (actor, source, action) and stores it in the change's
// own transaction; the handler then calls req.Audited().

// Wizard is the first-run setup wizard (cell/setup).
type Wizard interface {
	Status() (setup.Status, error)
	SetupComplete() (bool, error)
	CurrentStep() (setup.Step, error)
	SubmitStep(name string, data json.RawMessage, audit storage.Entry) error
	CompleteSetup(ctx context.Context, audit storage.Entry) (admin string, err error)
	// CheckHost refuses a Host (host[:port]) that is not one of the cell's own.
	CheckHost(hostport string) error
	// CheckCode refuses a change without the setup code (see cell/setup's code.go).
	CheckCode(code, source string) error
}

// Accounts is accounts and sessions (cell/accounts).
type Accounts interface {
	Login(username, password, sourceIP, oldID string) (string, storage.Session, error)
	Session(id string) (storage.Session, error)
	Logout(id string) error
	ChangePassword(s storage.Session, current, next string, audit storage.Entry) error
	ResetPassword(by storage.Session, username, next string, audit storage.Entry) error
	Users() ([]accounts.UserInfo, error)
}

// Settings is the config document (cell/settings).
type Settings interface {
	Config() (config.Doc, error)
	PatchConfig(patch []byte, audit storage.Entry) (config.Doc, []string, error)
}

// Health is the parts' status and the health history (cell/health).
type Health interface {
	Status(ctx context.Context) health.Status
	History(limit int) ([]health.Record, error)
}

// Auditor is the audit log (cell/audit).
type Auditor interface {
	Record(e storage.Entry) (storage.Entry, error)
	Query(f storage.Filter) ([]storage.Entry, int, error)
	Verify() (storage.Verification, error)
	Export(fn func(storage.Entry) error) (storage.Checkpoint, error)
	PublicKey() ed25519.PublicKey
}

// Deps are the parts the API is built over.
type Deps struct {
	Version  string // the firmware's version, for /api/system/info off the image
	Setup    Wizard
	Auth     Accounts
	Settings Settings
	Health   Health
	Audit    Auditor
	Logs     *logs.Book
	// Peers and Routing are the WireGuard peers and routing areas
	// (peers.go, peer.go, wireguard.go, routing.go); nil leaves them out.
	Peers   PeerService
	Routing RoutingService
	// DNS is the dns area (dns.go); nil leaves it out.
	DNS DNSService
	// Caddy is the front (caddy.go); nil: the area says the cell runs none.
	Caddy Caddy
	// Vault is the vault area (vault.go); nil leaves it out.
	Vault VaultService
	// Services is the services, store, containers and files areas
	// (services.go), and the peers' service credentials; nil leaves them out
	// (and every peer's credentials are an empty list).
	Services ServicesService
	// Network is the network area (network.go: the endpoint, the public
	// address, DDNS, the port mapping, diagnostics); nil leaves it out.
	Network NetworkService
	// Time is the ntp area (network.go); nil leaves it out.
	Time TimeService
}
