package httpapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"

	"github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/storage"
)

// The small interfaces the API needs; *cell.Cell implements them all, tests may fake
// any one.

// Wizard is the first-run setup wizard.
type Wizard interface {
	SetupStatus() (cell.SetupStatus, error)
	SetupComplete() (bool, error)
	CurrentStep() (cell.Step, error)
	SubmitStep(name string, data json.RawMessage) error
	CompleteSetup() (admin string, err error)
}

// Accounts is accounts and sessions.
type Accounts interface {
	Login(username, password, sourceIP, oldID string) (string, storage.Session, error)
	Session(id string) (storage.Session, error)
	Logout(id string) error
	ChangePassword(s storage.Session, current, next string) error
	ResetPassword(username, next string) error
	Users() ([]cell.UserInfo, error)
}

// Core is the config, status and health history.
type Core interface {
	Config() (cell.Config, error)
	// PatchConfig stores the change and its audit entry (given, details added) in
	// one transaction.
	PatchConfig(patch []byte, audit storage.Entry) (cell.Config, []string, error)
	Status(ctx context.Context) cell.Status
	HealthHistory(limit int) ([]storage.HealthRecord, error)
}

// Auditor is the audit log.
type Auditor interface {
	Record(e storage.Entry) (storage.Entry, error)
	AuditQuery(f storage.Filter) ([]storage.Entry, int, error)
	VerifyAudit() (storage.Verification, error)
	AuditExport(fn func(storage.Entry) error) (storage.Checkpoint, error)
	AuditPublicKey() ed25519.PublicKey
}

// Deps are the parts the API is built over.
type Deps struct {
	Setup Wizard
	Auth  Accounts
	Core  Core
	Audit Auditor
	Logs  *logs.Book
	// Peers and Routing are the WireGuard peers and routing areas
	// (peers.go, peer.go, wireguard.go, routing.go); nil leaves them out.
	Peers   PeerService
	Routing RoutingService
}
