package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pic-cell/cell/cell/config"
	"github.com/pic-cell/cell/cell/plan"
	"github.com/pic-cell/cell/images/catalog"
	"github.com/pic-cell/cell/images/runtime"
	"github.com/pic-cell/cell/images/supervise"
	"github.com/pic-cell/cell/netstack/bridge"
	"github.com/pic-cell/cell/storage"
)

// Services is the service containers' side of the loop: the bridge their
// network namespaces hang on, and the supervisor that runs them. Both are
// optional (the daemon has them in tun mode with containerd).
type Services struct {
	Bridge bridge.Bridge
	// Supervisor converges the containers in its own goroutine: Set never
	// waits on containerd, so a slow image import never holds the network.
	Supervisor Supervisor
	// DataDir is the cell's data directory: volumes/<id>, run/netns/<id>,
	// run/services/<id>/admin-token, logs/services/<id>.log.
	DataDir string
	// ImagesDir holds the OCI archives the catalog names (bundled in the
	// firmware; `make images` on a development host).
	ImagesDir string
	// Arch is the machine's ("amd64", "arm64").
	Arch string
	// Unenforced are the container limits the kernel cannot enforce
	// (runtime.Kernel), which the health names.
	Unenforced []string
}

// Supervisor is images/supervise as the loop drives it.
type Supervisor interface {
	// Run converges until ctx ends; the loop's Run runs it.
	Run(ctx context.Context)
	Set([]supervise.Service)
	States() []supervise.State
	Sync(ctx context.Context) error
}

// tokenPath is the file the admin token is handed to the container in.
const tokenPath = "/run/pic/admin-token"

// serviceIntent is one installed service as read in the snapshot's transaction.
type serviceIntent struct {
	svc      storage.InstalledService
	entry    catalog.Entry
	token    []byte
	accounts map[string]string // username -> password
}

// readServices reads the installed services, their entries and secrets in tx;
// doc is the config document (its services section names the subnet).
func (l *Loop) readServices(tx *storage.Tx, doc config.Doc) ([]serviceIntent, netip.Prefix, error) {
	subnet := netip.MustParsePrefix(plan.DefaultServicesSubnet)
	var sec struct {
		Subnet string `json:"subnet"`
	}
	if err := doc.Decode("services", &sec); err == nil && sec.Subnet != "" {
		if p, err := netip.ParsePrefix(sec.Subnet); err == nil {
			subnet = p
		}
	}
	list, err := l.db.Services().ListTx(tx)
	if err != nil {
		return nil, subnet, err
	}
	out := make([]serviceIntent, 0, len(list))
	for _, svc := range list {
		si := serviceIntent{svc: svc, accounts: map[string]string{}}
		if err := json.Unmarshal(svc.Entry, &si.entry); err != nil {
			return nil, subnet, fmt.Errorf("service %q: its catalog entry: %w", svc.ID, err)
		}
		if si.token, err = l.db.Vault.GetTx(tx, "service/"+svc.ID+"/admin-token"); err != nil {
			return nil, subnet, fmt.Errorf("service %q: admin token: %w", svc.ID, err)
		}
		accts, err := l.db.Services().AccountsTx(tx, svc.ID)
		if err != nil {
			return nil, subnet, err
		}
		for _, a := range accts {
			pw, err := l.db.Vault.GetTx(tx, "service/"+svc.ID+"/account/"+a.Username)
			if err != nil {
				return nil, subnet, fmt.Errorf("service %q: account %q: %w", svc.ID, a.Username, err)
			}
			si.accounts[a.Username] = string(pw)
		}
		out = append(out, si)
	}
	return out, subnet, nil
}

// planServices is what the plan needs of the services.
func planServices(in []serviceIntent) []plan.Service {
	out := make([]plan.Service, 0, len(in))
	for _, si := range in {
		out = append(out, plan.Service{ID: si.svc.ID, Subdomain: si.entry.Subdomain, Addr: si.svc.Addr,
			HTTPPort: si.entry.HTTPPort, Egress: si.entry.Egress})
	}
	return out
}

// supervised turns the installed services into the supervisor's desired set:
// each container's sandbox (its network namespace on the bridge, its volumes,
// its admin token read-only), its health check and its accounts. A service
// the admin stopped is left out, so its container goes.
func (s Services) supervised(in []serviceIntent, netnsDir string) []supervise.Service {
	out := make([]supervise.Service, 0, len(in))
	for _, si := range in {
		if si.svc.Stopped {
			continue
		}
		e, id := si.entry, si.svc.ID
		img, ok := e.Images[s.Arch]
		if !ok {
			img = catalog.Image{} // the supervisor fails it: no image for this machine
		}
		uid, gid := userOf(e.User)
		runDir := filepath.Join(s.DataDir, "run", "services", id)
		volDir := filepath.Join(s.DataDir, "volumes", id)
		spec := runtime.Spec{ID: id, Image: img.Ref, User: e.User, NetNS: plan.NetNSPath(netnsDir, id),
			MemoryBytes: e.Resources.MemoryBytes, CPUMillis: e.Resources.CPUMillis, Pids: e.Resources.Pids,
			LogPath: filepath.Join(s.DataDir, "logs", "services", id+".log"),
			Labels:  map[string]string{"pic.version": e.Version}}
		sv := supervise.Service{ID: id, Image: img.Ref, Digest: img.Index, Restart: si.svc.Restart,
			Health: "http://" + netip.AddrPortFrom(si.svc.Addr, uint16(e.Health.Port)).String() + e.Health.Path}
		if img.Archive != "" {
			sv.Archive = filepath.Join(s.ImagesDir, img.Archive)
		}
		for _, v := range e.Volumes {
			dir := filepath.Join(volDir, v.Name)
			sv.Dirs = append(sv.Dirs, supervise.Dir{Path: dir, UID: uid, GID: gid})
			spec.Mounts = append(spec.Mounts, runtime.Mount{Source: dir, Target: v.Path})
		}
		if e.AdminPort != 0 {
			tok := filepath.Join(runDir, "admin-token")
			sv.Files = append(sv.Files, supervise.File{Path: tok, Data: append(append([]byte(nil), si.token...), '\n'), Mode: 0o400, UID: uid, GID: gid})
			spec.Mounts = append(spec.Mounts, runtime.Mount{Source: tok, Target: tokenPath, ReadOnly: true})
			want := map[string]supervise.Account{}
			for u, pw := range si.accounts {
				want[u] = supervise.Account{Password: pw}
			}
			sv.Accounts = &supervise.Accounts{AdminURL: "http://" + netip.AddrPortFrom(si.svc.Addr, uint16(e.AdminPort)).String(),
				Token: string(si.token), Want: want}
		}
		sv.Spec = spec
		out = append(out, sv)
	}
	return out
}

// userOf reads "uid:gid" (the catalog validated it).
func userOf(s string) (uid, gid int) {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			u, _ := strconv.Atoi(s[:i])
			g, _ := strconv.Atoi(s[i+1:])
			return u, g
		}
	}
	return 0, 0
}

// applyServices builds the bridge (a network namespace per service) and then
// hands the supervisor the containers. When the bridge cannot be built the
// supervisor keeps its last set: a container never starts into a namespace
// that is not there.
func (l *Loop) applyServices(d plan.Desired, intents []serviceIntent) error {
	sv := l.n.Services
	if d.Bridge != nil && sv.Bridge != nil {
		if err := sv.Bridge.Set(*d.Bridge); err != nil {
			err = fmt.Errorf("services bridge: %w", err)
			l.log.Error("services", "err", err)
			l.publish(func(v *plan.Live) { v.Services = down(err) })
			return err
		}
	}
	if sv.Supervisor != nil {
		sv.Supervisor.Set(sv.supervised(intents, l.netnsDir()))
	}
	l.publish(func(v *plan.Live) { v.Services = storage.PartStatus{State: storage.StateOK} })
	return nil
}

// SyncServices waits until the supervisor has converged on what the loop
// last gave it (after Sync, that is every commit before the call).
func (l *Loop) SyncServices(ctx context.Context) error {
	if err := l.Sync(ctx); err != nil {
		return err
	}
	if l.n.Services.Supervisor == nil {
		return nil
	}
	return l.n.Services.Supervisor.Sync(ctx)
}

// ServiceStates are the supervisor's last states (none without one).
func (l *Loop) ServiceStates() []supervise.State {
	if l.n.Services.Supervisor == nil {
		return nil
	}
	return l.n.Services.Supervisor.States()
}

// CheckServices is the services part's health: the bridge's last build and
// the supervisor's word on each service.
func (l *Loop) CheckServices(context.Context) storage.PartStatus {
	st := l.Live().Services
	if l.n.Services.Supervisor == nil {
		return storage.PartStatus{State: storage.StateNotConfigured, Reason: "no containerd: services cannot run"}
	}
	if st.State != storage.StateOK && st.State != "" {
		return st
	}
	var failed []string
	for _, s := range l.n.Services.Supervisor.States() {
		if s.Phase == supervise.PhaseFailed {
			failed = append(failed, s.ID+": "+s.Reason)
		}
	}
	if len(failed) > 0 {
		return storage.PartStatus{State: storage.StateDegraded, Reason: strings.Join(failed, "; ")}
	}
	if u := l.n.Services.Unenforced; len(u) > 0 {
		return storage.PartStatus{State: storage.StateOK, Reason: "this kernel cannot enforce the containers' " + strings.Join(u, " and ") + " limits: the services run without them"}
	}
	return storage.PartStatus{State: storage.StateOK}
}
