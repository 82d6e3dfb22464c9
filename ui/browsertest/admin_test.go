package browsertest

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// decodeQR reads the QR code of a PNG with zbarimg, after putting a white
// margin around it (a cropped element may lack the quiet zone a reader wants).
func decodeQR(t *testing.T, pngBytes []byte, keep string) string {
	t.Helper()
	zbar, err := exec.LookPath("zbarimg")
	if err != nil {
		t.Skipf("zbarimg is not installed (apt-get install zbar-tools): %v", err)
	}
	img, err := png.Decode(bytes.NewReader(pngBytes))
	if err != nil {
		t.Fatal(err)
	}
	const margin = 40
	r := img.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, r.Dx()+2*margin, r.Dy()+2*margin))
	draw.Draw(out, out.Bounds(), &image.Uniform{color.White}, image.Point{}, draw.Src)
	draw.Draw(out, image.Rect(margin, margin, margin+r.Dx(), margin+r.Dy()), img, r.Min, draw.Over)
	var buf bytes.Buffer
	if err := png.Encode(&buf, out); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keep, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("QR code as read: %s", keep)
	got, err := exec.Command(zbar, "--raw", "-q", keep).Output()
	if err != nil {
		t.Fatalf("zbarimg found no QR code in %s: %v", keep, err)
	}
	return strings.TrimSuffix(string(got), "\n") // zbarimg ends each symbol with a newline
}

// TestAdminInTheBrowser: the wizard, the sign-in, then the admin's day:
// add a peer and scan its QR code off the screen to exactly the config the
// API gives, turn its internet access off, find that change on the audit
// page, verify the audit chain from the page, and search the logs. Then the
// peer portal as that peer: its one-time password from the page, its own
// password as the page demands, its QR code (read off the screen) and config
// text exactly the config, and its (no) service credentials as the API says.
func TestAdminInTheBrowser(t *testing.T) {
	needChromium(t)
	c := startCell(t)
	b := newBrowser(t, c)
	wizard(b, c)
	login(b, adminUser, adminPassword)
	api := c.client()
	c.login(api, adminUser, adminPassword)

	// Add a peer: the page shows its QR code and one-time password at once.
	b.gotoRoute("peers")
	b.fill("Name", "phone")
	b.fill("Description (optional)", "Alex's phone")
	b.click("Add peer")
	b.waitText("phone is added")
	b.waitFor("the QR code loaded", `(() => { const i = document.getElementById("peer-qr"); return i && i.complete && i.naturalWidth > 0; })()`, 15*time.Second)
	full := b.shot("peer-added")
	otp := eval[string](b, `(document.getElementById("peer-otp") || {}).textContent || ""`)
	if otp == "" {
		t.Errorf("the page shows no one-time password for the new peer")
	}

	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	qrPNG, err := chromedp.Run(ctx, chromedp.ScreenshotScale(chromedp.ID("peer-qr"), 2))
	cancel()
	if err != nil {
		t.Fatalf("screenshot of #peer-qr: %v", err)
	}
	got := decodeQR(t, qrPNG, filepath.Join(b.shots, "peer-qr.png"))
	want, err := api.PeerConfig(t.Context(), "phone")
	if err != nil {
		t.Fatal(err)
	}
	if got != want && got != strings.TrimSuffix(want, "\n") {
		t.Errorf("the QR code on the page (%s) reads\n%q\nwant the config of GET /api/peers/phone/config\n%q", full, got, want)
	}
	if !strings.Contains(got, "[Interface]") || !strings.Contains(got, "PrivateKey") {
		t.Errorf("the QR code holds no WireGuard config: %q", got)
	}

	// Its internet access off, with the checkbox in its row.
	b.click("Done")
	before, err := api.Peer(t.Context(), "phone")
	if err != nil {
		t.Fatal(err)
	}
	if before.Policy.Internet != "allow" {
		t.Fatalf("a new peer's internet policy is %q, want allow", before.Policy.Internet)
	}
	b.run("untick Internet", chromedp.Click(chromedp.ID("policy-phone-internet")))
	b.waitText("phone: internet denied")
	after, err := api.Peer(t.Context(), "phone")
	if err != nil {
		t.Fatal(err)
	}
	if after.Policy.Internet != "deny" {
		t.Errorf("after unticking Internet the API says %q, want deny", after.Policy.Internet)
	}
	b.shot("policy-toggled")

	// The audit page lists the change; verifying from the page says what
	// the API says.
	b.gotoRoute("audit")
	b.waitFor("the audit entries", `document.getElementById("audit-list").innerText.includes("routing.peer_policy")`, 15*time.Second)
	row := eval[string](b, `Array.from(document.querySelectorAll("#audit-list tr")).map((r) => r.innerText).find((t) => t.includes("routing.peer_policy")) || ""`)
	if !strings.Contains(row, "phone") || !strings.Contains(row, adminUser) {
		t.Errorf("the audit row of the policy change %q: want the peer and the admin", row)
	}
	b.click("Verify the log")
	b.waitFor("the verdict", `!!document.getElementById("audit-verdict")`, 20*time.Second)
	verdict := eval[string](b, `document.getElementById("audit-verdict").innerText`)
	b.shot("audit-verified")
	v, err := api.AuditVerify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || !strings.Contains(verdict, "The log is intact") {
		t.Errorf("the page's verdict %q, the API's %+v: want both intact", verdict, v)
	}
	if !strings.Contains(verdict, v.PublicKey) {
		t.Errorf("the verdict %q does not show the audit key %s", verdict, v.PublicKey)
	}

	// The logs: a search finds the vault's certificate lines, as the API does.
	const look = "issued a certificate"
	b.gotoRoute("logs")
	b.fill("Look for", look)
	b.click("Search")
	b.waitFor("the search's answer", `!!document.getElementById("logs-results-count")`, 15*time.Second)
	count := eval[string](b, `document.getElementById("logs-results-count").innerText`)
	lines := eval[string](b, `(document.getElementById("logs-results-lines") || {}).innerText || ""`)
	b.shot("logs-search")
	apiLines, err := api.SearchLogs(t.Context(), look, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(apiLines) == 0 || !strings.Contains(count, "found") || strings.Count(lines, look) == 0 {
		t.Errorf("the logs search for %q: page says %q with %d matching lines, the API finds %d", look, count, strings.Count(lines, look), len(apiLines))
	}

	// The peer portal, as the person the admin gave the one-time password to.
	b.click("Sign out")
	b.waitFor("signed out", `location.hash.startsWith("#/login")`, 10*time.Second)
	b.rendered()
	login(b, "phone", otp)
	// The router holds it on the password page, whatever the address says.
	b.waitFor("the demand to choose a password", `!!document.getElementById("must-change") && !!document.getElementById("password-form")`, 10*time.Second)
	b.shot("peer-must-change")
	const peerPassword = "phone-own-pass-3e7a"
	changePassword(b, otp, peerPassword)
	b.waitFor("the portal", `location.hash === "#/portal" && !!document.getElementById("my-qr")`, 20*time.Second)
	b.waitFor("the portal's QR code loaded", `(() => { const i = document.getElementById("my-qr"); return i.complete && i.naturalWidth > 0; })()`, 15*time.Second)
	b.waitFor("the portal's credentials", `document.getElementById("my-credentials").children.length > 0`, 15*time.Second)
	portal := b.shot("portal")
	ctx, cancel = context.WithTimeout(b.ctx, 10*time.Second)
	myQR, err := chromedp.Run(ctx, chromedp.ScreenshotScale(chromedp.ID("my-qr"), 2))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeQR(t, myQR, filepath.Join(b.shots, "portal-qr.png")); got != want && got != strings.TrimSuffix(want, "\n") {
		t.Errorf("the portal's QR code (%s) reads %q, want the peer's config %q", portal, got, want)
	}
	b.run("show the config as text", chromedp.Click(chromedp.CSS("#my-config-details summary")))
	b.waitFor("the config text", `document.getElementById("my-config").textContent.length > 0`, 10*time.Second)
	if text := eval[string](b, `document.getElementById("my-config").textContent`); text != want {
		t.Errorf("the portal's config text %q, want %q", text, want)
	}
	peer := c.client()
	c.login(peer, "phone", peerPassword)
	creds, err := peer.MyServiceCredentials(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	shown := eval[string](b, `document.getElementById("my-credentials").innerText`)
	if len(creds) == 0 && !strings.Contains(shown, "no service account") {
		t.Errorf("the API lists no credentials for the peer, the portal shows %q", shown)
	}
	for _, cr := range creds {
		if !strings.Contains(shown, cr.Username) {
			t.Errorf("the portal does not show %s's username %q: %q", cr.Service, cr.Username, shown)
		}
	}
}
