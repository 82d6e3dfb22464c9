// Package release describes the firmware that a root file system carries: its
// version and target, the update key it trusts, and the programs its init runs. The
// image builder writes it to /cell/release.json in every root; the init, the updater
// and the daemon's /api/system/info read it back. It is the one contract between the
// build host and the device, so it lives apart from both.
package release

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Path is where a root file system carries its Release.
const Path = "/etc/cell/release.json"

// The setup code's way from the build host to the daemon: `cellctl image build`
// writes it to the boot partition as SetupCodeFile (where the operator can read
// it off the card); the boot partition is not mounted on the device, so the
// init copies the file at every boot to SetupCodePath (on the tmpfs /run, mode
// 0600), which the image's cell daemon reads (-setup-code-file).
const (
	SetupCodeFile = "setup-code.txt"
	SetupCodePath = "/run/cell/setup-code"
)

// Release is the content of Path.
type Release struct {
	Version   string    `json:"version"`
	Target    string    `json:"target"`
	Hostname  string    `json:"hostname"`
	Built     time.Time `json:"built"`
	PublicKey string    `json:"update_public_key,omitempty"` // base64 ed25519
	// HealthURL and TrialTimeout drive the trial boot of a freshly updated root.
	HealthURL    string        `json:"health_url"`
	TrialTimeout time.Duration `json:"trial_timeout"`
	Services     []Service     `json:"services"`
}

// Service is one supervised program.
type Service struct {
	Path string   `json:"path"` // absolute path in the root
	Args []string `json:"args,omitempty"`
	Env  []string `json:"env,omitempty"`
}

// Load reads a Release from path.
func Load(path string) (*Release, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Release
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// CompareVersions compares dotted numeric versions ("1.10.0" > "1.9.3"); missing
// components count as zero. It returns an error for anything else, so that a typo
// in a manifest is a refusal rather than a silent downgrade.
func CompareVersions(a, b string) (int, error) {
	pa, err := parseVersion(a)
	if err != nil {
		return 0, err
	}
	pb, err := parseVersion(b)
	if err != nil {
		return 0, err
	}
	for len(pa) < len(pb) {
		pa = append(pa, 0)
	}
	for len(pb) < len(pa) {
		pb = append(pb, 0)
	}
	for i := range pa {
		switch {
		case pa[i] < pb[i]:
			return -1, nil
		case pa[i] > pb[i]:
			return 1, nil
		}
	}
	return 0, nil
}

func parseVersion(v string) ([]uint64, error) {
	if v == "" {
		return nil, fmt.Errorf("empty version")
	}
	var out []uint64
	for _, f := range strings.Split(v, ".") {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("version %q: not dotted numbers", v)
		}
		out = append(out, n)
	}
	return out, nil
}
