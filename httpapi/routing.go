package httpapi

import (
	"fmt"
	"strconv"

	"github.com/pic-cell/cell/cell"
	"github.com/pic-cell/cell/storage"
)

// RoutingService is the routing area's view of the cell.
type RoutingService interface {
	Routing() (cell.RoutingView, error)
	SetPeerPolicy(name string, ch cell.PolicyChange) (cell.PeerPolicyView, error)
	AddForward(in cell.NewForward) (storage.Forward, error)
	DeleteForward(ref cell.ForwardRef) error
}

func (s *Server) routingRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/routing", Access: Admin, Handle: s.routing},
		{Method: "PUT", Path: "/api/routing/peers/:name", Access: Admin, Action: "routing.peer_policy", TargetType: "peer", Handle: s.setPeerPolicy},
		{Method: "GET", Path: "/api/routing/forwards", Access: Admin, Handle: s.listForwards},
		{Method: "POST", Path: "/api/routing/forwards", Access: Admin, Action: "routing.forward_add", TargetType: "forward", Status: 201, Handle: s.addForward},
		{Method: "DELETE", Path: "/api/routing/forwards/:proto/:port", Access: Admin, Action: "routing.forward_delete", TargetType: "forward", Handle: s.deleteForward},
	}
}

func (s *Server) routing(req *Request) (any, error) { return s.deps.Routing.Routing() }

func (s *Server) setPeerPolicy(req *Request) (any, error) {
	name := targetName(req)
	var ch cell.PolicyChange
	if err := req.Decode(&ch); err != nil {
		return nil, err
	}
	out, err := s.deps.Routing.SetPeerPolicy(name, ch)
	if err != nil {
		return nil, err
	}
	req.Detail("internet", out.Internet)
	req.Detail("lan", out.LAN)
	req.Detail("peers", out.Peers)
	return out, nil
}

func (s *Server) listForwards(req *Request) (any, error) {
	v, err := s.deps.Routing.Routing()
	if err != nil {
		return nil, err
	}
	return map[string]any{"forwards": v.Forwards}, nil
}

func (s *Server) addForward(req *Request) (any, error) {
	var in cell.NewForward
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	f, err := s.deps.Routing.AddForward(in)
	if err != nil {
		return nil, err
	}
	req.TargetID = fmt.Sprintf("%s/%d", f.Proto, f.Port)
	req.Detail("peer", f.Peer)
	req.Detail("to_port", fmt.Sprint(f.ToPort))
	return f, nil
}

func (s *Server) deleteForward(req *Request) (any, error) {
	port, err := strconv.Atoi(req.Params.ByName("port"))
	if err != nil {
		return nil, cell.Invalid("invalid_port", "the port in the path must be a number from 1 to 65535")
	}
	in := cell.ForwardRef{Proto: req.Params.ByName("proto"), Port: port}
	if err := s.deps.Routing.DeleteForward(in); err != nil {
		return nil, err
	}
	req.TargetID = fmt.Sprintf("%s/%d", in.Proto, in.Port)
	return map[string]any{"deleted": req.TargetID}, nil
}
