package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

func init() {
	register("status", "ask a running cell for its health and part states", (*CLI).status)
}

// status asks GET /health, which is public, and prints what the cell says of itself.
func (c *CLI) status(args []string) error {
	fs := c.newFlagSet("status")
	url := fs.String("url", "http://127.0.0.1:3000", "the cell's API address")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for an answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Get(strings.TrimRight(*url, "/") + "/health")
	if err != nil {
		return fmt.Errorf("cell not reachable: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, body, "", "  ") != nil {
		pretty.Write(body)
	}
	fmt.Fprintf(c.Stdout, "%s\n", pretty.Bytes())
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cell answered %s", resp.Status)
	}
	return nil
}
