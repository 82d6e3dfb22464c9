// Package catalog owns the service catalog ("pic-services index"): the JSON
// list of services a cell can install, with their images pinned by digest,
// their ports, volumes, resources and how their accounts are made. It parses
// and validates the index strictly, verifies its ed25519 signature, and
// embeds the default index, its signature and the public key that signs it.
//
// An index is used only after Verify: one with a bad signature is refused as
// a whole. Decode checks the shape of an index without its origin, for the
// signing tool.
package catalog

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// FormatVersion is the only index format this package reads.
const FormatVersion = 1

// MaxIndexBytes bounds an index: the catalog lists a handful of services.
const MaxIndexBytes = 1 << 20

var (
	// ErrBadSignature: the index is not signed by a trusted key.
	ErrBadSignature = errors.New("the service index's signature does not verify with any trusted key")
	// ErrInvalid: the index is malformed or breaks a rule.
	ErrInvalid = errors.New("invalid service index")
	// ErrNotFound: no service with that id.
	ErrNotFound = errors.New("no such service in the catalog")
)

// Index is the catalog.
type Index struct {
	Version  int     `json:"version"`
	Services []Entry `json:"services"`
}

// Entry is one installable service.
type Entry struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Version     string `json:"version"`
	Description string `json:"description"`
	// Images by arch ("amd64", "arm64").
	Images map[string]Image `json:"images"`
	// Subdomain: the service answers at https://<subdomain>.<domain>.
	Subdomain    string   `json:"subdomain"`
	Capabilities []string `json:"capabilities"`
	Ports        []Port   `json:"ports"`
	// HTTPPort is the port the front proxies to.
	HTTPPort int `json:"http_port"`
	// AdminPort is the service's admin endpoint, where the cell provisions
	// accounts; 0: the service has none.
	AdminPort int       `json:"admin_port"`
	Volumes   []Volume  `json:"volumes"`
	Resources Resources `json:"resources"`
	// Egress: the service may reach the internet.
	Egress bool   `json:"egress"`
	Health Health `json:"health"`
	// Accounts is how accounts are provisioned: AccountsPerPeer or AccountsNone.
	Accounts string `json:"accounts"`
	// User is the UID:GID the service runs as.
	User string `json:"user"`
}

// Image is one arch's image of a service: which archive holds it and the
// digests it must have.
type Image struct {
	Ref      string `json:"ref"`      // "pic.local/files:1.0.0"
	Index    string `json:"index"`    // digest of the image index: "sha256:..."
	Manifest string `json:"manifest"` // digest of this arch's manifest
	Archive  string `json:"archive"`  // file name of the OCI archive: "files-1.0.0.oci.tar"
	Size     int64  `json:"size"`     // bytes this arch's image adds (manifest, config, compressed layers)
}

// Port is one port a service listens on.
type Port struct {
	Name  string `json:"name"`
	Port  int    `json:"port"`
	Proto string `json:"proto"` // "tcp" or "udp"
}

// Volume is persistent storage mounted into the service.
type Volume struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// Resources are the service's limits.
type Resources struct {
	MemoryBytes int64 `json:"memory_bytes"`
	CPUMillis   int   `json:"cpu_millis"` // 1000 = one core
	Pids        int64 `json:"pids"`
}

// Health is how the cell checks the service is up.
type Health struct {
	Path            string `json:"path"`
	Port            int    `json:"port"`
	TimeoutSeconds  int    `json:"timeout_seconds"`
	IntervalSeconds int    `json:"interval_seconds"`
}

// How accounts are provisioned.
const (
	AccountsPerPeer = "per-peer" // one account per member, made through the admin port
	AccountsNone    = "none"
)

// Capabilities a service may provide.
var knownCapabilities = map[string]bool{"files": true, "email": true, "calendar": true, "contacts": true}

// Arches a catalog image may be for.
var knownArches = map[string]bool{"amd64": true, "arm64": true}

// Bounds of Resources: a service gets at least enough to start a Go
// program, at most what a household box has.
const (
	MinMemoryBytes = 16 << 20
	MaxMemoryBytes = 8 << 30
	MinCPUMillis   = 10
	MaxCPUMillis   = 16000
	MinPids        = 1
	MaxPids        = 4096
)

var (
	idRE       = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)
	labelRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	versionRE  = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$`)
	digestRE   = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	refRE      = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)+:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	archiveRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\.oci\.tar$`)
	portNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,14}$`)
	userRE     = regexp.MustCompile(`^[0-9]{1,10}:[0-9]{1,10}$`)
)

// Service returns the entry with id.
func (x Index) Service(id string) (Entry, error) {
	for _, e := range x.Services {
		if e.ID == id {
			return e, nil
		}
	}
	return Entry{}, fmt.Errorf("service %q: %w", id, ErrNotFound)
}

// Verify checks sig (base64 text of an ed25519 signature over the exact
// bytes of index) against keys and only then decodes and validates index.
func Verify(index, sig []byte, keys []ed25519.PublicKey) (Index, error) {
	if len(index) > MaxIndexBytes {
		return Index{}, fmt.Errorf("%w: the index is %d bytes, at most %d", ErrInvalid, len(index), MaxIndexBytes)
	}
	raw, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(sig)))
	if err != nil || len(raw) != ed25519.SignatureSize {
		return Index{}, fmt.Errorf("%w (the signature is not the base64 of an ed25519 signature)", ErrBadSignature)
	}
	ok := false
	for _, k := range keys {
		if len(k) == ed25519.PublicKeySize && ed25519.Verify(k, index, raw) {
			ok = true
			break
		}
	}
	if !ok {
		return Index{}, ErrBadSignature
	}
	return Decode(index)
}

// Decode parses and validates index without checking who made it: only for
// tools that write an index; everything else uses Verify.
func Decode(index []byte) (Index, error) {
	if len(index) > MaxIndexBytes {
		return Index{}, fmt.Errorf("%w: the index is %d bytes, at most %d", ErrInvalid, len(index), MaxIndexBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(index))
	dec.DisallowUnknownFields()
	var x Index
	if err := dec.Decode(&x); err != nil {
		return Index{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Index{}, fmt.Errorf("%w: data after the index", ErrInvalid)
	}
	if err := x.Validate(); err != nil {
		return Index{}, err
	}
	return x, nil
}

// Sign validates x and returns its canonical bytes and their signature
// (base64 text), as Verify reads them.
func Sign(x Index, key ed25519.PrivateKey) (index, sig []byte, err error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, nil, errors.New("the signing key is not an ed25519 private key")
	}
	if err := x.Validate(); err != nil {
		return nil, nil, err
	}
	b, err := json.MarshalIndent(x, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	b = append(b, '\n')
	s := base64.StdEncoding.EncodeToString(ed25519.Sign(key, b))
	return b, []byte(s + "\n"), nil
}

// Validate checks every rule of the format.
func (x Index) Validate() error {
	if x.Version != FormatVersion {
		return fmt.Errorf("%w: format version %d, this cell reads %d", ErrInvalid, x.Version, FormatVersion)
	}
	ids := map[string]bool{}
	subs := map[string]bool{}
	for _, e := range x.Services {
		if err := e.Validate(); err != nil {
			return err
		}
		if ids[e.ID] {
			return fmt.Errorf("service %q: %w: listed twice", e.ID, ErrInvalid)
		}
		if subs[e.Subdomain] {
			return fmt.Errorf("service %q: %w: subdomain %q is another service's", e.ID, ErrInvalid, e.Subdomain)
		}
		ids[e.ID], subs[e.Subdomain] = true, true
	}
	return nil
}

// Validate checks one entry.
func (e Entry) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("service %q: %w: %s", e.ID, ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case !idRE.MatchString(e.ID):
		return bad("id must match %s", idRE)
	case strings.TrimSpace(e.Name) == "" || len(e.Name) > 64:
		return bad("name must be 1..64 bytes")
	case !versionRE.MatchString(e.Version):
		return bad("version %q must match %s", e.Version, versionRE)
	case len(e.Description) > 1024:
		return bad("description longer than 1024 bytes")
	case !labelRE.MatchString(e.Subdomain):
		return bad("subdomain %q is not a DNS label", e.Subdomain)
	case !userRE.MatchString(e.User):
		return bad("user %q must be UID:GID", e.User)
	}
	if uid, _, _ := strings.Cut(e.User, ":"); mustUint(uid) == 0 {
		return bad("user %q is root; services run unprivileged", e.User)
	}
	if err := e.validateImages(); err != nil {
		return bad("%v", err)
	}
	if len(e.Capabilities) == 0 {
		return bad("no capabilities")
	}
	caps := map[string]bool{}
	for _, c := range e.Capabilities {
		if !knownCapabilities[c] {
			return bad("unknown capability %q (known: %s)", c, strings.Join(sortedKeys(knownCapabilities), ", "))
		}
		if caps[c] {
			return bad("capability %q listed twice", c)
		}
		caps[c] = true
	}
	tcp, err := e.validatePorts()
	if err != nil {
		return bad("%v", err)
	}
	if !tcp[e.HTTPPort] {
		return bad("http_port %d is not one of its tcp ports", e.HTTPPort)
	}
	if e.AdminPort != 0 && (!tcp[e.AdminPort] || e.AdminPort == e.HTTPPort) {
		return bad("admin_port %d must be another of its tcp ports", e.AdminPort)
	}
	switch e.Accounts {
	case AccountsPerPeer:
		if e.AdminPort == 0 {
			return bad("accounts %q needs an admin_port to make them", e.Accounts)
		}
	case AccountsNone:
	default:
		return bad("accounts %q must be %q or %q", e.Accounts, AccountsPerPeer, AccountsNone)
	}
	if err := e.validateVolumes(); err != nil {
		return bad("%v", err)
	}
	r := e.Resources
	switch {
	case r.MemoryBytes < MinMemoryBytes || r.MemoryBytes > MaxMemoryBytes:
		return bad("memory_bytes %d out of %d..%d", r.MemoryBytes, MinMemoryBytes, MaxMemoryBytes)
	case r.CPUMillis < MinCPUMillis || r.CPUMillis > MaxCPUMillis:
		return bad("cpu_millis %d out of %d..%d", r.CPUMillis, MinCPUMillis, MaxCPUMillis)
	case r.Pids < MinPids || r.Pids > MaxPids:
		return bad("pids %d out of %d..%d", r.Pids, MinPids, MaxPids)
	}
	h := e.Health
	switch {
	case !strings.HasPrefix(h.Path, "/") || len(h.Path) > 256 || strings.ContainsAny(h.Path, " \t\r\n?#"):
		return bad("health path %q must be an absolute URL path", h.Path)
	case !tcp[h.Port]:
		return bad("health port %d is not one of its tcp ports", h.Port)
	case h.TimeoutSeconds < 1 || h.TimeoutSeconds > 60:
		return bad("health timeout_seconds %d out of 1..60", h.TimeoutSeconds)
	case h.IntervalSeconds < 1 || h.IntervalSeconds > 3600:
		return bad("health interval_seconds %d out of 1..3600", h.IntervalSeconds)
	case h.TimeoutSeconds > h.IntervalSeconds:
		return bad("health timeout_seconds %d longer than interval_seconds %d", h.TimeoutSeconds, h.IntervalSeconds)
	}
	return nil
}

func (e Entry) validateImages() error {
	if len(e.Images) == 0 {
		return errors.New("no images")
	}
	var first Image
	for arch, im := range e.Images {
		switch {
		case !knownArches[arch]:
			return fmt.Errorf("image for unknown arch %q", arch)
		case !refRE.MatchString(im.Ref):
			return fmt.Errorf("%s: image ref %q is not NAME:TAG", arch, im.Ref)
		case !digestRE.MatchString(im.Index):
			return fmt.Errorf("%s: index digest %q must be sha256: and 64 hex digits", arch, im.Index)
		case !digestRE.MatchString(im.Manifest):
			return fmt.Errorf("%s: manifest digest %q must be sha256: and 64 hex digits", arch, im.Manifest)
		case !archiveRE.MatchString(im.Archive) || path.Base(im.Archive) != im.Archive:
			// A file name, never a path: the cell opens it in its own folder.
			return fmt.Errorf("%s: archive %q must be a plain file name ending in .oci.tar", arch, im.Archive)
		case im.Size <= 0 || im.Size > 4<<30:
			return fmt.Errorf("%s: size %d out of 1..4 GiB", arch, im.Size)
		}
		if first.Index != "" && (im.Index != first.Index || im.Ref != first.Ref || im.Archive != first.Archive) {
			// One archive holds one image index with every arch; anything
			// else would be two images under one version.
			return fmt.Errorf("the arches name different images (index, ref or archive)")
		}
		first = im
	}
	return nil
}

// validatePorts returns the set of tcp ports.
func (e Entry) validatePorts() (map[int]bool, error) {
	if len(e.Ports) == 0 {
		return nil, errors.New("no ports")
	}
	names := map[string]bool{}
	seen := map[string]bool{}
	tcp := map[int]bool{}
	for _, p := range e.Ports {
		switch {
		case !portNameRE.MatchString(p.Name):
			return nil, fmt.Errorf("port name %q must match %s", p.Name, portNameRE)
		case p.Port < 1 || p.Port > 65535:
			return nil, fmt.Errorf("port %q: %d out of 1..65535", p.Name, p.Port)
		case p.Proto != "tcp" && p.Proto != "udp":
			return nil, fmt.Errorf("port %q: proto %q must be tcp or udp", p.Name, p.Proto)
		case names[p.Name]:
			return nil, fmt.Errorf("port name %q listed twice", p.Name)
		}
		key := strconv.Itoa(p.Port) + "/" + p.Proto
		if seen[key] {
			return nil, fmt.Errorf("port %s listed twice", key)
		}
		names[p.Name], seen[key] = true, true
		if p.Proto == "tcp" {
			tcp[p.Port] = true
		}
	}
	return tcp, nil
}

func (e Entry) validateVolumes() error {
	names := map[string]bool{}
	paths := map[string]bool{}
	for _, v := range e.Volumes {
		switch {
		case !idRE.MatchString(v.Name):
			return fmt.Errorf("volume name %q must match %s", v.Name, idRE)
		case !strings.HasPrefix(v.Path, "/") || path.Clean(v.Path) != v.Path || v.Path == "/" || len(v.Path) > 256:
			return fmt.Errorf("volume %q: path %q must be a clean absolute path other than /", v.Name, v.Path)
		case names[v.Name]:
			return fmt.Errorf("volume %q listed twice", v.Name)
		case paths[v.Path]:
			return fmt.Errorf("volume path %q listed twice", v.Path)
		}
		names[v.Name], paths[v.Path] = true, true
	}
	return nil
}

func mustUint(s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ParsePublicKey reads a public key as catalog.pub holds it: the standard
// base64 of the 32 bytes, as `cellctl keygen` writes it (and as the vault's
// trust keys accept it).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("not the base64 of an ed25519 public key")
	}
	return ed25519.PublicKey(raw), nil
}
