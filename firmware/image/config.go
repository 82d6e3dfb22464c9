package image

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/pic-cell/cell/firmware/release"
)

// CellPackage is the cell's daemon. Named here as a string: firmware imports
// nothing of the module outside firmware/.
const CellPackage = "github.com/pic-cell/cell/cmd/cell"

// Config is an instance definition, read from config.json at the repository root,
// in the spirit of gokrazy's instance config.json.
type Config struct {
	// Hostname is the device's host name. Required.
	Hostname string `json:"hostname"`
	// Target is the board: "amd64" (UEFI PCs, QEMU) or "rpi" (Raspberry Pi 4/5).
	// Required; `cellctl image build -target` overrides it.
	Target string `json:"target"`
	// Version is the firmware version written into the root file system and into
	// update manifests (dotted numbers, e.g. "1.4.0"). Required; -version overrides it.
	Version string `json:"version"`
	// Packages are the programs the image runs, each supervised by init. Required:
	// at least the cell daemon.
	Packages []Package `json:"packages"`
	// UpdatePublicKey is the base64 ed25519 public key that update bundles must be
	// signed with (`cellctl keygen` prints it). Without it the device refuses every
	// update.
	UpdatePublicKey string `json:"update_public_key"`
	// Settings are the knobs with safe defaults.
	Settings Settings `json:"settings"`
}

// Package is one Go program built into the image and supervised by init.
type Package struct {
	// Path is the Go package to build (an import path inside this module or a
	// module in go.mod). Required.
	Path string `json:"path"`
	// Args are the program's command line flags. Optional.
	Args []string `json:"args,omitempty"`
	// Env are extra KEY=VALUE environment variables. Optional.
	Env []string `json:"env,omitempty"`
}

// Settings are optional; zero values mean the documented default.
type Settings struct {
	// HealthURL is what the trial boot polls on the device to decide whether a new
	// root is healthy (default http://127.0.0.1:3000/health: the cell's API on
	// loopback, as config.json runs it behind the front, which serves only HTTPS).
	HealthURL string `json:"health_url,omitempty"`
	// TrialTimeout bounds how long a new root may take to become healthy before the
	// device reboots into the old one (default 180s; QEMU without KVM needs ~60s).
	TrialTimeout Duration `json:"trial_timeout,omitempty"`
	// BootMiB, RootMiB and PermMiB size the partitions (defaults 100, 256, 256).
	// Root must hold every future root: it cannot grow after flashing.
	BootMiB int `json:"boot_mib,omitempty"`
	RootMiB int `json:"root_mib,omitempty"`
	PermMiB int `json:"perm_mib,omitempty"`
	// Dhcp and Ntp choose whether gokrazy's DHCP client and NTP client run
	// (default true; tests switch them off to measure the bare init).
	Dhcp *bool `json:"dhcp,omitempty"`
	Ntp  *bool `json:"ntp,omitempty"`
	// Containerd chooses whether the image carries containerd, its runc shim
	// and runc (containerd.go), containerd supervised by init (default true:
	// the cell's services run on it; tests of the bare init switch it off).
	Containerd *bool `json:"containerd,omitempty"`
	// SerialConsole adds console=ttyS0 to the kernel command line (default true on
	// amd64, where QEMU's serial port is the only console tests can read).
	SerialConsole *bool `json:"serial_console,omitempty"`
}

// Duration is a time.Duration that reads and writes as "90s" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Defaults of Settings.
const (
	DefaultHealthURL    = "http://127.0.0.1:3000/health"
	DefaultTrialTimeout = 180 * time.Second
	defaultBootMiB      = 100
	// The Pi's boot partition holds the firmware and, for kernel updates,
	// up to three kernels with their device trees and overlays (about
	// 48 MiB each); amd64's kernel is about 17 MiB.
	defaultRpiBootMiB = 256
	defaultRootMiB    = 256
	defaultPermMiB    = 256
)

var (
	hostnameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	versionRe  = regexp.MustCompile(`^[0-9]+(\.[0-9]+){0,3}$`)
)

// LoadConfig reads and validates a config.json.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// Validate reports the first thing that would make an unusable image.
func (c *Config) Validate() error {
	if !hostnameRe.MatchString(c.Hostname) {
		return fmt.Errorf("config: hostname %q is not a valid host name", c.Hostname)
	}
	if _, err := TargetByName(c.Target); err != nil {
		return err
	}
	if !versionRe.MatchString(c.Version) {
		return fmt.Errorf("config: version %q is not dotted numbers like 1.2.0", c.Version)
	}
	if len(c.Packages) == 0 {
		return fmt.Errorf("config: no packages: the image would run nothing")
	}
	for _, p := range c.Packages {
		if p.Path == "" {
			return fmt.Errorf("config: a package without a path")
		}
		if p.Path == CellPackage {
			if err := checkWGMode(p); err != nil {
				return err
			}
			if err := checkSetupCodeFile(p); err != nil {
				return err
			}
		}
	}
	if c.UpdatePublicKey != "" {
		if _, err := c.PublicKey(); err != nil {
			return err
		}
	}
	return nil
}

// checkWGMode refuses a cell package that would run WireGuard in userspace
// (-wg-mode netstack, the daemon's default): on a developer's machine that
// leaves the host alone, but on the appliance nothing is forwarded, so a phone
// completes the handshake and then reaches nothing. The image needs tun mode:
// the kernel's TUN device, nftables NAT and routes.
func checkWGMode(p Package) error {
	mode, from := wgMode(p)
	switch mode {
	case "tun":
		return nil
	case "netstack":
		return fmt.Errorf("config: the cell package runs WireGuard in userspace (%s): on the appliance peers "+
			"would complete the handshake and then reach nothing; add \"-wg-mode\", \"tun\" to its args", from)
	default:
		return fmt.Errorf("config: the cell package's WireGuard mode %q (%s) is not one the cell knows; "+
			"the appliance needs \"-wg-mode\", \"tun\" in its args", mode, from)
	}
}

// wgMode is the -wg-mode the daemon would run with, and where it comes from
// (see flagOf), else the daemon's default, netstack.
func wgMode(p Package) (mode, from string) {
	if mode, from, ok := flagOf(p, "wg-mode"); ok {
		return mode, from
	}
	return "netstack", "no -wg-mode in its args, so the default -wg-mode netstack"
}

// flagOf is the value the daemon would read for flag name, and where it comes
// from: its args as Go's flag package reads them (every cell flag takes a
// value; the last one wins; parsing stops at the first non-flag or "--"), else
// CELL_<NAME> in its env (upper case, '-' as '_'); ok is false when neither sets it.
func flagOf(p Package, name string) (val, from string, ok bool) {
	for i := 0; i < len(p.Args); i++ {
		a := p.Args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			break
		}
		n, v, hasVal := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		if !hasVal && i+1 < len(p.Args) {
			i++
			v, hasVal = p.Args[i], true
		}
		if n == name && hasVal {
			val, from, ok = v, "-"+name+" "+v, true
		}
	}
	if ok {
		return val, from, true
	}
	env := "CELL_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + "="
	for _, e := range p.Env {
		if v, found := strings.CutPrefix(e, env); found {
			val, from, ok = v, env+v+" in its env", true
		}
	}
	return val, from, ok
}

// checkSetupCodeFile refuses a cell package that would not read the setup code
// the image carries: its daemon would make a code of its own, and the one
// `cellctl image build` printed would open nothing.
func checkSetupCodeFile(p Package) error {
	file, from, ok := flagOf(p, "setup-code-file")
	if ok && file == release.SetupCodePath {
		return nil
	}
	where := "no -setup-code-file in its args"
	if ok {
		where = from
	}
	return fmt.Errorf("config: the cell package would not read the setup code the image carries (%s); "+
		"add \"-setup-code-file\", %q to its args", where, release.SetupCodePath)
}

// PublicKey decodes UpdatePublicKey.
func (c *Config) PublicKey() (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(c.UpdatePublicKey)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("config: update_public_key is not a base64 ed25519 public key")
	}
	return ed25519.PublicKey(b), nil
}

func (s Settings) healthURL() string {
	if s.HealthURL == "" {
		return DefaultHealthURL
	}
	return s.HealthURL
}

func (s Settings) trialTimeout() time.Duration {
	if s.TrialTimeout == 0 {
		return DefaultTrialTimeout
	}
	return time.Duration(s.TrialTimeout)
}

// bootMiB is the boot partition's size for cfg: its setting, else the
// target's default.
func bootMiB(cfg *Config) int {
	if cfg.Target == "rpi" {
		return orDefault(cfg.Settings.BootMiB, defaultRpiBootMiB)
	}
	return orDefault(cfg.Settings.BootMiB, defaultBootMiB)
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func orTrue(b *bool) bool { return b == nil || *b }
