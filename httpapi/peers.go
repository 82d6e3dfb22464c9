package httpapi

import (
	"strings"

	"github.com/pic-cell/cell/cell"
)

// PeerService is the peers area's view of the cell.
type PeerService interface {
	ListPeers() ([]cell.PeerView, error)
	Peer(name string) (cell.PeerView, error)
	CreatePeer(in cell.NewPeer) (cell.CreatedPeer, error)
	UpdatePeer(name string, ch cell.PeerChange) (cell.PeerView, error)
	DeletePeer(name string) error
	PeerConfig(name string) (string, error)
	PeerQR(name, format string) ([]byte, string, error)
	PeerServiceCredentials(name string) ([]cell.ServiceCredential, error)
	WireGuardStatus() (cell.WireGuardStatus, error)
}

func (s *Server) peerRoutes() []Route {
	return []Route{
		{Method: "GET", Path: "/api/peers", Access: Admin, Handle: s.listPeers},
		{Method: "POST", Path: "/api/peers", Access: Admin, Action: "peer.create", TargetType: "peer", Status: 201, Handle: s.createPeer},
		{Method: "GET", Path: "/api/peers/:name", Access: Admin, Handle: s.getPeer},
		{Method: "PUT", Path: "/api/peers/:name", Access: Admin, Action: "peer.update", TargetType: "peer", Handle: s.updatePeer},
		{Method: "DELETE", Path: "/api/peers/:name", Access: Admin, Action: "peer.delete", TargetType: "peer", Handle: s.deletePeer},
		{Method: "GET", Path: "/api/peers/:name/config", Access: Admin, Handle: s.peerConfig},
		{Method: "GET", Path: "/api/peers/:name/qr", Access: Admin, Handle: s.peerQR},
		{Method: "GET", Path: "/api/peers/:name/service-credentials", Access: Admin, Handle: s.peerCredentials},
	}
}

// targetName records a path's peer name for the audit log, when it is one.
func targetName(req *Request) string {
	name := req.Params.ByName("name")
	if cell.ValidLabel(name) {
		req.TargetID = name
	}
	return name
}

func (s *Server) listPeers(req *Request) (any, error) {
	ps, err := s.deps.Peers.ListPeers()
	if err != nil {
		return nil, err
	}
	return map[string]any{"peers": ps}, nil
}

func (s *Server) createPeer(req *Request) (any, error) {
	var in cell.NewPeer
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if cell.ValidLabel(in.Name) {
		req.TargetID = in.Name
	}
	out, err := s.deps.Peers.CreatePeer(in)
	if err != nil {
		return nil, err
	}
	req.Detail("ipv4", out.Peer.IPv4.String())
	req.Detail("key_source", out.Peer.KeySource)
	req.Detail("route", out.Peer.Route)
	return out, nil
}

func (s *Server) getPeer(req *Request) (any, error) { return s.deps.Peers.Peer(targetName(req)) }

func (s *Server) updatePeer(req *Request) (any, error) {
	name := targetName(req)
	var ch cell.PeerChange
	if err := req.Decode(&ch); err != nil {
		return nil, err
	}
	var changed []string
	if ch.Enabled != nil {
		changed = append(changed, "enabled")
	}
	if ch.Route != nil {
		changed = append(changed, "route")
	}
	if ch.Description != nil {
		changed = append(changed, "description")
	}
	req.Detail("changed", strings.Join(changed, ","))
	return s.deps.Peers.UpdatePeer(name, ch)
}

func (s *Server) deletePeer(req *Request) (any, error) {
	if err := s.deps.Peers.DeletePeer(targetName(req)); err != nil {
		return nil, err
	}
	return map[string]any{"deleted": req.Params.ByName("name")}, nil
}

func (s *Server) peerConfig(req *Request) (any, error) {
	return configRaw(s.deps.Peers.PeerConfig(targetName(req)))
}

func configRaw(text string, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return Raw{ContentType: "text/plain; charset=utf-8", Body: []byte(text)}, nil
}

func (s *Server) peerQR(req *Request) (any, error) {
	return qrRaw(s.deps.Peers.PeerQR(targetName(req), req.URL.Query().Get("format")))
}

func qrRaw(body []byte, ct string, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return Raw{ContentType: ct, Body: body}, nil
}

func (s *Server) peerCredentials(req *Request) (any, error) {
	cs, err := s.deps.Peers.PeerServiceCredentials(targetName(req))
	if err != nil {
		return nil, err
	}
	return map[string]any{"services": cs}, nil
}
