//go:build tools

package image

// The image builder reads files (kernel, modules, Pi firmware) out of these modules
// and compiles gokrazy's dhcp and ntp programs into every image; the blank imports
// keep them in go.mod so that `go list -m` and `go build` find them offline.
import (
	_ "github.com/gokrazy/firmware"
	_ "github.com/gokrazy/gokrazy/cmd/dhcp"
	_ "github.com/gokrazy/gokrazy/cmd/ntp"
	_ "github.com/gokrazy/kernel.amd64"
	_ "github.com/gokrazy/kernel.rpi"
)
