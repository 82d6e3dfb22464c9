package httpapi

func (s *Server) wireguardRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/wireguard/status", Access: Admin, Handle: s.wireguardStatus},
		{Method: "GET", Path: "/api/wireguard/history", Access: Admin, Handle: s.wireguardHistory},
	}
}

func (s *Server) wireguardStatus(req *Request) (any, error) { return s.deps.Peers.WireGuardStatus() }

// wireguardHistory is each peer's bytes per sampling interval (cell/peers'
// history.go), or one peer's with ?peer=name.
func (s *Server) wireguardHistory(req *Request) (any, error) {
	return s.deps.Peers.WireGuardHistory(req.URL.Query().Get("peer"))
}
