// Package setup owns the first-run wizard: three steps in order (admin, cell,
// network). A step may be posted again until setup is complete; complete needs
// all three and then creates the admin account, the config and the "complete"
// mark in one transaction. After that every change answers ErrConflict, for
// good: the mark lives in the database, so a restart or a restored backup keeps
// it. There is no default account at any time.
//
// First contact (code.go): the HTTP layer lets a change through only with the
// cell's one-time setup code (CheckCode: constant-time, throttled per source
// address, void once setup is complete) and answers the wizard only at the
// cell's own address (CheckHost), so that neither the first device on the LAN
// nor a page elsewhere using DNS rebinding can make itself admin.
//
// Completing setup stores the config, which tells the reconcile loop; the
// wizard then waits for the loop to build the tunnel and the firewall, so that
// the answer to "complete" means the cell is ready for peers.
package setup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/storage"
)

// Field describes one input of a wizard step.
type Field struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Required bool   `json:"required"`
	Default  any    `json:"default,omitempty"`
	// Description says in plain words what the field is for.
	Description string `json:"description,omitempty"`
}

// Step is a wizard step's name and inputs.
type Step struct {
	Name   string  `json:"name"`
	Fields []Field `json:"fields"`
	// Description says what the step decides, for the person at the wizard.
	Description string `json:"description,omitempty"`
}

// StepNames are the wizard's steps in order.
var StepNames = []string{"admin", "cell", "network"}

// Hasher hashes the admin's password (the accounts capability's hasher).
type Hasher interface {
	Hash(password string) (string, error)
}

// Auditor writes a change's audit entry in the transaction that stores it.
type Auditor interface {
	Within(e storage.Entry) storage.Within
}

// Wizard is the capability.
type Wizard struct {
	db     *storage.DB
	hasher Hasher
	audit  Auditor
	now    func() time.Time
	// extra are the sections of capabilities other than cell and network,
	// stored with their defaults at completion.
	reg *config.Registry
	// settle, when set, waits for the kernel state built from the new config.
	settle func(context.Context) error
	// gate holds the setup code's hash and the cell's own names (code.go).
	gate          codeGate
	caFingerprint string // the vault root's, shown by Status
}

// New returns the wizard. settle (may be nil) is called after completion and
// waits until the tunnel and the firewall are built.
func New(db *storage.DB, h Hasher, audit Auditor, reg *config.Registry, now func() time.Time, settle func(context.Context) error) *Wizard {
	return &Wizard{db: db, hasher: h, audit: audit, reg: reg, now: now, settle: settle}
}

// Status is GET /api/setup/status.
type Status struct {
	Complete bool     `json:"complete"`
	Step     string   `json:"step,omitempty"`
	Steps    []string `json:"steps"`
	Done     []string `json:"done"`
	// CAFingerprint is the SHA-256 of the cell's CA (the vault's root), so the
	// person at the wizard can compare it with what their browser or
	// `cellctl trust` shows before they type the admin's password.
	CAFingerprint string `json:"ca_fingerprint,omitempty"`
}

// ShowCA sets the CA fingerprint the wizard's status shows.
func (c *Wizard) ShowCA(fingerprint string) { c.caFingerprint = fingerprint }

type adminStep struct {
	Username string `json:"username"`
	Password string `json:"password,omitempty"` // only on the way in
}

// adminStored is what is kept of the admin step: the hash, never the password.
type adminStored struct {
	Username     string `json:"username"`
	PasswordHash string `json:"password_hash"`
}

func (c *Wizard) steps() []Step {
	return []Step{
		{Name: "admin", Fields: []Field{{Name: "username", Type: "string", Required: true}, {Name: "password", Type: "password", Required: true}},
			Description: "The administrator's account: the one who adds devices and services."},
		{Name: "cell", Fields: []Field{{Name: "name", Type: "string", Required: true, Description: "A short name for this cell, also its hostname."},
			{Name: "domain", Type: "string", Required: true, Description: "The cell's DNS name, such as home.example.org: its services are named under it (files.home.example.org), and unless you give an endpoint in the next step, it is the name your devices dial from outside."}},
			Description: "The cell's name and domain."},
		{Name: "network", Fields: []Field{
			{Name: "wg_port", Type: "integer", Required: true, Default: 51820, Description: "The UDP port WireGuard listens on."},
			{Name: "subnet_v4", Type: "cidr", Required: true, Default: "10.77.0.0/24", Description: "The private network inside the tunnel."},
			{Name: "subnet_v6", Type: "cidr", Default: c.DefaultULA(), Description: "The IPv6 network inside the tunnel (a unique local /64)."},
			{Name: "wan_interface", Type: "string", Default: "auto", Description: "The interface to the home router; auto takes the default route's."},
			{Name: "endpoint", Type: "string", Description: "What your devices dial from outside, written into every device's config and QR code: a public name or address, with :port when the home router forwards another port. Empty means the domain and wg_port. The name must point at your home's public address (dynamic DNS keeps it there) and the router must forward the port to the cell (the cell asks the router itself, over UPnP, NAT-PMP or PCP). Changing it later means sending every device its config again."},
		}, Description: "The tunnel: its port, its addresses inside, and the endpoint devices dial from outside."},
	}
}

// SetupStatus says whether setup is complete and which step is next.
func (c *Wizard) Status() (Status, error) {
	st := Status{Steps: StepNames, Done: []string{}, CAFingerprint: c.caFingerprint}
	done, err := c.db.Settings().SetupComplete()
	if err != nil {
		return st, err
	}
	if done {
		st.Complete = true
		st.Done = StepNames
		return st, nil
	}
	for _, name := range StepNames {
		var raw json.RawMessage
		found, err := c.db.Settings().SetupStep(name, &raw)
		if err != nil {
			return st, err
		}
		if found {
			st.Done = append(st.Done, name)
		} else if st.Step == "" {
			st.Step = name
		}
	}
	if st.Step == "" {
		st.Step = "complete"
	}
	return st, nil
}

// SetupComplete reports whether setup is done.
func (c *Wizard) SetupComplete() (bool, error) { return c.db.Settings().SetupComplete() }

func (c *Wizard) refuseAfterSetup() error {
	done, err := c.db.Settings().SetupComplete()
	if err != nil {
		return err
	}
	if done {
		return fault.Errorf(fault.ErrConflict, "setup_complete", "setup is already complete; it cannot be changed")
	}
	return nil
}

// CurrentStep returns the next step to fill in (the last one once all are filled).
func (c *Wizard) CurrentStep() (Step, error) {
	if err := c.refuseAfterSetup(); err != nil {
		return Step{}, err
	}
	st, err := c.Status()
	if err != nil {
		return Step{}, err
	}
	for _, s := range c.steps() {
		if s.Name == st.Step {
			return s, nil
		}
	}
	steps := c.steps()
	return steps[len(steps)-1], nil
}

func decodeStrict(raw []byte, dst any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return fault.Invalid("missing_data", "data is required")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return fault.Invalid("invalid_data", "data: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

// SubmitStep validates and stores one step with its audit entry. Steps are taken
// in order: a step may be posted when every step before it has been.
func (c *Wizard) SubmitStep(name string, data json.RawMessage, audit storage.Entry) error {
	if err := c.refuseAfterSetup(); err != nil {
		return err
	}
	st, err := c.Status()
	if err != nil {
		return err
	}
	idx := -1
	for i, n := range StepNames {
		if n == name {
			idx = i
		}
	}
	if idx < 0 {
		return fault.Invalid("unknown_step", "unknown setup step %s (steps: %s)", names.Quote(name), strings.Join(StepNames, ", "))
	}
	for _, before := range StepNames[:idx] {
		if !contains(st.Done, before) {
			return fault.Errorf(fault.ErrConflict, "step_out_of_order", "submit the %q step first", before)
		}
	}
	switch name {
	case "admin":
		var in adminStep
		if err := decodeStrict(data, &in); err != nil {
			return err
		}
		if err := names.CheckUsername(in.Username); err != nil {
			return err
		}
		if err := names.CheckPassword("password", in.Password); err != nil {
			return err
		}
		hash, err := c.hasher.Hash(in.Password)
		if err != nil {
			return err
		}
		return c.db.Settings().PutSetupStep(name, adminStored{Username: in.Username, PasswordHash: hash}, c.within(audit, name))
	case "cell":
		var in config.Cell
		if err := decodeStrict(data, &in); err != nil {
			return err
		}
		if err := in.Validate(); err != nil {
			return err
		}
		return c.db.Settings().PutSetupStep(name, in, c.within(audit, name))
	default: // network
		in := config.Network{WGPort: 51820, SubnetV4: "10.77.0.0/24", SubnetV6: c.DefaultULA(), WANInterface: "auto"}
		if err := decodeStrict(data, &in); err != nil {
			return err
		}
		if err := in.Validate(); err != nil {
			return err
		}
		return c.db.Settings().PutSetupStep(name, in, c.within(audit, name))
	}
}

// CompleteSetup finalises the wizard and waits for the tunnel and the firewall
// to be built from the new config. It returns the admin's username.
func (c *Wizard) CompleteSetup(ctx context.Context, audit storage.Entry) (string, error) {
	if err := c.refuseAfterSetup(); err != nil {
		return "", err
	}
	s := c.db.Settings()
	var admin adminStored
	var cellSec config.Cell
	netSec := config.Network{WANInterface: "auto"}
	for _, step := range []struct {
		name string
		dst  any
	}{{"admin", &admin}, {"cell", &cellSec}, {"network", &netSec}} {
		found, err := s.SetupStep(step.name, step.dst)
		if err != nil {
			return "", err
		}
		if !found {
			return "", fault.Errorf(fault.ErrConflict, "setup_incomplete", "the %q step has not been submitted yet", step.name)
		}
	}
	doc := config.Doc{}
	doc["cell"], _ = json.Marshal(cellSec)
	doc["network"], _ = json.Marshal(netSec)
	doc = c.reg.Complete(doc)
	doc, err := c.reg.Validate(doc)
	if err != nil {
		return "", err
	}
	now := c.now()
	audit.TargetType, audit.TargetID, audit.Result = "setup", "complete", "ok"
	err = s.CompleteSetup(doc, storage.User{Username: admin.Username, Role: storage.RoleAdmin, PasswordHash: admin.PasswordHash, CreatedAt: now, PasswordAt: now}, c.audit.Within(audit))
	if errors.Is(err, storage.ErrConflict) {
		return "", fault.Errorf(fault.ErrConflict, "setup_complete", "setup is already complete; it cannot be changed")
	}
	if err != nil {
		return "", err
	}
	if c.settle != nil {
		// Setup is stored for good; a tunnel that fails to come up is the
		// health's to report (the wireguard part says why), not a reason to
		// refuse the completion.
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c.settle(sctx)
	}
	return admin.Username, nil
}

func (c *Wizard) within(audit storage.Entry, step string) storage.Within {
	audit.TargetType, audit.TargetID, audit.Result = "setup", step, "ok"
	return c.audit.Within(audit)
}

// DefaultULA derives a per-cell unique local /64 from the vault's public key, so the
// default is random across cells but the same on every read of one cell.
func (c *Wizard) DefaultULA() string {
	sum := sha256.Sum256([]byte(c.db.Vault.PublicKey()))
	var a [16]byte
	a[0] = 0xfd
	copy(a[1:6], sum[:5])
	return netip.PrefixFrom(netip.AddrFrom16(a), 64).String()
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }
