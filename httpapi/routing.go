package httpapi

import (
	"context"
	"fmt"
	"strconv"

	"github.com/pic-cell/cell/cell/fault"
	"github.com/pic-cell/cell/cell/peers"
	"github.com/pic-cell/cell/storage"
)

// RoutingService is the routing area's view of the cell.
type RoutingService interface {
	Routing() (peers.RoutingView, error)
	SetPeerPolicy(ctx context.Context, name string, ch peers.PolicyChange, audit storage.Entry) (peers.PeerPolicyView, error)
	AddForward(ctx context.Context, in peers.NewForward, audit storage.Entry) (peers.Forward, error)
	DeleteForward(ctx context.Context, ref peers.ForwardRef, audit storage.Entry) error
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
	var ch peers.PolicyChange
	if err := req.Decode(&ch); err != nil {
		return nil, err
	}
	out, err := s.deps.Routing.SetPeerPolicy(req.Context(), name, ch, s.auditEntry(req, nil))
	if err != nil {
		return nil, err
	}
	req.Audited()
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
	var in peers.NewForward
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	f, err := s.deps.Routing.AddForward(req.Context(), in, s.auditEntry(req, nil))
	if err != nil {
		return nil, err
	}
	req.Audited()
	return f, nil
}

func (s *Server) deleteForward(req *Request) (any, error) {
	port, err := strconv.Atoi(req.Params.ByName("port"))
	if err != nil {
		return nil, fault.Invalid("invalid_port", "the port in the path must be a number from 1 to 65535")
	}
	in := peers.ForwardRef{Proto: req.Params.ByName("proto"), Port: port}
	req.TargetID = fmt.Sprintf("%s/%d", in.Proto, in.Port)
	if err := s.deps.Routing.DeleteForward(req.Context(), in, s.auditEntry(req, nil)); err != nil {
		return nil, err
	}
	req.Audited()
	return map[string]any{"deleted": req.TargetID}, nil
}
