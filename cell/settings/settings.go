// Package settings owns the cell's config document as a capability: reading it
// (every registered section, defaults filled in) and changing it by a JSON merge
// patch (RFC 7386) validated as a whole through the sections' validators and
// stored together with its audit entry in one transaction. The commit tells the
// reconcile loop, which rebuilds what the change touches.
package settings

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

// Settings is the capability.
type Settings struct {
	db  *storage.DB
	reg *config.Registry
	now func() time.Time

	mu sync.Mutex // serialises read-modify-write of the document
}

// New returns the capability over the sections in reg.
func New(db *storage.DB, reg *config.Registry, now func() time.Time) *Settings {
	return &Settings{db: db, reg: reg, now: now}
}

// Config returns the stored document with every section's defaults filled in,
// or ErrSetupNeeded before setup.
func (s *Settings) Config() (config.Doc, error) {
	d, found, err := config.Load(s.db)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, config.ErrSetupNeeded()
	}
	return s.reg.Complete(d), nil
}

// PatchConfig applies a JSON merge patch (RFC 7386) to the config, validates the
// result as a whole, and stores it together with audit, the entry of this change, in
// one transaction. The config holds no secret, so the entry's details name the changed
// fields ("changed") and their new values. It returns the new config and the changed
// fields.
func (s *Settings) PatchConfig(patch []byte, audit storage.Entry) (config.Doc, []string, error) {
	return s.PatchConfigWithin(patch, audit, nil)
}

// PatchConfigWithin is PatchConfig with the caller's own writes (a section's
// secret, in the vault) in the storing transaction. With a within the document
// is stored even when no field of it changed: a new secret alone is a change.
func (s *Settings) PatchConfigWithin(patch []byte, audit storage.Entry, within storage.Within) (config.Doc, []string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.Config()
	if err != nil {
		return cur, nil, err
	}
	var p any
	if err := json.Unmarshal(patch, &p); err != nil {
		return cur, nil, fault.Invalid("malformed_json", "the body is not valid JSON: %v", err)
	}
	if _, ok := p.(map[string]any); !ok {
		return cur, nil, fault.Invalid("invalid_patch", "the body must be a JSON object (a merge patch of the config)")
	}
	curRaw, _ := json.Marshal(cur)
	var doc, base any
	json.Unmarshal(curRaw, &doc)
	json.Unmarshal(curRaw, &base) // mergePatch changes doc in place
	merged := mergePatch(doc, p)
	mergedRaw, _ := json.Marshal(merged)
	var next config.Doc
	dec := json.NewDecoder(bytes.NewReader(mergedRaw))
	if err := dec.Decode(&next); err != nil {
		return cur, nil, fault.Invalid("invalid_config", "the config does not accept that: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if next, err = s.reg.Validate(next); err != nil {
		return cur, nil, err
	}
	for _, name := range []string{"cell", "network"} {
		if _, ok := next[name]; !ok {
			return cur, nil, fault.Invalid("invalid_config", "the %s section cannot be removed", name)
		}
	}
	nextRaw, _ := json.Marshal(next)
	var canon any
	json.Unmarshal(nextRaw, &canon)
	changed := diffFields("", base, canon)
	sort.Strings(changed)
	audit.Details = map[string]string{"changed": strings.Join(changed, ",")}
	for _, f := range changed {
		audit.Details[f] = fmt.Sprint(lookup(canon, f))
	}
	if audit.Time == "" {
		audit.Time = s.now().UTC().Format(storage.TimeFormat)
	}
	if len(changed) == 0 && within == nil {
		_, err := s.db.Audit().Append(audit)
		return cur, nil, err
	}
	if _, err := s.db.Settings().PutConfigAuditedWithin(next, audit, within); err != nil {
		return cur, nil, err
	}
	return next, changed, nil
}

// mergePatch is RFC 7386: objects merge key by key, null deletes, anything else
// replaces.
func mergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = mergePatch(tm[k], v)
	}
	return tm
}

// diffFields lists the dotted paths whose values differ between a and b.
func diffFields(prefix string, a, b any) []string {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok {
		ar, _ := json.Marshal(a)
		br, _ := json.Marshal(b)
		if !bytes.Equal(ar, br) {
			return []string{prefix}
		}
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, m := range []map[string]any{am, bm} {
		for k := range m {
			if seen[k] {
				continue
			}
			seen[k] = true
			name := k
			if prefix != "" {
				name = prefix + "." + k
			}
			out = append(out, diffFields(name, am[k], bm[k])...)
		}
	}
	return out
}

// lookup finds a dotted path in a decoded JSON document.
func lookup(doc any, path string) any {
	cur := doc
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}
