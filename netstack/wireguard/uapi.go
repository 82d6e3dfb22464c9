package wireguard

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// This file is the one typed place that speaks wireguard-go's UAPI text
// protocol (https://www.wireguard.com/xplatform/#configuration-protocol).

// deviceState is what IpcGet reports.
type deviceState struct {
	PrivateKey Key
	ListenPort int
	Peers      []Peer
	Stats      []PeerStats
}

func hexKey(k Key) string { return hex.EncodeToString(k[:]) }

// writePeer appends the UAPI lines that create or fully replace p.
func writePeer(b *strings.Builder, p Peer) {
	b.WriteString("public_key=" + hexKey(p.PublicKey) + "\n")
	b.WriteString("preshared_key=" + hexKey(p.PresharedKey) + "\n")
	if p.Endpoint.IsValid() {
		b.WriteString("endpoint=" + p.Endpoint.String() + "\n")
	}
	b.WriteString("persistent_keepalive_interval=" + strconv.Itoa(p.PersistentKeepalive) + "\n")
	b.WriteString("replace_allowed_ips=true\n")
	for _, a := range p.AllowedIPs {
		b.WriteString("allowed_ip=" + a.Masked().String() + "\n")
	}
}

func writeRemove(b *strings.Builder, pub Key) {
	b.WriteString("public_key=" + hexKey(pub) + "\nremove=true\n")
}

// diffUAPI returns the UAPI text that turns cur into want, or "" when they
// already agree. Endpoints the device learnt by roaming are not a difference
// when want does not pin one.
func diffUAPI(cur deviceState, want Config) string {
	var b strings.Builder
	if cur.PrivateKey != want.PrivateKey {
		b.WriteString("private_key=" + hexKey(want.PrivateKey) + "\n")
	}
	if want.ListenPort != 0 && cur.ListenPort != want.ListenPort {
		b.WriteString("listen_port=" + strconv.Itoa(want.ListenPort) + "\n")
	}
	have := make(map[Key]Peer, len(cur.Peers))
	for _, p := range cur.Peers {
		have[p.PublicKey] = p
	}
	wanted := make(map[Key]bool, len(want.Peers))
	for _, p := range want.Peers {
		wanted[p.PublicKey] = true
		h, ok := have[p.PublicKey]
		if ok && !p.Endpoint.IsValid() {
			h.Endpoint = netip.AddrPort{}
		}
		if ok && h.equal(p) {
			continue
		}
		writePeer(&b, p)
	}
	for _, p := range cur.Peers {
		if !wanted[p.PublicKey] {
			writeRemove(&b, p.PublicKey)
		}
	}
	return b.String()
}

// parseUAPI reads the text of a UAPI get operation.
func parseUAPI(text string) (deviceState, error) {
	var st deviceState
	var peer *Peer
	var stats *PeerStats
	var hsSec, hsNsec int64
	flush := func() {
		if peer == nil {
			return
		}
		if hsSec != 0 || hsNsec != 0 {
			stats.LastHandshake = time.Unix(hsSec, hsNsec)
		}
		stats.Endpoint = peer.Endpoint
		st.Peers = append(st.Peers, *peer)
		st.Stats = append(st.Stats, *stats)
		peer, stats, hsSec, hsNsec = nil, nil, 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return st, fmt.Errorf("wireguard: bad UAPI line %q", line)
		}
		var err error
		switch k {
		case "private_key":
			st.PrivateKey, err = parseHexKey(v)
		case "listen_port":
			st.ListenPort, err = strconv.Atoi(v)
		case "public_key":
			flush()
			peer, stats = &Peer{}, &PeerStats{}
			peer.PublicKey, err = parseHexKey(v)
			stats.PublicKey = peer.PublicKey
		case "errno":
			if v != "0" {
				err = fmt.Errorf("wireguard: UAPI errno %s", v)
			}
		default:
			if peer == nil {
				continue // fwmark and future device keys
			}
			switch k {
			case "preshared_key":
				peer.PresharedKey, err = parseHexKey(v)
			case "endpoint":
				peer.Endpoint, err = netip.ParseAddrPort(v)
			case "last_handshake_time_sec":
				hsSec, err = strconv.ParseInt(v, 10, 64)
			case "last_handshake_time_nsec":
				hsNsec, err = strconv.ParseInt(v, 10, 64)
			case "tx_bytes":
				stats.TxBytes, err = strconv.ParseUint(v, 10, 64)
			case "rx_bytes":
				stats.RxBytes, err = strconv.ParseUint(v, 10, 64)
			case "persistent_keepalive_interval":
				peer.PersistentKeepalive, err = strconv.Atoi(v)
			case "allowed_ip":
				var p netip.Prefix
				p, err = netip.ParsePrefix(v)
				peer.AllowedIPs = append(peer.AllowedIPs, p)
			}
		}
		if err != nil {
			return st, fmt.Errorf("wireguard: UAPI %s: %w", k, err)
		}
	}
	flush()
	return st, sc.Err()
}

func parseHexKey(s string) (Key, error) {
	var k Key
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("bad key")
	}
	copy(k[:], b)
	return k, nil
}
