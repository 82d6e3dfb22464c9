package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

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
