// Command cell-init is the init (PID 1) of the cell's firmware image, what
// gokrazy's packer would otherwise generate: gokrazy.Boot, then the programs of
// /etc/cell/release.json supervised by gokrazy.
package main

import (
	"log"
	"os/exec"

	"github.com/gokrazy/gokrazy"

	"github.com/pic-cell/cell/firmware/release"
)

func main() {
	if err := run(); err != nil {
		// PID 1 exiting panics the kernel, and panic=10 on the command line
		// turns that into a reboot.
		log.Fatal(err)
	}
}

func run() error {
	if err := gokrazy.Boot(""); err != nil {
		return err
	}
	rel, err := release.Load(release.Path)
	if err != nil {
		return err
	}
	var services []*gokrazy.Service
	for _, s := range rel.Services {
		cmd := exec.Command(s.Path, s.Args...)
		cmd.Env = append(cmd.Environ(), s.Env...)
		services = append(services, gokrazy.NewService(cmd))
	}
	if err := gokrazy.SuperviseServices(services); err != nil {
		return err
	}
	select {}
}
