package httpapi

import (
	"context"

	"github.com/pic-cell/cell/cell/names"
	"github.com/pic-cell/cell/cell/peers"
	"github.com/pic-cell/cell/storage"
)

// PeerService is the peers area's view of the cell.
type PeerService interface {
	ListPeers() ([]peers.PeerView, error)
	Peer(name string) (peers.PeerView, error)
	CreatePeer(ctx context.Context, in peers.NewPeer, audit storage.Entry) (peers.CreatedPeer, error)
	UpdatePeer(ctx context.Context, name string, ch peers.PeerChange, audit storage.Entry) (peers.PeerView, error)
	DeletePeer(ctx context.Context, name string, audit storage.Entry) error
	PeerConfig(name string) (string, error)
	PeerQR(name, format string) ([]byte, string, error)
	WireGuardStatus() (peers.WireGuardStatus, error)
	WireGuardHistory(peer string) (peers.TrafficHistory, error)
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
	if names.ValidLabel(name) {
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
	var in peers.NewPeer
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if names.ValidLabel(in.Name) {
		req.TargetID = in.Name
	}
	out, err := s.deps.Peers.CreatePeer(req.Context(), in, s.auditEntry(req, nil))
	if err != nil {
		return nil, err
	}
	req.Audited()
	return out, nil
}

func (s *Server) getPeer(req *Request) (any, error) { return s.deps.Peers.Peer(targetName(req)) }

func (s *Server) updatePeer(req *Request) (any, error) {
	name := targetName(req)
	var ch peers.PeerChange
	if err := req.Decode(&ch); err != nil {
		return nil, err
	}
	out, err := s.deps.Peers.UpdatePeer(req.Context(), name, ch, s.auditEntry(req, nil))
	if err != nil {
		return nil, err
	}
	req.Audited()
	return out, nil
}

func (s *Server) deletePeer(req *Request) (any, error) {
	if err := s.deps.Peers.DeletePeer(req.Context(), targetName(req), s.auditEntry(req, nil)); err != nil {
		return nil, err
	}
	req.Audited()
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
	return s.credentialsOf(targetName(req))
}

// credentialsOf lists a peer's service credentials: the one place (with the
// admin's per-account route) where a service password leaves the vault.
func (s *Server) credentialsOf(name string) (any, error) {
	if s.deps.Services == nil {
		if _, err := s.deps.Peers.Peer(name); err != nil {
			return nil, err
		}
		return map[string]any{"services": []any{}}, nil
	}
	cs, err := s.deps.Services.PeerCredentials(name)
	if err != nil {
		return nil, err
	}
	return map[string]any{"services": cs}, nil
}
