package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/pic-cell/cell/firmware/bundle"
	"github.com/pic-cell/cell/firmware/image"
)

func init() {
	register("keygen", "make the ed25519 key pair that signs firmware updates", (*CLI).keygen)
}

// keygen writes NAME.key (private, 0600) and NAME.pub, and puts the public key
// into config.json so that the next image trusts it.
func (c *CLI) keygen(args []string) error {
	fs := c.newFlagSet("keygen")
	name := fs.String("o", "cell-update", "file name stem: writes STEM.key and STEM.pub")
	cfgPath := fs.String("config", "config.json", "the instance definition to store the public key in (empty: do not)")
	force := fs.Bool("force", false, "replace an existing key pair (images built with the old key will refuse updates signed by the new one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !*force {
		if _, err := os.Stat(*name + ".key"); err == nil {
			return fmt.Errorf("%s.key exists; -force replaces it", *name)
		}
	}
	priv, pub, err := bundle.GenerateKey()
	if err != nil {
		return err
	}
	if err := os.WriteFile(*name+".key", priv, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(*name+".pub", []byte(pub+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "wrote %s.key (keep it secret) and %s.pub\npublic key: %s\n", *name, *name, pub)
	if *cfgPath == "" {
		return nil
	}
	cfg, err := image.LoadConfig(*cfgPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	cfg.UpdatePublicKey = pub
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*cfgPath, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "stored the public key in %s\n", *cfgPath)
	return nil
}
