package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/pic-cell/cell/cell/accounts"
	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/storage"
)

func (s *Server) authRoutes() []Route {
	return []Route{
		{Method: "POST", Path: "/api/auth/login", Access: Public, Action: "auth.login", TargetType: "user", Handle: s.login},
		{Method: "POST", Path: "/api/auth/logout", Access: Session, Action: "auth.logout", TargetType: "user", Handle: s.logout},
		{Method: "GET", Path: "/api/auth/me", Access: Session, Handle: s.me},
		{Method: "GET", Path: "/api/auth/csrf-token", Access: Session, Handle: s.csrfToken},
		{Method: "POST", Path: "/api/auth/change-password", Access: Session, Action: "auth.change_password", TargetType: "user", Handle: s.changePassword},
		{Method: "POST", Path: "/api/auth/admin/reset-password", Access: Admin, Action: "auth.reset_password", TargetType: "user", Handle: s.resetPassword},
		{Method: "GET", Path: "/api/auth/users", Access: Admin, Handle: s.users},
	}
}

func (s *Server) setCookie(req *Request, value string, expires time.Time) {
	secure := s.SecureCookies || req.TLS != nil || viaFront(req.Request)
	c := &http.Cookie{
		Name: SessionCookie, Value: value, Path: "/", HttpOnly: true, Secure: secure,
		SameSite: http.SameSiteStrictMode, Expires: expires,
	}
	if value == "" {
		c.MaxAge = -1
	}
	http.SetCookie(req.W, c)
}

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type userResponse struct {
	Username string `json:"username"`
	Role     string `json:"role"`
	// MustChangePassword: the session began with a one-time password, and
	// every route but passwordChangeRoutes answers 403 password_change_required
	// until POST /api/auth/change-password sets the user's own.
	MustChangePassword bool `json:"must_change_password"`
}

// passwordChangeRoutes are what a session that must change its password may
// still call: who am I, the CSRF token, the change itself, and leaving.
var passwordChangeRoutes = map[string]bool{
	"GET /api/auth/me":               true,
	"GET /api/auth/csrf-token":       true,
	"POST /api/auth/change-password": true,
	"POST /api/auth/logout":          true,
}

// passwordGate refuses every other route to a session that logged in with a
// one-time password and has not chosen its own yet (authorize calls it).
func passwordGate(req *Request) error {
	if req.Session == nil || !req.Session.MustChangePassword || passwordChangeRoutes[req.route.Method+" "+req.route.Path] {
		return nil
	}
	return fault.Errorf(fault.ErrForbidden, "password_change_required",
		"you logged in with a one-time password: choose your own password first (POST /api/auth/change-password with the one-time password as current_password)")
}

func (s *Server) login(req *Request) (any, error) {
	var in loginRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if len(in.Username) <= 64 {
		req.TargetID = in.Username
		req.Actor = in.Username
	}
	if !s.isSetupDone() {
		return nil, fault.Errorf(fault.ErrSetupNeeded, "setup_required", "the cell is not set up yet: complete the wizard under /api/setup first")
	}
	id, sess, err := s.deps.Auth.Login(in.Username, in.Password, req.SourceIP, req.SessionID)
	if err != nil {
		return nil, retryHeader(req, err)
	}
	req.Session = &sess
	s.setCookie(req, id, sess.ExpiresAt)
	if sess.MustChangePassword {
		req.Detail("password", "one_time")
	}
	return userResponse{sess.Username, sess.Role, sess.MustChangePassword}, nil
}

func (s *Server) logout(req *Request) (any, error) {
	req.TargetID = req.Session.Username
	if err := s.deps.Auth.Logout(req.SessionID); err != nil {
		return nil, err
	}
	s.setCookie(req, "", time.Unix(0, 0))
	return map[string]bool{"ok": true}, nil
}

func (s *Server) me(req *Request) (any, error) {
	return userResponse{req.Session.Username, req.Session.Role, req.Session.MustChangePassword}, nil
}

func (s *Server) csrfToken(req *Request) (any, error) {
	return map[string]string{"token": req.Session.CSRFToken}, nil
}

// retryHeader sets Retry-After (whole seconds) when the accounts capability
// refused with a time to wait (a throttled login, a busy hasher), and returns err.
func retryHeader(req *Request, err error) error {
	if d, ok := accounts.RetryAfter(err); ok {
		req.W.Header().Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
	}
	return err
}

type changePasswordRequest struct {
	Current string `json:"current_password"`
	New     string `json:"new_password"`
}

func (s *Server) changePassword(req *Request) (any, error) {
	req.TargetID = req.Session.Username
	var in changePasswordRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	// The entry carries the source address: a wrong current password counts
	// against it like a failed login.
	if err := s.deps.Auth.ChangePassword(*req.Session, in.Current, in.New, s.auditEntry(req, nil)); err != nil {
		return nil, retryHeader(req, err)
	}
	req.Audited()
	return map[string]bool{"ok": true}, nil
}

// resetPasswordRequest sets new_password, or, with one_time true (and no
// new_password), issues a one-time password that the answer shows this once.
type resetPasswordRequest struct {
	Username string `json:"username"`
	New      string `json:"new_password"`
	OneTime  bool   `json:"one_time"`
}

// oneTimeResetter is the accounts capability's one-time reset (cell/accounts).
type oneTimeResetter interface {
	ResetOneTime(by storage.Session, username string, audit storage.Entry) (string, error)
}

type oneTimeResetResponse struct {
	OK              bool   `json:"ok"`
	Username        string `json:"username"`
	OneTimePassword string `json:"one_time_password"`
}

func (s *Server) resetPassword(req *Request) (any, error) {
	var in resetPasswordRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if len(in.Username) <= 64 {
		req.TargetID = in.Username
	}
	if in.OneTime {
		r, ok := s.deps.Auth.(oneTimeResetter)
		if in.New != "" || !ok {
			return nil, fault.Invalid("invalid_reset", "give either new_password or one_time: true, not both")
		}
		pw, err := r.ResetOneTime(*req.Session, in.Username, s.auditEntry(req, nil))
		if err != nil {
			return nil, err
		}
		req.Audited()
		return oneTimeResetResponse{true, in.Username, pw}, nil
	}
	if err := s.deps.Auth.ResetPassword(*req.Session, in.Username, in.New, s.auditEntry(req, nil)); err != nil {
		return nil, err
	}
	req.Audited()
	return map[string]bool{"ok": true}, nil
}

func (s *Server) users(req *Request) (any, error) {
	us, err := s.deps.Auth.Users()
	if err != nil {
		return nil, err
	}
	return map[string]any{"users": us}, nil
}
