package httpapi

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"runtime/debug"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

// Access says who may call a route.
type Access int

const (
	Public  Access = iota // anyone, before and after setup
	Setup                 // anyone; the setup area refuses changes itself once set up
	Session               // any logged-in user
	Admin                 // role admin
	Peer                  // role peer
)

func (a Access) String() string {
	return [...]string{"public", "setup", "session", "admin", "peer"}[a]
}

// SessionCookie is the name of the session cookie.
const SessionCookie = "pic_session"

// DefaultMaxBody caps request bodies unless a route says otherwise.
const DefaultMaxBody = 1 << 20

// Time limits on reading a request's body, from the end of its headers: a body
// declared but not sent (or sent a byte a minute) never holds a connection longer.
// The long one is only for routes that take more than DefaultMaxBody (the
// update bundle); the http.Server's ReadTimeout is the outer bound of both.
const (
	DefaultBodyTime = 30 * time.Second
	LargeBodyTime   = 5 * time.Minute
)

// Route is one endpoint.
type Route struct {
	Method     string
	Path       string
	Access     Access
	Action     string // audit action; default "METHOD pattern"
	TargetType string // audit target type
	MaxBody    int64  // 0: DefaultMaxBody
	Status     int    // success status; 0: 200
	Handle     func(*Request) (any, error)
}

// Raw is a response written as it is, not as JSON.
type Raw struct {
	ContentType string
	Filename    string // when set, served as an attachment
	Body        []byte
}

// Request is what a handler gets.
type Request struct {
	*http.Request
	W         http.ResponseWriter
	Params    httprouter.Params
	Session   *storage.Session // nil when not logged in
	SessionID string
	SourceIP  string
	route     *Route
	body      io.Reader // the capped body (the request's own is left for net/http)

	// Set by handlers for the audit entry.
	TargetID string
	Details  map[string]string
	// Actor overrides the audit actor (login names the user trying).
	Actor string
	// audited is set by a handler whose success was audited in the same transaction
	// as the change itself.
	audited bool
}

// Audited tells the middleware that the handler's change and its audit entry (built
// with Server.auditEntry) were stored together, so it must not append another. Only
// successes are audited that way; refusals are still the middleware's.
func (r *Request) Audited() { r.audited = true }

// Detail adds a non-secret detail to the audit entry.
func (r *Request) Detail(k, v string) {
	if r.Details == nil {
		r.Details = map[string]string{}
	}
	r.Details[k] = v
}

// Decode reads a JSON body strictly into dst: unknown fields, keys that match a
// field only when case is ignored, and duplicate keys at any depth are refused.
func (r *Request) Decode(dst any) error {
	raw, err := r.readBody()
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return fault.Invalid("empty_body", "a JSON body is required")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
			return fault.Invalid("malformed_json", "the body is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
		case errors.As(err, &typ):
			return fault.Invalid("invalid_field", "field %q must be a %s", typ.Field, typ.Type)
		default:
			return fault.Invalid("invalid_body", "%s", strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	if dec.More() {
		return fault.Invalid("malformed_json", "the body must hold exactly one JSON value")
	}
	return strictKeys(raw, reflect.TypeOf(dst))
}

// Body reads the whole (capped) body once, checking its media type; a JSON
// object in it with a key twice is refused.
func (r *Request) Body() ([]byte, error) {
	raw, err := r.readBody()
	if err != nil {
		return nil, err
	}
	if err := strictKeys(raw, nil); err != nil && !errors.Is(err, errNotJSON) {
		return nil, err
	}
	return raw, nil
}

func (r *Request) readBody() ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return nil, fmt.Errorf("send the body as application/json, not %q: %w", ct, errMediaType)
		}
	}
	body := r.body
	if body == nil {
		body = r.Request.Body
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		return nil, bodyError(err)
	}
	return raw, nil
}

// errTruncated and errBodyTimeout are a body the client stopped sending: it
// went away mid-body, or did not finish within the route's time.
var (
	errTruncated   = fault.Invalid("truncated_body", "the request body ended before its declared length")
	errBodyTimeout = fault.Errorf(fault.ErrInvalid, "body_timeout", "the request body did not arrive in time")
)

// bodyError names a failed read of the body: too large stays as it is (413),
// a body cut short is the client's (400), not the cell's.
func bodyError(err error) error {
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return errBodyTimeout
	default:
		// io.ErrUnexpectedEOF, a reset connection, bad chunked framing.
		return fmt.Errorf("%w (%v)", errTruncated, err)
	}
}

// Server is the HTTP API.
type Server struct {
	deps   Deps
	log    *slog.Logger
	router *httprouter.Router
	routes []Route
	// setupDone caches the fact once true: it never becomes false again.
	setupDone atomic.Bool
	// SecureCookies forces the cookie's Secure flag (set behind TLS).
	SecureCookies bool
	// Space, when set, is asked before every change (login aside): an error
	// (storage.ErrNoSpace: 507) refuses it.
	Space func() error
	// UI, when set, serves the browser app (package ui) for every GET or
	// HEAD outside /api/ that no route takes: the admin and the peer portal
	// at /, through the front and on the API's own listener alike.
	UI    http.Handler
	extra []func(*Server) []Route
}

// New builds the API over deps; extra areas (added by later parts) register through
// With before Handler is first called.
func New(deps Deps) *Server {
	s := &Server{deps: deps, log: deps.Logs.Logger("api")}
	return s
}

// With adds an area's routes; it returns s for chaining.
func (s *Server) With(area func(*Server) []Route) *Server {
	s.extra = append(s.extra, area)
	return s
}

// areas lists every area of the API this firmware serves.
func (s *Server) areas() [][]Route {
	out := [][]Route{s.coreRoutes(), s.authRoutes(), s.setupRoutes(), s.auditRoutes(), s.logRoutes()}
	if s.deps.Peers != nil {
		out = append(out, s.peerRoutes(), s.peerSelfRoutes(), s.wireguardRoutes())
	}
	if s.deps.Routing != nil {
		out = append(out, s.routingRoutes())
	}
	if s.deps.DNS != nil {
		out = append(out, s.dnsRoutes())
	}
	if s.deps.Vault != nil {
		out = append(out, s.vaultRoutes())
	}
	if s.deps.Services != nil {
		out = append(out, s.servicesRoutes())
	}
	if s.deps.Network != nil {
		out = append(out, s.networkRoutes())
	}
	if s.deps.Time != nil {
		out = append(out, s.ntpRoutes())
	}
	out = append(out, s.caddyRoutes())
	for _, a := range s.extra {
		out = append(out, a(s))
	}
	return out
}

// Handler builds the router. Call it once.
func (s *Server) Handler() http.Handler {
	r := httprouter.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if s.UI != nil && (req.Method == http.MethodGet || req.Method == http.MethodHead) &&
			req.URL.Path != "/api" && !strings.HasPrefix(req.URL.Path, "/api/") {
			s.UI.ServeHTTP(w, req)
			return
		}
		refuseEarly(w, req)
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+req.URL.Path)
	})
	r.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		refuseEarly(w, req)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", req.Method+" is not allowed on "+req.URL.Path+" (allowed: "+w.Header().Get("Allow")+")")
	})
	r.PanicHandler = func(w http.ResponseWriter, req *http.Request, v any) {
		s.log.Error("handler panicked", "route", req.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		writeError(w, http.StatusInternalServerError, "internal", "the cell failed to do that; the log has the details")
	}
	for _, area := range s.areas() {
		for i := range area {
			rt := area[i]
			s.routes = append(s.routes, rt)
			r.Handle(rt.Method, rt.Path, s.serve(&rt))
		}
	}
	s.router = r
	return securityHeaders(bodyTime(r))
}

// bodyTime gives every request DefaultBodyTime to send its body; a route that
// takes large bodies extends it (serve).
func bodyTime(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			// Not every ResponseWriter has a connection (httptest's recorder).
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(DefaultBodyTime))
		}
		next.ServeHTTP(w, r)
	})
}

// refuseEarly is for an answer given without reading the body: the connection
// closes after it instead of reading what the client may still send (or never
// sends) to reuse the connection.
func refuseEarly(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength == 0 {
		return
	}
	w.Header().Set("Connection", "close")
	// net/http still closes the body after the handler, which reads a small
	// remainder: let that read end at once.
	http.NewResponseController(w).SetReadDeadline(time.Now())
}

// securityHeaders sets the headers every answer of the API carries (the front
// adds HSTS to what it proxies, and sets the same ones on its own answers).
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

type frontKey struct{}

// FrontConnContext is the http.Server ConnContext of the API's unix socket,
// which only the front (netstack/front, Caddy) can reach: requests that came
// through it are marked, and only those have their client address taken from
// X-Forwarded-For and count as TLS (the front takes plain HTTP only to
// redirect it). On every other listener the header is ignored.
func FrontConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, frontKey{}, true)
}

// viaFront reports whether r came through the front's socket.
func viaFront(r *http.Request) bool {
	v, _ := r.Context().Value(frontKey{}).(bool)
	return v
}

// RouteInfo describes a registered route (for tests and docs).
type RouteInfo struct {
	Method, Path string
	Access       Access
}

// Routes lists every registered route, sorted.
func (s *Server) Routes() []RouteInfo {
	out := make([]RouteInfo, 0, len(s.routes))
	for _, r := range s.routes {
		out = append(out, RouteInfo{r.Method, r.Path, r.Access})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Method < out[j].Method
	})
	return out
}

func mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

func sourceIP(r *http.Request) string {
	if viaFront(r) {
		// The front sets the header to its client's address alone (it
		// drops what the client sent); the last entry is the front's word.
		xff := r.Header.Values("X-Forwarded-For")
		if len(xff) > 0 {
			parts := strings.Split(xff[len(xff)-1], ",")
			if ip, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1])); err == nil {
				return ip.Unmap().String()
			}
		}
		return "front"
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// crossSite reports whether the browser says the request comes from another site.
func crossSite(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s == "cross-site" {
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return true // "null" and garbage are not our site
	}
	return !strings.EqualFold(u.Host, r.Host)
}

func (s *Server) isSetupDone() bool {
	if s.setupDone.Load() {
		return true
	}
	done, err := s.deps.Setup.SetupComplete()
	if err == nil && done {
		s.setupDone.Store(true)
	}
	return done
}

// serve wraps a route's handler in the middleware every route shares.
func (s *Server) serve(rt *Route) httprouter.Handle {
	return func(w http.ResponseWriter, hr *http.Request, ps httprouter.Params) {
		start := time.Now()
		limit := rt.MaxBody
		if limit == 0 {
			limit = DefaultMaxBody
		}
		if limit > DefaultMaxBody && hr.ContentLength != 0 {
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(LargeBodyTime))
		}
		// The capped reader is the handler's; hr.Body stays net/http's own, so
		// that after an answer it can tell what is left to read, or skip it.
		req := &Request{Request: hr, W: w, Params: ps, SourceIP: sourceIP(hr), route: rt,
			body: http.MaxBytesReader(w, hr.Body, limit)}
		v, err := s.authorize(req)
		if err != nil {
			refuseEarly(w, hr)
		} else {
			v, err = rt.Handle(req)
		}
		if errors.Is(err, errTruncated) || errors.Is(err, errBodyTimeout) {
			// What is left of the body cannot be told from a next request.
			w.Header().Set("Connection", "close")
		}
		if mutating(hr.Method) && !(req.audited && err == nil) {
			if aerr := s.audit(req, err); aerr != nil && err == nil {
				// The change was made but cannot be accounted for: say so rather
				// than answer as if all were well.
				err = fmt.Errorf("the change was made but its audit entry could not be written: %w", aerr)
			}
		}
		status := rt.Status
		if status == 0 {
			status = http.StatusOK
		}
		if err != nil {
			var code, msg string
			status, code, msg = statusOf(err)
			if status >= 500 {
				s.log.Error("request failed", "method", hr.Method, "route", rt.Path, "err", err)
			} else if errors.Is(err, errTruncated) || errors.Is(err, errBodyTimeout) {
				s.log.Debug("request body cut short", "method", hr.Method, "route", rt.Path, "err", err)
			}
			writeError(w, status, code, msg)
		} else if raw, ok := v.(Raw); ok {
			h := w.Header()
			h.Set("Content-Type", raw.ContentType)
			h.Set("Cache-Control", "no-store")
			h.Set("X-Content-Type-Options", "nosniff")
			if raw.Filename != "" {
				h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", raw.Filename))
			}
			w.WriteHeader(status)
			w.Write(raw.Body)
		} else if st, ok := v.(Stream); ok {
			s.writeStream(w, status, st)
		} else {
			writeJSON(w, status, v)
		}
		s.log.Debug("request", "method", hr.Method, "route", rt.Path, "status", status, "ms", time.Since(start).Milliseconds())
	}
}

// authorize applies the setup gate, session, role, cross-site and CSRF checks.
func (s *Server) authorize(req *Request) (any, error) {
	rt := req.route
	limit := rt.MaxBody
	if limit == 0 {
		limit = DefaultMaxBody
	}
	if req.ContentLength > limit {
		return nil, fault.Errorf(fault.ErrTooLarge, "body_too_large", "the request body is larger than the %d bytes this endpoint accepts", limit)
	}
	if mutating(req.Method) && crossSite(req.Request) {
		return nil, fault.Errorf(fault.ErrForbidden, "cross_site", "requests from another site are refused")
	}
	// A nearly full disk refuses changes before they start (507), so none
	// fails part-way; reads go on, and so does login while it can.
	if mutating(req.Method) && s.Space != nil && rt.Path != "/api/auth/login" {
		if err := s.Space(); err != nil {
			return nil, err
		}
	}
	if c, err := req.Cookie(SessionCookie); err == nil && c.Value != "" {
		req.SessionID = c.Value
		if sess, err := s.deps.Auth.Session(c.Value); err == nil {
			req.Session = &sess
		}
	}
	if rt.Access == Public || rt.Access == Setup {
		return nil, nil
	}
	if !s.isSetupDone() {
		return nil, fault.Errorf(fault.ErrSetupNeeded, "setup_required", "the cell is not set up yet: complete the wizard under /api/setup first")
	}
	if req.Session == nil {
		return nil, fault.Errorf(fault.ErrUnauthorized, "not_logged_in", "log in first: POST /api/auth/login")
	}
	switch rt.Access {
	case Admin:
		if req.Session.Role != storage.RoleAdmin {
			return nil, fault.Errorf(fault.ErrForbidden, "wrong_role", "this needs an admin account")
		}
	case Peer:
		if req.Session.Role != storage.RolePeer {
			return nil, fault.Errorf(fault.ErrForbidden, "wrong_role", "this is for a peer's own login")
		}
	}
	if rt.Access == Admin && strings.HasPrefix(rt.Path, "/api/peer/") {
		return nil, fault.Errorf(fault.ErrForbidden, "wrong_role", "this is for a peer's own login")
	}
	if err := passwordGate(req); err != nil { // auth.go
		return nil, err
	}
	if mutating(req.Method) && !csrfExempt(rt.Path) {
		tok := req.Header.Get("X-CSRF-Token")
		if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(req.Session.CSRFToken)) != 1 {
			return nil, fault.Errorf(fault.ErrForbidden, "bad_csrf_token", "missing or wrong X-CSRF-Token header: get one from GET /api/auth/csrf-token")
		}
	}
	return nil, nil
}

// csrfExempt names the changes that need no CSRF token: the wizard's (no
// session yet; the setup code guards them) and login (no session yet). Every
// other change under /api/auth/ (logout, change-password, the admin's
// reset-password) needs it like any other.
func csrfExempt(path string) bool {
	return strings.HasPrefix(path, "/api/setup/") || path == "/api/auth/login"
}

// audit writes the entry of a change or a refused attempt at one. A refusal of a
// request without a session is counted (one entry per source, action, result and
// minute: see recordRefusal), so a flood of them does not grow the database;
// every change and every refusal of a logged-in request has its own entry.
func (s *Server) audit(req *Request, err error) error {
	e := s.auditEntry(req, err)
	var aerr error
	if err != nil && req.Session == nil {
		aerr = s.recordRefusal(e)
	} else {
		_, aerr = s.deps.Audit.Record(e)
	}
	if aerr != nil {
		s.log.Error("audit append failed", "action", e.Action, "err", aerr)
		return aerr
	}
	return nil
}

// auditEntry builds the audit entry of a request with the outcome err (nil: ok).
func (s *Server) auditEntry(req *Request, err error) storage.Entry {
	rt := req.route
	e := storage.Entry{
		Actor:      "anonymous",
		SourceIP:   req.SourceIP,
		Action:     rt.Action,
		TargetType: rt.TargetType,
		TargetID:   req.TargetID,
		Result:     "ok",
		Details:    req.Details,
	}
	if e.Action == "" {
		e.Action = rt.Method + " " + rt.Path
	}
	if req.Session != nil {
		e.Actor = req.Session.Username
	} else if req.Actor != "" {
		e.Actor = req.Actor
	}
	if err != nil {
		_, code, _ := statusOf(err)
		e.Result = code
	}
	return e
}
