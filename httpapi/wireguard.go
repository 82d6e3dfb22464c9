package httpapi

func (s *Server) wireguardRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/wireguard/status", Access: Admin, Handle: s.wireguardStatus},
	}
}

func (s *Server) wireguardStatus(req *Request) (any, error) { return s.deps.Peers.WireGuardStatus() }
