package httpapi

// The peer's own area: a person logged in with their peer's one-time
// password reaches their own peer here and nothing else.

func (s *Server) peerSelfRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/peer/me", Access: Peer, Handle: s.peerMe},
		{Method: "GET", Path: "/api/peer/config", Access: Peer, Handle: s.peerMyConfig},
		{Method: "GET", Path: "/api/peer/qr", Access: Peer, Handle: s.peerMyQR},
		{Method: "GET", Path: "/api/peer/service-credentials", Access: Peer, Handle: s.peerMyCredentials},
	}
}

// self is the session's own peer: the peer login's username is its name.
func self(req *Request) string { return req.Session.Username }

func (s *Server) peerMe(req *Request) (any, error) { return s.deps.Peers.Peer(self(req)) }

func (s *Server) peerMyConfig(req *Request) (any, error) {
	return configRaw(s.deps.Peers.PeerConfig(self(req)))
}

func (s *Server) peerMyQR(req *Request) (any, error) {
	return qrRaw(s.deps.Peers.PeerQR(self(req), req.URL.Query().Get("format")))
}

func (s *Server) peerMyCredentials(req *Request) (any, error) {
	return s.credentialsOf(self(req))
}
