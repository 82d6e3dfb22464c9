// Package accounts is the cell's client of a service container's admin
// endpoint: the accounts protocol the "files" service speaks (see
// images/files), which mail and calendar may speak later. It lists, creates
// or updates, and deletes a service's accounts, and checks a service's
// health. Errors never contain a password or the admin token.
package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

var (
	// ErrNotFound is returned by Delete for an account the service does not have.
	ErrNotFound = errors.New("no such account")
	// ErrUnauthorized is returned when the service refuses the admin token.
	ErrUnauthorized = errors.New("admin token refused")
	// ErrRejected is returned when the service refuses a request as invalid
	// (a bad username, a bad body).
	ErrRejected = errors.New("request rejected")
	// ErrUnavailable is returned for any other failure of the service.
	ErrUnavailable = errors.New("service unavailable")
)

// Client talks to one service's admin endpoint.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// Account is one account of a service.
type Account struct {
	Username   string
	QuotaBytes int64 // 0 = unlimited
	UsageBytes int64
}

// New returns a client of the admin endpoint at baseURL (like
// "http://10.77.250.2:8081") using the bearer token; hc nil is
// http.DefaultClient.
func New(baseURL string, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, hc: hc}
}

// maxResponse caps what the client reads of an answer.
const maxResponse = 4 << 20

type wireAccount struct {
	Username   string `json:"username"`
	QuotaBytes int64  `json:"quota_bytes"`
	UsageBytes int64  `json:"usage_bytes"`
}

// List returns the service's accounts.
func (c *Client) List(ctx context.Context) ([]Account, error) {
	var body struct {
		Accounts []wireAccount `json:"accounts"`
	}
	if err := c.do(ctx, http.MethodGet, "/admin/v1/accounts", nil, http.StatusOK, &body); err != nil {
		return nil, fmt.Errorf("listing accounts: %w", err)
	}
	out := make([]Account, 0, len(body.Accounts))
	for _, a := range body.Accounts {
		out = append(out, Account{Username: a.Username, QuotaBytes: a.QuotaBytes, UsageBytes: a.UsageBytes})
	}
	return out, nil
}

// Put creates the account or updates its password and quota; it is
// idempotent. An empty password keeps an existing account's.
func (c *Client) Put(ctx context.Context, username, password string, quotaBytes int64) error {
	if username == "" {
		return fmt.Errorf("account with no name: %w", ErrRejected)
	}
	b, err := json.Marshal(struct {
		Password   string `json:"password"`
		QuotaBytes int64  `json:"quota_bytes"`
	}{password, quotaBytes})
	if err != nil {
		return fmt.Errorf("account %q: %w", username, err)
	}
	if err := c.do(ctx, http.MethodPut, "/admin/v1/accounts/"+url.PathEscape(username), b, http.StatusNoContent, nil); err != nil {
		return fmt.Errorf("account %q: %w", username, err)
	}
	return nil
}

// Delete removes the account (the service keeps its files aside); ErrNotFound
// when it has no such account.
func (c *Client) Delete(ctx context.Context, username string) error {
	if username == "" {
		// Would address the collection, not an account.
		return fmt.Errorf("deleting an account with no name: %w", ErrRejected)
	}
	if err := c.do(ctx, http.MethodDelete, "/admin/v1/accounts/"+url.PathEscape(username), nil, http.StatusNoContent, nil); err != nil {
		return fmt.Errorf("deleting account %q: %w", username, err)
	}
	return nil
}

// Health checks GET serviceURL+"/healthz" (the service's own port, no
// token) answers 200.
func (c *Client) Health(ctx context.Context, serviceURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(serviceURL, "/")+"/healthz", nil)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("health: %w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: status %d: %w", resp.StatusCode, ErrUnavailable)
	}
	return nil
}

// do sends one admin request and decodes a want-status answer into out.
// The request body (it may hold a password) never reaches an error: only the
// method, path, status and the service's own error message do.
func (c *Client) do(ctx context.Context, method, path string, body []byte, want int, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// A *url.Error names the URL, which holds neither secret.
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w: %w", method, path, ErrUnavailable, err)
	}
	if resp.StatusCode == want {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: answer: %w: %w", method, path, ErrUnavailable, err)
		}
		return nil
	}
	var sentinel error
	switch resp.StatusCode {
	case http.StatusNotFound:
		sentinel = ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		sentinel = ErrUnauthorized
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		sentinel = ErrRejected
	default:
		sentinel = ErrUnavailable
	}
	msg := serviceMessage(b)
	if msg != "" {
		return fmt.Errorf("%s %s: status %d: %s: %w", method, path, resp.StatusCode, msg, sentinel)
	}
	return fmt.Errorf("%s %s: status %d: %w", method, path, resp.StatusCode, sentinel)
}

// serviceMessage is the service's {"error": ...}, cut short and scrubbed of
// anything but printable text.
func serviceMessage(b []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) != nil {
		return ""
	}
	msg := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, e.Error)
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return msg
}
