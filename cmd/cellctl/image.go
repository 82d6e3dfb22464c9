package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"github.com/pic-cell/cell/firmware/image"
	"github.com/pic-cell/cell/firmware/release"
)

func init() {
	register("image", "build the firmware disk image from config.json (image build)", (*CLI).image)
}

// image: `cellctl image build [-config FILE] [-target amd64|rpi] [-version V] [-images DIR] -o FILE`.
func (c *CLI) image(args []string) error {
	if len(args) == 0 || args[0] != "build" {
		fmt.Fprintln(c.Stderr, "usage: cellctl image build [-config config.json] [-target amd64|rpi] [-version V] [-images DIR] -o FILE")
		return errUsage
	}
	fs := c.newFlagSet("image build")
	cfgPath := fs.String("config", "config.json", "the instance definition")
	target := fs.String("target", "", "board: amd64 or rpi (default: the config's)")
	version := fs.String("version", "", "firmware version (default: the config's)")
	out := fs.String("o", "cell.img", "the disk image to write")
	imagesDir := fs.String("images", "images/out", "the services' OCI archives (cellctl images build) to pack into the root")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath, *target, *version)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(c.Stderr, nil)).With("component", "image")
	// Each image gets its own setup code: the first device on the LAN must not
	// be able to make itself the cell's admin, so the wizard asks for it.
	code, err := image.NewSetupCode()
	if err != nil {
		return err
	}
	archives, err := image.ArchivesIn(*imagesDir)
	if err != nil {
		return err
	}
	log.Info("service images", "dir", *imagesDir, "archives", len(archives))
	if err := image.Build(ctx, cfg, image.Options{Log: log, SetupCode: code, Images: archives}, *out); err != nil {
		return err
	}
	fi, err := os.Stat(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "wrote %s: %s image, version %s, %d MiB\n", *out, cfg.Target, cfg.Version, fi.Size()>>20)
	fmt.Fprint(c.Stdout, layoutTable(cfg))
	fmt.Fprintf(c.Stdout, "setup code: %s\n", code)
	fmt.Fprintf(c.Stdout, "  (also on the card's boot partition as %s; the setup wizard asks for it, in the X-Setup-Code header, until setup is complete)\n", release.SetupCodeFile)
	return nil
}

// loadConfig reads the instance definition and applies command line overrides.
func loadConfig(path, target, version string) (*image.Config, error) {
	cfg, err := image.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	if target != "" {
		cfg.Target = target
	}
	if version != "" {
		cfg.Version = version
	}
	return cfg, cfg.Validate()
}

// layoutTable is the image's partition layout, as `image build` prints it:
// each partition's number, name, file system, start, size and what it holds.
func layoutTable(cfg *image.Config) string {
	l := image.LayoutFor(cfg)
	boot := "kernel, systemd-boot, kernel command line, setup code"
	if cfg.Target == "rpi" {
		boot = "kernel, Pi firmware, device trees, config.txt, kernel command line, setup code"
	}
	rows := []struct {
		n        int
		name, fs string
		holds    string
	}{
		{image.PartBoot, "boot", "FAT32", boot},
		{image.PartRootA, "root-a", "squashfs", "the system, version " + cfg.Version + " (init, cell daemon, programs)"},
		{image.PartRootB, "root-b", "squashfs", "empty; the first update writes the next system here"},
		{image.PartPerm, "perm", "ext4", "the cell's data (/perm); grows to fill the card at first boot (cellctl flash grows it already)"},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "layout (%d MiB as built; GPT, 1 MiB aligned):\n", l.DiskSize>>20)
	fmt.Fprintf(&b, "  %-2s %-7s %-9s %10s %10s  %s\n", "#", "name", "fs", "start", "size", "holds")
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-2d %-7s %-9s %6d MiB %6d MiB  %s\n", r.n, r.name, r.fs, l.Start[r.n]>>20, l.Size[r.n]>>20, r.holds)
	}
	return b.String()
}
