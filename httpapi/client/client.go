package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"time"
)

// SessionCookie is the name of the cell's session cookie.
const SessionCookie = "pic_session"

// CSRFHeader carries the session's CSRF token on every change.
const CSRFHeader = "X-CSRF-Token"

// SetupCodeHeader carries the cell's one-time setup code on every change of the
// setup wizard (POST /api/setup/step and /api/setup/complete).
const SetupCodeHeader = "X-Setup-Code"

// DefaultTimeout bounds every call but PushUpdate unless WithTimeout says otherwise.
const DefaultTimeout = 30 * time.Second

const (
	maxResponse  = 256 << 20 // a body read into memory
	maxErrorBody = 64 << 10  // an error body
)

// Client is a session with one cell. Make it with New.
type Client struct {
	base    string
	hc      *http.Client
	timeout time.Duration
	tls     *tls.Config       // WithTLSConfig, WithRootCAs, WithPinnedCA; applied last
	pin     *x509.Certificate // WithPinnedCA
	err     error             // an option that could not be applied

	mu        sync.RWMutex
	csrf      string
	setupCode string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the Client send through a copy of hc (its transport,
// redirect policy and timeout). A jar is added to the copy if hc has none.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		cp := *hc
		if cp.Jar == nil {
			cp.Jar = c.hc.Jar
		}
		c.hc = &cp
	}
}

// WithTransport sets the RoundTripper (for example an *http.Transport with its
// own DialContext, to reach a cell inside a network namespace).
func WithTransport(rt http.RoundTripper) Option {
	return func(c *Client) { c.hc.Transport = rt }
}

// WithTimeout bounds each call (the request and reading its answer) to d; 0 means
// no bound but the context's. PushUpdate is bounded only by its context, since
// its length depends on the bundle and the link. The default is DefaultTimeout.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) { c.timeout = d }
}

// New returns a client of the cell whose API is at baseURL (scheme, host and
// port, such as "http://127.0.0.1:3000"; a trailing slash is ignored). It is not
// logged in.
func New(baseURL string, opts ...Option) *Client {
	jar, _ := cookiejar.New(nil) // never fails without options
	c := &Client{
		base:    strings.TrimRight(baseURL, "/"),
		hc:      &http.Client{Jar: jar},
		timeout: DefaultTimeout,
	}
	for _, o := range opts {
		o(c)
	}
	c.applyTLS()
	return c
}

// BaseURL is the address the Client was made with, without a trailing slash.
func (c *Client) BaseURL() string { return c.base }

// String names the cell; it never shows the session's token.
func (c *Client) String() string { return "client.Client(" + c.base + ")" }

// GoString is String, so that %#v does not print the CSRF token either.
func (c *Client) GoString() string { return c.String() }

// UseSetupCode makes the Client send code as X-Setup-Code on the setup wizard's
// changes (SetupStep, CompleteSetup, and Do to /api/setup/), which the cell
// refuses without it until setup is complete. The code is the one `cellctl image
// build` printed (setup-code.txt on the card's boot partition), or DATA/setup-code
// of a cell run from source. "" sends none.
func (c *Client) UseSetupCode(code string) {
	c.mu.Lock()
	c.setupCode = code
	c.mu.Unlock()
}

func (c *Client) setupCodeFor(method, path string) string {
	if !mutating(method) || !strings.HasPrefix(path, "/api/setup/") {
		return ""
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.setupCode
}

func (c *Client) token() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.csrf
}

func (c *Client) setToken(t string) {
	c.mu.Lock()
	c.csrf = t
	c.mu.Unlock()
}

// Error is an answer of the cell outside 2xx.
type Error struct {
	Status  int    // the HTTP status
	Code    string // the API's error code, such as "peer_not_found"; "" if the body had none
	Message string // the API's message, meant for a person
}

// Error returns the message.
func (e *Error) Error() string {
	if e.Message != "" {
		return e.Message
	}
	if e.Code != "" {
		return e.Code
	}
	return fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status))
}

// IsCode reports whether err is (or wraps) a *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// IsStatus reports whether err is (or wraps) a *Error with the given HTTP status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// Upload is a request body Do sends as it is, under its own media type (Do sends
// any other io.Reader as JSON).
type Upload struct {
	Body        io.Reader
	ContentType string // "": application/octet-stream
	Size        int64  // bytes, sent as Content-Length; 0 or less: unknown
}

// Response is what Do fills when out is a *Response: the whole successful answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends method to path (relative to the base URL, with any query) and decodes
// a successful answer into out. It is the escape hatch for requests the typed
// methods do not make; the session cookie and, on a change, the CSRF token are
// sent as for them, and an answer outside 2xx is a *Error.
//
// in is the body: nil for none; a string, []byte, json.RawMessage or io.Reader
// sent as it is as application/json; an Upload sent as it is under its own type;
// anything else encoded as JSON.
//
// out receives the answer: nil discards it; a *[]byte or *string gets the body as
// it is; a *Response gets status, headers and body; anything else is decoded from
// JSON.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	return c.call(ctx, method, path, in, 0, out)
}

// call is Do that also checks the success status want (0: any 2xx).
func (c *Client) call(ctx context.Context, method, path string, in any, want int, out any) error {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	return c.send(ctx, method, path, in, want, out)
}

func (c *Client) send(ctx context.Context, method, path string, in any, want int, out any) error {
	if c.err != nil {
		return c.err
	}
	body, ctype, size, err := encodeBody(in)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if size > 0 {
		req.ContentLength = size
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	if mutating(method) {
		if t := c.token(); t != "" {
			req.Header.Set(CSRFHeader, t)
		}
	}
	if code := c.setupCodeFor(method, path); code != "" {
		req.Header.Set(SetupCodeHeader, code)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.tlsError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readError(resp)
	}
	if want != 0 && resp.StatusCode != want {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return fmt.Errorf("%s %s: the cell answered %d, the API says %d", method, path, resp.StatusCode, want)
	}
	return decode(resp, out)
}

func mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// encodeBody returns the body, its media type and its size (0: unknown or none).
func encodeBody(in any) (io.Reader, string, int64, error) {
	const js = "application/json"
	switch v := in.(type) {
	case nil:
		return nil, "", 0, nil
	case Upload:
		return uploadBody(&v)
	case *Upload:
		return uploadBody(v)
	case string:
		return strings.NewReader(v), js, int64(len(v)), nil
	case []byte:
		return bytes.NewReader(v), js, int64(len(v)), nil
	case json.RawMessage:
		return bytes.NewReader(v), js, int64(len(v)), nil
	case io.Reader:
		return v, js, 0, nil
	}
	raw, err := json.Marshal(in)
	if err != nil {
		return nil, "", 0, err
	}
	return bytes.NewReader(raw), js, int64(len(raw)), nil
}

func uploadBody(u *Upload) (io.Reader, string, int64, error) {
	ct := u.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	return u.Body, ct, u.Size, nil
}

// readError makes a *Error of an answer outside 2xx.
func readError(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Status: resp.StatusCode}
	var body struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(raw, &body) == nil && len(body.Error) > 0 {
		var api struct{ Code, Message string }
		var text string
		switch {
		case json.Unmarshal(body.Error, &api) == nil && (api.Code != "" || api.Message != ""):
			e.Code, e.Message = api.Code, api.Message
			return e
		case json.Unmarshal(body.Error, &text) == nil && text != "":
			e.Message = text // {"error": "..."}: not the cell's shape, but plain enough
			return e
		}
	}
	if t := strings.TrimSpace(string(raw)); t != "" {
		e.Message = t
	} else {
		e.Message = resp.Status
	}
	return e
}

func decode(resp *http.Response, out any) error {
	body := io.LimitReader(resp.Body, maxResponse)
	switch o := out.(type) {
	case nil:
		_, err := io.Copy(io.Discard, body)
		return err
	case *[]byte:
		b, err := io.ReadAll(body)
		*o = b
		return err
	case *string:
		b, err := io.ReadAll(body)
		*o = string(b)
		return err
	case *Response:
		b, err := io.ReadAll(body)
		*o = Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
		return err
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: the answer does not decode: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	return nil
}
