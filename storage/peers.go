package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The peers and routing buckets (migration 3):
//
//	peers
//	  <name>               -> JSON Peer (addresses, public key, route, policy; no secret)
//	peer_addrs
//	  <IPv4, 4 bytes>      -> peer name: the address index, in address order
//	forwards
//	  <proto>/<port, BE16> -> JSON Forward
//
// A peer's secrets live in the vault under PeerSecret(name, ...): its private key
// (when the cell generated the pair) and its preshared key. Its login is a user of
// role peer with the same name.

var (
	bucketPeers     = []byte("peers")
	bucketPeerAddrs = []byte("peer_addrs")
	bucketForwards  = []byte("forwards")
)

func migratePeers(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketPeers, bucketPeerAddrs, bucketForwards} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// Policy values.
const (
	Allow = "allow"
	Deny  = "deny"
)

// Routes a peer's config can ask for.
const (
	RouteFull  = "full"
	RouteSplit = "split"
)

// PeerPolicy is where a peer's traffic may go through the cell.
type PeerPolicy struct {
	Internet string `json:"internet"` // allow|deny
	LAN      string `json:"lan"`      // allow|deny
	Peers    string `json:"peers"`    // allow|deny
}

// Peer is a member's device. It holds no secret.
type Peer struct {
	Name         string     `json:"name"`
	Description  string     `json:"description"`
	IPv4         netip.Addr `json:"ipv4"`
	IPv6         netip.Addr `json:"ipv6"`
	PublicKey    string     `json:"public_key"`
	KeyGenerated bool       `json:"key_generated"` // the private key is in the vault
	Route        string     `json:"route"`
	Enabled      bool       `json:"enabled"`
	Policy       PeerPolicy `json:"policy"`
	CreatedAt    time.Time  `json:"created_at"`
	// ConfigEndpoint is the endpoint (host:port) of the config last handed
	// out: when the cell's endpoint changes, the peers whose configs name
	// another must be sent theirs again.
	ConfigEndpoint string `json:"config_endpoint,omitempty"`
}

// Vault entries of a peer.
const (
	SecretPrivateKey   = "private-key"
	SecretPresharedKey = "preshared-key"
)

// PeerSecret is the vault name of one of a peer's secrets.
func PeerSecret(peer, kind string) string { return "peer/" + peer + "/" + kind }

// Peers is the typed store of the peers bucket.
type Peers struct{ db *DB }

// Peers returns the peers store.
func (db *DB) Peers() Peers { return Peers{db} }

func getPeer(tx *bolt.Tx, name string) (Peer, error) {
	var p Peer
	raw := tx.Bucket(bucketPeers).Get([]byte(name))
	if raw == nil {
		return p, fmt.Errorf("peer %q: %w", name, ErrNotFound)
	}
	return p, json.Unmarshal(raw, &p)
}

func putPeer(tx *bolt.Tx, p Peer) error {
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketPeers).Put([]byte(p.Name), raw)
}

// Get returns the named peer.
func (s Peers) Get(name string) (Peer, error) {
	var p Peer
	err := s.db.bolt.View(func(tx *bolt.Tx) (err error) {
		p, err = getPeer(tx, name)
		return err
	})
	return p, err
}

// SetConfigEndpoint records the endpoint of the config just handed out to the
// named peer. It announces no change: nothing the kernel has depends on it.
// A peer deleted meanwhile is not an error.
func (s Peers) SetConfigEndpoint(name, endpoint string) error {
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		p, err := getPeer(tx, name)
		if errors.Is(err, ErrNotFound) || (err == nil && p.ConfigEndpoint == endpoint) {
			return nil
		} else if err != nil {
			return err
		}
		p.ConfigEndpoint = endpoint
		return putPeer(tx, p)
	})
}

// List returns every peer, sorted by name.
func (s Peers) List() ([]Peer, error) {
	out := []Peer{}
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPeers).ForEach(func(k, v []byte) error {
			var p Peer
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("peer %q: %w", k, err)
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

// ErrSubnetFull is wrapped by Create when no address is left.
var ErrSubnetFull = fmt.Errorf("the peer subnet is full: %w", ErrConflict)

// Create stores a new peer in one transaction with its secrets (vault name ->
// value) and its login, after giving it the lowest free address of v4 (the
// first host address is the cell's) and the address at the same offset in
// v6. It fails with ErrExists when the name is taken by a peer or a user, and
// with ErrSubnetFull when v4 has no free address. p's addresses are set on
// return.
// within (the audit entry, other capabilities' hooks) runs last in the same
// transaction.
func (s Peers) Create(p *Peer, v4, v6 netip.Prefix, secrets map[string][]byte, login User, within Within) error {
	return s.CreateIn(p, func(*Tx) (netip.Prefix, netip.Prefix, error) { return v4, v6, nil }, secrets, login, within)
}

// CreateIn is Create with the subnets read inside the transaction (by subnets),
// so a concurrent change of the config cannot place a peer in the old subnet.
func (s Peers) CreateIn(p *Peer, subnets func(tx *Tx) (v4, v6 netip.Prefix, err error), secrets map[string][]byte, login User, within Within) error {
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		v4, v6, err := subnets(tx)
		if err != nil {
			return err
		}
		if tx.Bucket(bucketPeers).Get([]byte(p.Name)) != nil {
			return fmt.Errorf("peer %q: %w", p.Name, ErrExists)
		}
		if tx.Bucket(bucketUsers).Get([]byte(p.Name)) != nil {
			return fmt.Errorf("a user named %q: %w", p.Name, ErrExists)
		}
		a4, a6, err := allocate(tx.Bucket(bucketPeerAddrs), v4, v6)
		if err != nil {
			return err
		}
		p.IPv4, p.IPv6 = a4, a6
		if err := tx.Bucket(bucketPeerAddrs).Put(a4.AsSlice(), []byte(p.Name)); err != nil {
			return err
		}
		if err := putPeer(tx, *p); err != nil {
			return err
		}
		for name, v := range secrets {
			if err := s.db.Vault.PutTx(tx, name, v); err != nil {
				return err
			}
		}
		if err := putUser(tx, login, true); err != nil {
			return err
		}
		s.db.changed(tx, Change{Kind: ChangePeer, Key: p.Name})
		return within.run(tx)
	})
}

// allocate finds the lowest free host address of v4 after the cell's own
// (the first), walking the address index in order.
func allocate(idx *bolt.Bucket, v4, v6 netip.Prefix) (netip.Addr, netip.Addr, error) {
	first := v4.Masked().Addr().Next().Next() // network, cell, then peers
	last := lastAddr(v4)                      // the broadcast address
	next := first
	c := idx.Cursor()
	for k, _ := c.Seek(first.AsSlice()); k != nil; k, _ = c.Next() {
		a, ok := netip.AddrFromSlice(k)
		if !ok || !v4.Contains(a) {
			break
		}
		if a != next {
			break
		}
		next = next.Next()
	}
	if !next.IsValid() || !v4.Contains(next) || next == last {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("no free address in %v: %w", v4, ErrSubnetFull)
	}
	var a6 netip.Addr
	if v6.IsValid() {
		off := offset(v4.Masked().Addr(), next)
		b := v6.Masked().Addr().As16()
		for i := 15; i >= 12 && off > 0; i-- {
			b[i] |= byte(off)
			off >>= 8
		}
		a6 = netip.AddrFrom16(b)
	}
	return next, a6, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	for i := 3; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	return netip.AddrFrom4(b)
}

func offset(base, a netip.Addr) uint32 {
	x, y := base.As4(), a.As4()
	return be32(y) - be32(x)
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// Update changes a peer with fn inside one transaction; fn may not rename it
// or change its addresses.
func (s Peers) Update(name string, fn func(*Peer) error, within Within) (Peer, error) {
	var p Peer
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		var err error
		if p, err = getPeer(tx, name); err != nil {
			return err
		}
		before := p
		if err := fn(&p); err != nil {
			return err
		}
		if p.Name != before.Name || p.IPv4 != before.IPv4 || p.IPv6 != before.IPv6 {
			return fmt.Errorf("peer %q: name and addresses are fixed: %w", name, ErrConflict)
		}
		if err := putPeer(tx, p); err != nil {
			return err
		}
		s.db.changed(tx, Change{Kind: ChangePeer, Key: name})
		return within.run(tx)
	})
	return p, err
}

// Delete removes a peer and everything that belongs to it, in one
// transaction that first runs within (the peer is still there then):
// transaction: its record and address, its vault secrets, its login and
// sessions, and the port forwards to it. It returns what was removed.
func (s Peers) Delete(name string, within Within) (Peer, []Forward, error) {
	var p Peer
	var fwds []Forward
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		var err error
		if p, err = getPeer(tx, name); err != nil {
			return err
		}
		// within sees the peer still stored (hooks read what they remove).
		if err := within.run(tx); err != nil {
			return err
		}
		if err := tx.Bucket(bucketPeers).Delete([]byte(name)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketPeerAddrs).Delete(p.IPv4.AsSlice()); err != nil {
			return err
		}
		for _, kind := range []string{SecretPrivateKey, SecretPresharedKey} {
			if err := s.db.Vault.DeleteTx(tx, PeerSecret(name, kind)); err != nil {
				return err
			}
		}
		if u, err := getUser(tx, name); err == nil && u.Role == RolePeer {
			if err := (Users{s.db}).DeleteTx(tx, name); err != nil {
				return err
			}
		}
		b := tx.Bucket(bucketForwards)
		var dead [][]byte
		err = b.ForEach(func(k, v []byte) error {
			var f Forward
			if err := json.Unmarshal(v, &f); err != nil {
				return err
			}
			if f.Peer == name {
				fwds = append(fwds, f)
				dead = append(dead, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := deleteKeys(b, dead); err != nil {
			return err
		}
		s.db.changed(tx, Change{Kind: ChangePeer, Key: name})
		if len(dead) > 0 {
			s.db.changed(tx, Change{Kind: ChangeForward})
		}
		return nil
	})
	return p, fwds, err
}

// Forward is a port forward from the WAN to a peer.
type Forward struct {
	Proto     string    `json:"proto"` // tcp|udp
	Port      uint16    `json:"port"`  // on the WAN
	Peer      string    `json:"peer"`
	ToPort    uint16    `json:"to_port"`
	CreatedAt time.Time `json:"created_at"`
}

func forwardKey(proto string, port uint16) []byte {
	return append([]byte(proto+"/"), byte(port>>8), byte(port))
}

// Forwards is the typed store of the forwards bucket.
type Forwards struct{ db *DB }

// Forwards returns the forwards store.
func (db *DB) Forwards() Forwards { return Forwards{db} }

// List returns every forward, by protocol and port.
func (s Forwards) List() ([]Forward, error) {
	out := []Forward{}
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketForwards).ForEach(func(k, v []byte) error {
			var f Forward
			if err := json.Unmarshal(v, &f); err != nil {
				return fmt.Errorf("forward %q: %w", k, err)
			}
			out = append(out, f)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Proto != out[j].Proto {
			return out[i].Proto < out[j].Proto
		}
		return out[i].Port < out[j].Port
	})
	return out, err
}

// Create adds a forward; ErrExists when its protocol and port are taken,
// ErrNotFound when its peer does not exist.
func (s Forwards) Create(f Forward, within Within) error {
	raw, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		if _, err := getPeer(tx, f.Peer); err != nil {
			return err
		}
		b := tx.Bucket(bucketForwards)
		k := forwardKey(f.Proto, f.Port)
		if b.Get(k) != nil {
			return fmt.Errorf("forward %s/%d: %w", f.Proto, f.Port, ErrExists)
		}
		if err := b.Put(k, raw); err != nil {
			return err
		}
		s.db.changed(tx, Change{Kind: ChangeForward})
		return within.run(tx)
	})
}

// Delete removes the forward of proto and port.
func (s Forwards) Delete(proto string, port uint16, within Within) (Forward, error) {
	var f Forward
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketForwards)
		k := forwardKey(proto, port)
		raw := b.Get(k)
		if raw == nil {
			return fmt.Errorf("forward %s/%d: %w", proto, port, ErrNotFound)
		}
		if err := json.Unmarshal(raw, &f); err != nil {
			return err
		}
		if err := b.Delete(k); err != nil {
			return err
		}
		s.db.changed(tx, Change{Kind: ChangeForward})
		return within.run(tx)
	})
	return f, err
}
