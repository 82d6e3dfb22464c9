package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

// The design's layer rules ("may import"), checked on what go list reports.
// The rules speak of folders inside the module; messages name packages by
// their path inside the module (cmd/cellctl, cell/peers).

const module = "github.com/pic-cell/cell"

// leaves are the packages under cell/ that every capability may use: small,
// capability-free vocabulary (errors, names, logging, the network plan).
// A leaf may import only storage/... and other leaves; every other cell/X is a
// capability.
var leaves = []string{"cell/config", "cell/fault", "cell/logs", "cell/lowprio", "cell/names", "cell/plan"}

// leafExtra are what a leaf may import beyond storage and the other leaves:
// the plan is the desired state of the netstack parts, in their own types.
var leafExtra = map[string][]string{"cell/plan": {"netstack"}}

// cellctlForbidden are dependencies that would put the cell's data plane or
// heavy servers into the admin tool: cellctl talks HTTP to a cell and builds
// images, nothing more.
var cellctlForbidden = []string{
	"gvisor.dev",
	"golang.zx2c4.com/wireguard/device",
	"golang.zx2c4.com/wireguard/tun",
	"github.com/containerd",
	"github.com/caddyserver",
}

// pkg is the part of go list's output the rules read. Imports and Deps are of
// the package without its tests.
type pkg struct {
	ImportPath   string
	Imports      []string
	Deps         []string
	TestImports  []string
	XTestImports []string
	Error        *struct{ Err string }
}

func TestLayers(t *testing.T) {
	pkgs := listPackages(t)
	// A go list that found nothing would make every rule hold.
	seen := map[string]bool{}
	for _, p := range pkgs {
		seen[p.ImportPath] = true
		if p.Error != nil {
			t.Logf("go list: %s: %s (its imports may be incomplete)", p.ImportPath, p.Error.Err)
		}
	}
	for _, want := range []string{"cmd/cell", "cmd/cellctl", "storage", "firmware/update"} {
		if !seen[module+"/"+want] {
			t.Fatalf("go list did not report %s; the rules would be checked on nothing", want)
		}
	}
	for _, v := range layerViolations(pkgs) {
		t.Error(v)
	}
}

// listPackages runs go list on the module with every dependency, so that
// cmd/cellctl's Deps can be followed to the package that pulls a forbidden one
// in.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go command is not on PATH, and the layer rules are read from go list: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// -e: a package that does not compile still has imports to check.
	cmd := exec.CommandContext(ctx, goCmd, "list", "-e", "-deps",
		"-json=ImportPath,Imports,Deps,TestImports,XTestImports,Error", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("reading go list's output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// layerViolations checks the module's packages in pkgs against the rules;
// packages outside the module are read only to explain a dependency.
func layerViolations(pkgs []pkg) []string {
	byPath := map[string]pkg{}
	var own []pkg
	for _, p := range pkgs {
		byPath[p.ImportPath] = p
		if _, ok := inModule(p.ImportPath); ok {
			own = append(own, p)
		}
	}
	sort.Slice(own, func(i, j int) bool { return own[i].ImportPath < own[j].ImportPath })

	var bad []string
	for _, p := range own {
		from, _ := inModule(p.ImportPath)
		// The module root holds only the tools file that pins dependencies,
		// and this test.
		if from == "" {
			continue
		}
		if _, _, known := mayImport(from, from); !known {
			bad = append(bad, fmt.Sprintf("%s has no layer rule: add its folder to the design and to layers_test.go", from))
			continue
		}
		for _, imp := range p.Imports {
			to, ok := inModule(imp)
			if !ok {
				continue
			}
			if to == "cell" && !mayImportCell(from) {
				bad = append(bad, fmt.Sprintf("%s imports cell: only cmd/cell may import the cell package", from))
				continue
			}
			if ok, why, _ := mayImport(from, to); !ok {
				bad = append(bad, fmt.Sprintf("%s imports %s: %s", from, to, why))
			}
		}
		// Tests are free to import what helps them: the API's, the client's
		// and the namespace suites assemble a whole cell in process, as the
		// daemon does.
		if from == "cmd/cellctl" {
			bad = append(bad, forbiddenDeps(p, byPath)...)
		}
	}
	return bad
}

// mayImportCell says whether from may import the root cell package: only the
// daemon that assembles it, and the package itself (its external tests).
func mayImportCell(from string) bool { return under(from, "cmd/cell") || from == "cell" }

// mayImport applies the rule of from's folder to an import of to (both paths
// inside the module). known is false when no rule covers from's folder.
func mayImport(from, to string) (ok bool, why string, known bool) {
	switch {
	case under(from, "cmd/cell"):
		return true, "", true
	case under(from, "cmd/cellctl"):
		// images/oci and images/catalog: cellctl builds the service images
		// and signs the catalog host-side.
		return in(to, "cmd/cellctl", "firmware", "storage", "httpapi/client", "images/oci", "images/catalog"),
			"cmd/cellctl may import only firmware/..., storage/..., httpapi/client, images/oci and images/catalog", true
	case under(from, "cmd/cell-init"):
		return in(to, "cmd/cell-init", "firmware"), "cmd/cell-init may import only firmware/...", true
	case from == "cell":
		// The root package assembles the capabilities; the design names no
		// more for it than what they may use themselves.
		return in(to, "cell", "storage", "netstack", "images"),
			"the cell package may import only cell/..., storage/..., netstack/... and images/...", true
	case under(from, "cell"):
		self := cellUnit(from)
		if isLeaf(self) {
			return in(to, append([]string{self, "storage"}, leafExtra[self]...)...) || isLeaf(cellUnit(to)),
				fmt.Sprintf("the leaf %s may import only storage/... and the other leaves (%s)", self, strings.Join(leaves, ", ")), true
		}
		if in(to, self, "storage", "netstack", "images") || isLeaf(cellUnit(to)) {
			return true, "", true
		}
		if under(to, "cell") {
			return false, "capability packages under cell/ must not import each other", true
		}
		return false, fmt.Sprintf("capability packages under cell/ may import only storage/..., netstack/..., images/... and the leaves (%s)",
			strings.Join(leaves, ", ")), true
	case under(from, "httpapi/client"):
		return in(to, "httpapi/client"), "httpapi/client may import nothing of the module (the standard library only)", true
	case under(from, "httpapi"):
		// The /api/system area speaks the firmware's own types (update status,
		// bundle manifest), as the other areas speak their capability's.
		return in(to, "httpapi", "storage", "firmware/update", "firmware/bundle") || (under(to, "cell") && to != "cell"),
			"httpapi may import only cell/... (not cell itself), storage/..., firmware/update, firmware/bundle and httpapi/...", true
	case under(from, "storage"):
		return in(to, "storage"), "storage may import nothing of the module but storage/...", true
	case under(from, "netstack"):
		return in(to, "netstack", "storage"), "netstack may import only storage/... and netstack/...", true
	case under(from, "images"):
		return in(to, "images", "storage"), "images may import only storage/... and images/...", true
	case under(from, "ui"):
		return in(to, "ui"), "ui (the browser app, embedded) may import nothing of the module", true
	case under(from, "firmware"):
		return in(to, "firmware"), "firmware may import nothing of the module but firmware/...", true
	}
	return false, "", false
}

// forbiddenDeps reports each forbidden dependency of cmd/cellctl once per
// prefix, with the direct imports that lead to it: that is where to cut.
func forbiddenDeps(p pkg, byPath map[string]pkg) []string {
	var bad []string
	for _, prefix := range cellctlForbidden {
		var hits []string
		for _, d := range p.Deps {
			if under(d, prefix) {
				hits = append(hits, d)
			}
		}
		if len(hits) == 0 {
			continue
		}
		var via []string
		for _, imp := range p.Imports {
			if under(imp, prefix) || contains(byPath[imp].Deps, hits[0]) {
				via = append(via, shortName(imp))
			}
		}
		msg := fmt.Sprintf("cmd/cellctl depends on %s", hits[0])
		if len(hits) > 1 {
			msg += fmt.Sprintf(" (and %d more under %s)", len(hits)-1, prefix)
		}
		if len(via) > 0 {
			msg += " via " + strings.Join(via, ", ")
		}
		bad = append(bad, msg+": cellctl must not carry "+prefix+"/...")
	}
	return bad
}

// inModule returns p's path inside the module ("" for the module root).
func inModule(p string) (string, bool) {
	if p == module {
		return "", true
	}
	return strings.CutPrefix(p, module+"/")
}

func shortName(p string) string {
	if r, ok := inModule(p); ok && r != "" {
		return r
	}
	return p
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

func in(p string, dirs ...string) bool {
	for _, d := range dirs {
		if under(p, d) {
			return true
		}
	}
	return false
}

// cellUnit is the capability or leaf a package under cell/ belongs to:
// cell/peers/wire belongs to cell/peers.
func cellUnit(p string) string {
	parts := strings.SplitN(p, "/", 3)
	if len(parts) < 2 || parts[0] != "cell" {
		return p
	}
	return parts[0] + "/" + parts[1]
}

func isLeaf(unit string) bool { return contains(leaves, unit) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestLayersCatchForbiddenImport(t *testing.T) {
	m := func(rel string) string { return module + "/" + rel }
	for _, tc := range []struct {
		name string
		pkgs []pkg
		want string // the start of the one violation expected
	}{
		{"storage imports netstack", []pkg{{ImportPath: m("storage"), Imports: []string{m("netstack/wireguard")}}},
			"storage imports netstack/wireguard: "},
		{"capabilities import each other", []pkg{{ImportPath: m("cell/peers"), Imports: []string{m("cell/accounts"), m("cell/fault"), m("storage")}}},
			"cell/peers imports cell/accounts: capability packages under cell/ must not import each other"},
		{"cellctl carries gvisor", []pkg{
			{ImportPath: m("cmd/cellctl"), Imports: []string{m("storage")},
				Deps: []string{"fmt", "gvisor.dev/gvisor/pkg/tcpip", m("storage")}},
			{ImportPath: m("storage"), Deps: []string{"gvisor.dev/gvisor/pkg/tcpip"}},
		}, "cmd/cellctl depends on gvisor.dev/gvisor/pkg/tcpip via storage: "},
		{"client imports storage", []pkg{{ImportPath: m("httpapi/client"), Imports: []string{"net/http", m("storage")}}},
			"httpapi/client imports storage: "},
		{"httpapi imports the cell package", []pkg{{ImportPath: m("httpapi"), Imports: []string{m("cell"), m("cell/peers")}}},
			"httpapi imports cell: only cmd/cell may import the cell package"},
		{"a leaf imports a capability", []pkg{{ImportPath: m("cell/plan"), Imports: []string{m("cell/peers")}}},
			"cell/plan imports cell/peers: the leaf cell/plan may import only"},
		{"a leaf imports netstack", []pkg{{ImportPath: m("cell/names"), Imports: []string{m("netstack/wireguard")}}},
			"cell/names imports netstack/wireguard: the leaf cell/names may import only"},
		{"cell-init imports storage", []pkg{{ImportPath: m("cmd/cell-init"), Imports: []string{m("firmware/update"), m("storage")}}},
			"cmd/cell-init imports storage: "},
		{"firmware imports netstack", []pkg{{ImportPath: m("firmware/update"), Imports: []string{m("firmware/bundle"), m("netstack/links")}}},
			"firmware/update imports netstack/links: "},
		{"a folder without a rule", []pkg{{ImportPath: m("tools/gen")}},
			"tools/gen has no layer rule"},
	} {
		got := layerViolations(tc.pkgs)
		if len(got) != 1 || !strings.HasPrefix(got[0], tc.want) {
			t.Errorf("%s: violations %q, want one starting with %q", tc.name, got, tc.want)
		}
	}
}

// TestLayersAllowDesignedImports guards against a checker that flags
// everything: each import here is one the design allows.
func TestLayersAllowDesignedImports(t *testing.T) {
	p := func(rel string) string { return module + "/" + rel }
	m := func(rels ...string) []string {
		var out []string
		for _, r := range rels {
			out = append(out, p(r))
		}
		return out
	}
	pkgs := []pkg{
		{ImportPath: module},
		{ImportPath: p("cmd/cell"), Imports: m("cell", "cell/peers", "httpapi", "netstack/wireguard", "firmware/update"), TestImports: m("cell")},
		{ImportPath: p("cmd/cellctl"), Imports: m("firmware/image", "storage", "httpapi/client"),
			Deps: []string{"fmt", "golang.zx2c4.com/wireguard/wgctrl/wgtypes", "golang.zx2c4.com/wireguard/conn"}, TestImports: m("httpapi", "cell/peers")},
		{ImportPath: p("cmd/cell-init"), Imports: m("firmware/update", "firmware/release")},
		{ImportPath: p("cell"), Imports: m("cell/peers", "cell/logs", "storage", "netstack/links"), XTestImports: m("cell")},
		{ImportPath: p("cell/peers"), Imports: m("cell/peers/wire", "cell/fault", "cell/plan", "storage", "netstack/wireguard", "images")},
		{ImportPath: p("cell/peers/wire"), Imports: m("cell/names")},
		{ImportPath: p("cell/plan"), Imports: m("cell/fault", "storage")},
		{ImportPath: p("httpapi"), Imports: m("cell/peers", "cell/fault", "storage", "httpapi/client")},
		{ImportPath: p("httpapi/client"), Imports: []string{"net/http"}, XTestImports: m("httpapi", "storage")},
		{ImportPath: p("storage"), Imports: []string{"go.etcd.io/bbolt"}, TestImports: m("netstack/nstest")},
		{ImportPath: p("netstack/wireguard"), Imports: m("storage", "netstack/links")},
		{ImportPath: p("images/store"), Imports: m("storage", "images")},
		{ImportPath: p("firmware/update"), Imports: m("firmware/bundle")},
	}
	if got := layerViolations(pkgs); len(got) != 0 {
		t.Errorf("violations in a tree that follows the design:\n%s", strings.Join(got, "\n"))
	}
}
