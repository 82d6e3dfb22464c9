package image

import (
	"strings"
	"testing"

	"github.com/pic-cell/cell/firmware/release"
)

// TestConfigCellWGMode: an image whose cell would run WireGuard in userspace
// is refused with a reason a person can act on; other packages may take any
// args.
func TestConfigCellWGMode(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  []string
		want string // "" = accepted; else a part of the error
	}{
		{"tun", []string{"-data", "/perm/cell", "-listen", "0.0.0.0:80", "-wg-mode", "tun"}, nil, ""},
		{"tun with =", []string{"-wg-mode=tun", "-listen", "0.0.0.0:80"}, nil, ""},
		{"tun with --", []string{"--wg-mode", "tun"}, nil, ""},
		{"tun from env", []string{"-listen", "0.0.0.0:80"}, []string{"CELL_WG_MODE=tun"}, ""},
		{"args win over env", []string{"-wg-mode", "tun"}, []string{"CELL_WG_MODE=netstack"}, ""},
		{"last flag wins", []string{"-wg-mode", "netstack", "-wg-mode", "tun"}, nil, ""},
		{"no mode", []string{"-data", "/perm/cell", "-listen", "0.0.0.0:80"}, nil,
			`runs WireGuard in userspace (no -wg-mode in its args, so the default -wg-mode netstack): on the appliance peers would complete the handshake and then reach nothing; add "-wg-mode", "tun" to its args`},
		{"no args", nil, nil, "the default -wg-mode netstack"},
		{"netstack", []string{"-wg-mode", "netstack"}, nil, "userspace (-wg-mode netstack)"},
		{"netstack with =", []string{"-wg-mode=netstack"}, nil, "userspace (-wg-mode netstack)"},
		{"netstack from env", nil, []string{"CELL_WG_MODE=netstack"}, "userspace (CELL_WG_MODE=netstack in its env)"},
		{"env overridden by args", []string{"-wg-mode", "netstack"}, []string{"CELL_WG_MODE=tun"}, "(-wg-mode netstack)"},
		{"last flag wins (netstack)", []string{"-wg-mode", "tun", "-wg-mode", "netstack"}, nil, "(-wg-mode netstack)"},
		// The flag package stops at the first non-flag: a -wg-mode after it
		// is an argument, not a flag.
		{"after a non-flag", []string{"-listen", "0.0.0.0:80", "extra", "-wg-mode", "tun"}, nil, "the default -wg-mode netstack"},
		{"after --", []string{"--", "-wg-mode", "tun"}, nil, "the default -wg-mode netstack"},
		{"unknown mode", []string{"-wg-mode", "kernel"}, nil, `WireGuard mode "kernel" (-wg-mode kernel) is not one the cell knows`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig("amd64")
			// Every case reads the image's setup code (checked below).
			args := append([]string{"-setup-code-file", release.SetupCodePath}, tt.args...)
			c.Packages = append(c.Packages, Package{Path: CellPackage, Args: args, Env: tt.env})
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// Only the cell's daemon is held to it.
	c := testConfig("amd64")
	c.Packages[0].Args = []string{"-wg-mode", "netstack"}
	if err := c.Validate(); err != nil {
		t.Errorf("a package other than the cell was checked for -wg-mode: %v", err)
	}
}

// TestConfigCellSetupCodeFile: an image whose cell would not read the setup
// code the image carries (the code cellctl prints) is refused, naming the flag
// to add.
func TestConfigCellSetupCodeFile(t *testing.T) {
	tun := []string{"-wg-mode", "tun"}
	tests := []struct {
		name string
		args []string
		env  []string
		want string // "" = accepted; else a part of the error
	}{
		{"flag", append([]string{"-setup-code-file", release.SetupCodePath}, tun...), nil, ""},
		{"flag with =", append([]string{"--setup-code-file=" + release.SetupCodePath}, tun...), nil, ""},
		{"from env", tun, []string{"CELL_SETUP_CODE_FILE=" + release.SetupCodePath}, ""},
		{"last flag wins", append([]string{"-setup-code-file", "/perm/x", "-setup-code-file", release.SetupCodePath}, tun...), nil, ""},
		{"none", tun, nil, `(no -setup-code-file in its args); add "-setup-code-file", "/run/cell/setup-code" to its args`},
		{"another file", append([]string{"-setup-code-file", "/perm/cell/setup-code"}, tun...), nil, "(-setup-code-file /perm/cell/setup-code)"},
		{"another file from env", tun, []string{"CELL_SETUP_CODE_FILE=/tmp/code"}, "(CELL_SETUP_CODE_FILE=/tmp/code in its env)"},
		{"args win over env", append([]string{"-setup-code-file", "/tmp/code"}, tun...), []string{"CELL_SETUP_CODE_FILE=" + release.SetupCodePath}, "(-setup-code-file /tmp/code)"},
		{"after a non-flag", append(append([]string{}, tun...), "extra", "-setup-code-file", release.SetupCodePath), nil, "no -setup-code-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig("amd64")
			c.Packages = append(c.Packages, Package{Path: CellPackage, Args: tt.args, Env: tt.env})
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "setup code") {
				t.Fatalf("Validate: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestDefaultHealthURL: a config without health_url has the trial boot ask the
// API on loopback, where config.json runs it behind the front (the front's
// port 80 only redirects).
func TestDefaultHealthURL(t *testing.T) {
	if got := (Settings{}).healthURL(); got != "http://127.0.0.1:3000/health" {
		t.Errorf("default health URL %q, want the API's http://127.0.0.1:3000/health", got)
	}
	if got := (Settings{HealthURL: "http://127.0.0.1:9/health"}).healthURL(); got != "http://127.0.0.1:9/health" {
		t.Errorf("health URL %q, want the config's", got)
	}
}
