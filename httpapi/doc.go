// Package httpapi is the cell's HTTP surface and nothing else: routes
// (julienschmidt/httprouter), the middleware every route goes through (body limits,
// setup gate, session, role, CSRF and cross-site checks, JSON errors, audit), and one
// file per area of the API reference. It holds no business logic: handlers decode,
// call the cell through the small interfaces in deps.go, and return a value or an
// error.
//
// # Adding an area
//
// Write one file (peers.go, routing.go, ...) with a method on *Server that returns
// its routes, and list that method in Server.areas (server.go):
//
//	func (s *Server) peerRoutes() []Route {
//		return []Route{
//			{Method: "GET", Path: "/api/peers", Access: Admin, Handle: s.listPeers},
//			{Method: "POST", Path: "/api/peers", Access: Admin, Action: "peer.create", TargetType: "peer", Handle: s.createPeer},
//		}
//	}
//
// A handler is func(*Request) (any, error). The value is written as JSON with 200 (or
// Route.Status); a Raw value is written as it is (CSV, PNG, text). An error is mapped
// to a status in one place (errors.go) from the kinds in package cell (fault.ErrInvalid
// → 400, storage.ErrNotFound → 404, fault.ErrConflict → 409, ...); use fault.Errorf or
// fault.Invalid to give a code and a message a person understands. Decode bodies with
// req.Decode(&v): strict (unknown fields are 400), capped (1 MiB unless
// Route.MaxBody), JSON only.
//
// Access is one of Public, Setup, Session (any logged-in role), Admin, Peer. Every
// POST/PUT/PATCH/DELETE needs the session's X-CSRF-Token except under /api/auth/ and
// /api/setup/, and is refused when its Origin (or Sec-Fetch-Site) says cross-site.
// Every POST/PUT/PATCH/DELETE is written to the audit log, with Route.Action
// (default "METHOD path pattern"), Route.TargetType, the target and details (names
// and non-secret values only), and result "ok" or the error code. A change is
// audited by the capability that stores it, in the same transaction: the handler
// passes s.auditEntry(req, nil) (actor, source, action) to the capability, which
// fills in the target and details, and then calls req.Audited() so the middleware
// does not append a second. Everything else (refusals: 400, 401, 403, 409, 429...;
// and the few changes that store nothing of a capability's, such as login or the
// log levels) the middleware appends itself after the handler, durable before the
// response is written.
//
// Tests: routes_test.go walks Server.Routes() and fails for any route missing from
// its table of expectations, so a new route needs an entry there.
package httpapi
