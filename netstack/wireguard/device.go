package wireguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/pic-cell/cell/netstack/userspace"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// Mode selects what the device is attached to.
type Mode string

const (
	// ModeTUN attaches the device to a kernel TUN interface (needs root or
	// CAP_NET_ADMIN). It is the appliance's mode.
	ModeTUN Mode = "tun"
	// ModeNetstack attaches the device to gVisor's userspace network stack
	// (package userspace): no privileges, nothing on the host changes. The
	// stack forwards peers' flows through host sockets under a policy and
	// serves the cell's own tunnel addresses; see WG.Userspace.
	ModeNetstack Mode = "netstack"
)

// Options say how to open the device.
type Options struct {
	Mode Mode   // required
	Name string // optional; "wg0"
	MTU  int    // optional; 1420
	// UAPI, in TUN mode, serves the standard socket
	// /var/run/wireguard/<Name>.sock so that `wg show` works.
	UAPI bool
	// Addresses are the device's own tunnel addresses; required in netstack
	// mode (the TUN mode's addresses belong to the links package).
	Addresses []netip.Addr
	Logger    *slog.Logger // optional
	// Limits bound the flows the netstack mode forwards; optional (the
	// userspace package's defaults).
	Limits userspace.Limits
}

// WG is a wireguard-go device. Its methods are safe for concurrent use.
//
// In TUN mode the TUN interface and the UDP sockets are created in the
// network namespace of the thread that calls Open and Set, so callers that
// juggle namespaces call them from a thread locked in the right one.
type WG struct {
	log  *slog.Logger
	name string
	dev  *device.Device
	us   *userspace.Stack // netstack mode only
	echo *echoLog         // reachability payloads heard (echo.go)

	mu     sync.Mutex // guards closed and serializes configuration
	closed bool
	uapi   net.Listener
	done   chan struct{} // closed when the UAPI accept loop ends
}

var _ Device = (*WG)(nil)

// Open creates the device, brings it up and, in TUN mode with UAPI set,
// starts serving the UAPI socket. It has no key and no peers until Set.
func Open(opts Options) (*WG, error) {
	if opts.Name == "" {
		opts.Name = "wg0"
	}
	if opts.MTU == 0 {
		opts.MTU = 1420
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &WG{log: opts.Logger.With("component", "wireguard", "dev", opts.Name), name: opts.Name}
	var td tun.Device
	var err error
	switch opts.Mode {
	case ModeTUN:
		td, err = tun.CreateTUN(opts.Name, opts.MTU)
	case ModeNetstack:
		if len(opts.Addresses) == 0 {
			return nil, errors.New("wireguard: netstack mode needs the device's addresses")
		}
		w.us, td, err = userspace.New(userspace.Options{Addresses: opts.Addresses, MTU: opts.MTU, Logger: opts.Logger, Limits: opts.Limits})
	default:
		return nil, fmt.Errorf("wireguard: unknown mode %q (want tun or netstack)", opts.Mode)
	}
	if err != nil {
		return nil, fmt.Errorf("wireguard: create %s device %s: %w", opts.Mode, opts.Name, err)
	}
	bind := newEchoBind(conn.NewDefaultBind())
	w.echo = bind.heard
	w.dev = device.NewDevice(td, bind, &device.Logger{
		// wireguard-go is chatty per packet and per peer; format only what
		// will be written.
		Verbosef: func(format string, args ...any) {
			if w.log.Enabled(context.Background(), slog.LevelDebug) {
				w.log.Debug(fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) { w.log.Warn(fmt.Sprintf(format, args...)) },
	})
	// Up here, on the caller's thread, so that the sockets are opened in the
	// caller's network namespace (the TUN up event later finds it up already).
	if err := w.dev.Up(); err != nil {
		w.dev.Close()
		return nil, fmt.Errorf("wireguard: up: %w", err)
	}
	if opts.Mode == ModeTUN && opts.UAPI {
		if err := w.serveUAPI(); err != nil {
			w.dev.Close()
			return nil, err
		}
	}
	w.log.Info("device open", "mode", opts.Mode)
	return w, nil
}

func (w *WG) serveUAPI() error {
	f, err := ipc.UAPIOpen(w.name)
	if err != nil {
		return fmt.Errorf("wireguard: UAPI socket: %w", err)
	}
	l, err := ipc.UAPIListen(w.name, f)
	f.Close()
	if err != nil {
		return fmt.Errorf("wireguard: UAPI listen: %w", err)
	}
	w.uapi = l
	w.done = make(chan struct{})
	go func() {
		defer close(w.done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go w.dev.IpcHandle(c)
		}
	}()
	return nil
}

// Net is the userspace network stack in netstack mode, nil in TUN mode. A
// device used as a client dials through it (DialContext, DialPingAddr); the
// cell uses Userspace.
func (w *WG) Net() *userspace.Stack { return w.us }

// Userspace is the netstack mode's forwarding policy and listeners; nil in
// TUN mode, where the kernel, the links and the firewall packages do that.
func (w *WG) Userspace() Userspace {
	if w.us == nil {
		return nil
	}
	return w.us
}

// Set implements Device: it reads the device's state and writes only the
// difference, so peers that did not change keep their sessions.
func (w *WG) Set(cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	cur, err := w.stateLocked()
	if err != nil {
		return err
	}
	diff := diffUAPI(cur, cfg)
	if diff == "" {
		return nil
	}
	if err := w.dev.IpcSet(diff); err != nil {
		return fmt.Errorf("wireguard: set: %w", err)
	}
	w.log.Info("configured", "peers", len(cfg.Peers))
	return nil
}

// PutPeer implements Device.
func (w *WG) PutPeer(p Peer) error {
	if err := p.validate(); err != nil {
		return err
	}
	var b strings.Builder
	writePeer(&b, p)
	return w.ipcSet(b.String())
}

// RemovePeer implements Device.
func (w *WG) RemovePeer(pub Key) error {
	var b strings.Builder
	writeRemove(&b, pub)
	return w.ipcSet(b.String())
}

func (w *WG) ipcSet(text string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if err := w.dev.IpcSet(text); err != nil {
		return fmt.Errorf("wireguard: set: %w", err)
	}
	return nil
}

// stateLocked reads the device's configuration; w.mu must be held.
func (w *WG) stateLocked() (deviceState, error) {
	text, err := w.dev.IpcGet()
	if err != nil {
		return deviceState{}, fmt.Errorf("wireguard: get: %w", err)
	}
	return parseUAPI(text)
}

// Stats implements Device.
func (w *WG) Stats() ([]PeerStats, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	st, err := w.stateLocked()
	return st.Stats, err
}

// PublicKey reports the device's public key, zero before the first Set.
func (w *WG) PublicKey() (Key, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return Key{}, ErrClosed
	}
	st, err := w.stateLocked()
	if err != nil || st.PrivateKey == (Key{}) {
		return Key{}, err
	}
	return st.PrivateKey.PublicKey(), nil
}

// Close implements Device. It stops the UAPI listener first (no new
// configuration can arrive), then closes the device, which closes the TUN
// interface and the sockets.
func (w *WG) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.uapi != nil {
		w.uapi.Close()
		<-w.done
		// The listener came from a file and does not unlink its socket.
		os.Remove(filepath.Join("/var/run/wireguard", w.name+".sock"))
	}
	w.dev.Close()
	w.log.Info("device closed")
	return nil
}
