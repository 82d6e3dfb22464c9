package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pic-cell/cell/httpapi/client"
)

func init() {
	register("status", "ask a running cell for its health and part states", (*CLI).status)
}

// status asks GET /health, which is public, and prints what the cell says of itself.
func (c *CLI) status(args []string) error {
	fs := c.newFlagSet("status")
	device := fs.String("device", "http://127.0.0.1:3000", "the cell: https://CELL (its CA kept by cellctl trust), or http:// on this machine")
	fs.StringVar(device, "url", "http://127.0.0.1:3000", "the same as -device")
	var cf cellFlags
	cf.register(fs)
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for an answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cl, err := c.dial(*device, cf, *timeout)
	if err != nil {
		return err
	}
	// The answer as the cell wrote it, not as this build's types know it.
	var body []byte
	err = cl.explain(cl.Do(context.Background(), "GET", "/health", nil, &body))
	var apiErr *client.Error
	var refused *trustError
	if errors.As(err, &apiErr) {
		return fmt.Errorf("cell answered %d: %w", apiErr.Status, err)
	}
	if err != nil && errors.As(err, &refused) {
		return err
	}
	if err != nil {
		return fmt.Errorf("cell not reachable: %w", err)
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, body, "", "  ") != nil {
		pretty.Write(body)
	}
	fmt.Fprintf(c.Stdout, "%s\n", pretty.Bytes())
	return nil
}
