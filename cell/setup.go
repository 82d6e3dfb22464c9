package cell

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/pic-cell/cell/storage"
)

// The setup wizard: three steps in order (admin, cell, network). A step may be posted
// again until setup is complete; complete needs all three and then creates the admin
// account, the config and the "complete" mark in one transaction. After that every
// change answers ErrConflict, for good: the mark lives in the database, so a restart
// or a restored backup keeps it. There is no default account at any time.

// Field describes one input of a wizard step.
type Field struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Required bool   `json:"required"`
	Default  any    `json:"default,omitempty"`
}

// Step is a wizard step's name and inputs.
type Step struct {
	Name   string  `json:"name"`
	Fields []Field `json:"fields"`
}

// StepNames are the wizard's steps in order.
var StepNames = []string{"admin", "cell", "network"}

// SetupStatus is GET /api/setup/status.
type SetupStatus struct {
	Complete bool     `json:"complete"`
	Step     string   `json:"step,omitempty"`
	Steps    []string `json:"steps"`
	Done     []string `json:"done"`
}

type adminStep struct {
	Username string `json:"username"`
	Password string `json:"password,omitempty"` // only on the way in
}

// adminStored is what is kept of the admin step: the hash, never the password.
type adminStored struct {
	Username     string `json:"username"`
	PasswordHash string `json:"password_hash"`
}

func (c *Cell) steps() []Step {
	return []Step{
		{"admin", []Field{{Name: "username", Type: "string", Required: true}, {Name: "password", Type: "password", Required: true}}},
		{"cell", []Field{{Name: "name", Type: "string", Required: true}, {Name: "domain", Type: "string", Required: true}}},
		{"network", []Field{
			{Name: "wg_port", Type: "integer", Required: true, Default: 51820},
			{Name: "subnet_v4", Type: "cidr", Required: true, Default: "10.77.0.0/24"},
			{Name: "subnet_v6", Type: "cidr", Default: c.defaultULA()},
			{Name: "wan_interface", Type: "string", Default: "auto"},
		}},
	}
}

// SetupStatus says whether setup is complete and which step is next.
func (c *Cell) SetupStatus() (SetupStatus, error) {
	st := SetupStatus{Steps: StepNames, Done: []string{}}
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
func (c *Cell) SetupComplete() (bool, error) { return c.db.Settings().SetupComplete() }

func (c *Cell) refuseAfterSetup() error {
	done, err := c.db.Settings().SetupComplete()
	if err != nil {
		return err
	}
	if done {
		return Errorf(ErrConflict, "setup_complete", "setup is already complete; it cannot be changed")
	}
	return nil
}

// CurrentStep returns the next step to fill in (the last one once all are filled).
func (c *Cell) CurrentStep() (Step, error) {
	if err := c.refuseAfterSetup(); err != nil {
		return Step{}, err
	}
	st, err := c.SetupStatus()
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
		return Invalid("missing_data", "data is required")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return Invalid("invalid_data", "data: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

// SubmitStep validates and stores one step. Steps are taken in order: a step may be
// posted when every step before it has been.
func (c *Cell) SubmitStep(name string, data json.RawMessage) error {
	if err := c.refuseAfterSetup(); err != nil {
		return err
	}
	st, err := c.SetupStatus()
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
		return Invalid("unknown_step", "unknown setup step %s (steps: %s)", quoteShort(name), strings.Join(StepNames, ", "))
	}
	for _, before := range StepNames[:idx] {
		if !contains(st.Done, before) {
			return Errorf(ErrConflict, "step_out_of_order", "submit the %q step first", before)
		}
	}
	switch name {
	case "admin":
		var in adminStep
		if err := decodeStrict(data, &in); err != nil {
			return err
		}
		if err := checkUsername(in.Username); err != nil {
			return err
		}
		if err := checkPassword("password", in.Password); err != nil {
			return err
		}
		hash, err := c.hasher.Hash(in.Password)
		if err != nil {
			return err
		}
		return c.db.Settings().PutSetupStep(name, adminStored{Username: in.Username, PasswordHash: hash})
	case "cell":
		var in CellConfig
		if err := decodeStrict(data, &in); err != nil {
			return err
		}
		if err := in.validate(); err != nil {
			return err
		}
		return c.db.Settings().PutSetupStep(name, in)
	default: // network
		in := NetworkConfig{WGPort: 51820, SubnetV4: "10.77.0.0/24", SubnetV6: c.defaultULA(), WANInterface: "auto"}
		if err := decodeStrict(data, &in); err != nil {
			return err
		}
		if err := in.validate(); err != nil {
			return err
		}
		return c.db.Settings().PutSetupStep(name, in)
	}
}

// CompleteSetup finalises the wizard. It returns the admin's username.
func (c *Cell) CompleteSetup() (string, error) {
	if err := c.refuseAfterSetup(); err != nil {
		return "", err
	}
	s := c.db.Settings()
	var admin adminStored
	var cfg Config
	for _, step := range []struct {
		name string
		dst  any
	}{{"admin", &admin}, {"cell", &cfg.Cell}, {"network", &cfg.Network}} {
		found, err := s.SetupStep(step.name, step.dst)
		if err != nil {
			return "", err
		}
		if !found {
			return "", Errorf(ErrConflict, "setup_incomplete", "the %q step has not been submitted yet", step.name)
		}
	}
	cfg.Health = defaultHealth()
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	now := c.now()
	err := s.CompleteSetup(cfg, storage.User{Username: admin.Username, Role: storage.RoleAdmin, PasswordHash: admin.PasswordHash, CreatedAt: now, PasswordAt: now})
	if errors.Is(err, storage.ErrConflict) {
		return "", Errorf(ErrConflict, "setup_complete", "setup is already complete; it cannot be changed")
	}
	return admin.Username, err
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
