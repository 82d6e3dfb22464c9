package browsertest

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/pic-cell/cell/httpapi/client"
)

// choose picks value in the select labelled label and tells the page, as a
// person's choice does (the change event).
func (b *browser) choose(label, value string) {
	b.t.Helper()
	id := b.labelled(label)
	ok := eval[bool](b, fmt.Sprintf(`(() => {
  const s = document.getElementById(%q);
  if (!s || ![...s.options].some((o) => o.value === %q)) return false;
  s.value = %q;
  s.dispatchEvent(new Event("change", { bubbles: true }));
  return true;
})()`, string(id), value, value))
	if !ok {
		b.fail("choose "+value+" in "+label, fmt.Errorf("the select has no such option"))
	}
}

// refill empties the field labelled label and types text into it.
// chromedp's Clear empties a field's value attribute, which no longer
// counts once a person (or the page) has changed the field.
func (b *browser) refill(label, text string) {
	b.t.Helper()
	id := b.labelled(label)
	eval[bool](b, fmt.Sprintf(`(() => { const el = document.getElementById(%q); el.value = ""; el.dispatchEvent(new Event("input", { bubbles: true })); return true; })()`, string(id)))
	b.run("type into "+label, chromedp.SendKeys(id, text))
}

// text is the visible text of the element with the id ("" when absent).
func (b *browser) text(id string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.getElementById(%q) || {}).innerText || ""`, id))
}

// networkView is the part of GET /api/network and /api/network/ddns the
// test compares the page with.
type networkView struct {
	Endpoint struct {
		Endpoint string `json:"endpoint"`
		Source   string `json:"source"`
	} `json:"endpoint"`
	ResendConfigs []string `json:"resend_configs"`
	Warnings      []string `json:"warnings"`
}

type ddnsView struct {
	Provider  string `json:"provider"`
	Hostname  string `json:"hostname"`
	Server    string `json:"server"`
	SecretSet bool   `json:"secret_set"`
}

// TestNetworkPage: the admin's Network page against a real daemon. The
// endpoint and its "does not resolve" warning as the API says; a changed
// endpoint marks an existing peer's config outdated on the peers page and
// lists it under resend here, and its link shows that peer's config again
// (which clears the mark); an endpoint with a port out of range is refused
// with the API's words and nothing changes; dynamic DNS with a hostile
// hostname shows the API's refusal (as text, never as markup) and stores
// nothing; a valid RFC 2136 setting with a secret says a secret is stored,
// and the secret is nowhere in the page, not even in the field that took it;
// a diagnostics test of a forbidden target (169.254.1.1), typed and
// submitted by keyboard, shows the 400's message; axe finds nothing serious.
func TestNetworkPage(t *testing.T) {
	needChromium(t)
	c := startCell(t)
	api := c.setUp()
	ctx := t.Context()
	if _, err := api.CreatePeer(ctx, client.NewPeer{Name: "phone"}); err != nil {
		t.Fatal(err)
	}
	var before networkView
	if err := api.Do(ctx, "GET", "/api/network", nil, &before); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(before.Endpoint.Endpoint, "home.example.org:") || len(before.ResendConfigs) != 0 {
		t.Fatalf("GET /api/network before: endpoint %q, resend %v: want the domain and nobody to resend", before.Endpoint.Endpoint, before.ResendConfigs)
	}

	b := newBrowser(t, c)
	b.open("#/login")
	login(b, adminUser, adminPassword)

	// By the navigation's link, as a person finds the page.
	b.click("Network")
	b.waitFor("the network page", `location.hash === "#/network" && !!document.getElementById("net-endpoint")`, 20*time.Second)
	if got := b.text("net-endpoint"); got != before.Endpoint.Endpoint {
		t.Errorf("the page shows the endpoint %q, the API %q", got, before.Endpoint.Endpoint)
	}
	if src := b.text("net-endpoint-source"); !strings.Contains(src, "domain") {
		t.Errorf("the endpoint's source reads %q: want it to say it is the domain", src)
	}
	warnings := b.text("net-warnings")
	if !strings.Contains(warnings, "home.example.org does not resolve") {
		t.Errorf("the warnings %q: want the endpoint's name not resolving", warnings)
	}
	for _, w := range before.Warnings {
		if !strings.Contains(warnings, w) {
			t.Errorf("the page does not show the API's warning %q (it shows %q)", w, warnings)
		}
	}
	b.shot("network")
	checkAxe(t, b, "network")

	// The outside settings: a URL that is not http(s) is refused with the
	// API's words and nothing changes; then the port mapping off and an
	// address-discovery URL are stored, and the page says the router is not
	// asked.
	portMap := b.labelled("Ask the home router to forward the port")
	if !eval[bool](b, `document.getElementById("`+string(portMap)+`").checked`) {
		t.Errorf("the port mapping's box is not ticked: the default is on")
	}
	b.run("untick the port mapping", chromedp.Click(portMap))
	b.refill("Echo service URL (optional)", "ftp://echo.example.net/")
	b.click("Save these settings")
	b.waitFor("the echo URL refused", `document.getElementById("net-reach-error").innerText.includes("outside.echo_url")`, 15*time.Second)
	var outside struct {
		Outside struct {
			PortMapping      bool   `json:"port_mapping"`
			PublicAddressURL string `json:"public_address_url"`
			EchoURL          string `json:"echo_url"`
		} `json:"outside"`
	}
	if err := api.Do(ctx, "GET", "/api/config", nil, &outside); err != nil {
		t.Fatal(err)
	}
	if !outside.Outside.PortMapping || outside.Outside.EchoURL != "" {
		t.Errorf("after a refused echo URL the config's outside is %+v: want it unchanged", outside.Outside)
	}
	b.refill("Echo service URL (optional)", "")
	b.refill("Address-discovery URL (optional)", "https://ip.example.net/")
	b.click("Save these settings")
	b.waitFor("the port mapping off", `document.getElementById("net-portmap-facts").innerText.includes("off (the port is forwarded by hand)")`, 15*time.Second)
	if e := b.text("net-reach-error"); e != "" {
		t.Errorf("the settings' error box says %q after a save that worked", e)
	}
	if err := api.Do(ctx, "GET", "/api/config", nil, &outside); err != nil {
		t.Fatal(err)
	}
	if outside.Outside.PortMapping || outside.Outside.PublicAddressURL != "https://ip.example.net/" {
		t.Errorf("after the save the config's outside is %+v: want the port mapping off and the URL", outside.Outside)
	}

	// An endpoint with a port out of range: the API's words, nothing stored.
	b.refill("Endpoint (public name or address)", "home.example.org:99999")
	b.click("Save endpoint")
	b.waitFor("the endpoint refused", `document.getElementById("net-endpoint-error").innerText.includes("65535")`, 15*time.Second)
	var same networkView
	if err := api.Do(ctx, "GET", "/api/network", nil, &same); err != nil {
		t.Fatal(err)
	}
	if same.Endpoint.Endpoint != before.Endpoint.Endpoint || same.Endpoint.Source != "domain" {
		t.Errorf("after a refused endpoint the API's endpoint is %q (%s): want %q unchanged", same.Endpoint.Endpoint, same.Endpoint.Source, before.Endpoint.Endpoint)
	}

	// A new endpoint: the peer made before must be sent its config again.
	const newEndpoint = "198.51.100.7:51820"
	b.refill("Endpoint (public name or address)", newEndpoint)
	b.click("Save endpoint")
	b.waitFor("the devices to resend", `!!document.getElementById("net-resend") && document.getElementById("net-endpoint").innerText === "`+newEndpoint+`"`, 15*time.Second)
	if resend := b.text("net-resend"); !strings.Contains(resend, "phone") {
		t.Errorf("the resend list %q: want phone", resend)
	}
	if e := b.text("net-endpoint-error"); e != "" {
		t.Errorf("the endpoint's error box still says %q after a change that worked", e)
	}
	b.shot("network-resend")
	p, err := api.Peer(ctx, "phone")
	if err != nil {
		t.Fatal(err)
	}
	if !p.ConfigOutdated {
		t.Fatalf("the API does not mark phone's config outdated after the endpoint changed")
	}
	b.gotoRoute("peers")
	b.waitFor("the outdated mark", `!!document.getElementById("peer-outdated-phone")`, 15*time.Second)
	if mark := b.text("peer-outdated-phone"); mark != "config outdated: send again" {
		t.Errorf("the peer's mark reads %q", mark)
	}
	b.shot("peers-outdated")

	// The network page's link shows the peer's new config; that hands it
	// out, and the mark goes.
	b.gotoRoute("network")
	b.click("Send phone its config")
	b.waitFor("the peer's QR code", `(() => { const i = document.getElementById("peer-qr"); return !!i && i.complete && i.naturalWidth > 0; })()`, 15*time.Second)
	if p, err = api.Peer(ctx, "phone"); err != nil || p.ConfigOutdated {
		t.Errorf("after the page showed phone's QR code the API says outdated=%v (%v): want the new config handed out", p.ConfigOutdated, err)
	}
	b.click("Done")
	b.waitFor("the mark gone", `!!document.getElementById("peer-row-phone") && !document.getElementById("peer-outdated-phone")`, 15*time.Second)

	// Dynamic DNS with a hostile hostname: the API's refusal, as text.
	b.gotoRoute("network")
	const hostile = `evil<img src=x id=injected>;rm -rf /.example.org`
	secret := base64.StdEncoding.EncodeToString([]byte("ui-test-secret-never-shown-0042!"))
	b.choose("Provider", "rfc2136")
	b.refill("Name kept up to date (optional)", hostile)
	b.refill("DNS server (the zone's primary)", "198.18.0.53")
	b.refill("Zone", "example.org")
	b.refill("TSIG key name", "cell-key")
	b.refill("TSIG key secret (base64)", secret)
	b.click("Save dynamic DNS")
	b.waitFor("the hostname refused", `document.getElementById("net-ddns-error").innerText.includes("ddns.hostname must be a DNS name")`, 15*time.Second)
	if n := eval[int](b, `document.querySelectorAll("#injected, #net-ddns-error img").length`); n != 0 {
		t.Errorf("the hostile hostname became %d element(s) in the page: the error must be text", n)
	}
	if !strings.Contains(b.text("net-ddns-error"), "<img src=x id=injected>") {
		t.Errorf("the error %q does not show the refused name as text", b.text("net-ddns-error"))
	}
	var d ddnsView
	if err := api.Do(ctx, "GET", "/api/network/ddns", nil, &d); err != nil {
		t.Fatal(err)
	}
	if d.Provider != "off" || d.SecretSet {
		t.Errorf("after the refusal the API has provider %q, secret stored %v: want nothing stored", d.Provider, d.SecretSet)
	}
	b.shot("ddns-refused")

	// A valid RFC 2136 setting with its secret.
	b.refill("Name kept up to date (optional)", "home.example.org")
	b.refill("TSIG key secret (base64)", secret)
	b.click("Save dynamic DNS")
	b.waitFor("the secret stored", `document.getElementById("net-ddns-secret-state").innerText.includes("A secret is stored")`, 15*time.Second)
	if e := b.text("net-ddns-error"); e != "" {
		t.Errorf("the ddns error box says %q after a save that worked", e)
	}
	if err := api.Do(ctx, "GET", "/api/network/ddns", nil, &d); err != nil {
		t.Fatal(err)
	}
	if d.Provider != "rfc2136" || d.Hostname != "home.example.org" || d.Server != "198.18.0.53" || !d.SecretSet {
		t.Errorf("the API's ddns after the save: %+v", d)
	}
	noSecret := func(when string) {
		t.Helper()
		found := eval[bool](b, fmt.Sprintf(`(() => {
  const s = %q;
  if (document.documentElement.outerHTML.includes(s) || document.body.innerText.includes(s)) return true;
  return [...document.querySelectorAll("input, textarea, select")].some((el) => String(el.value).includes(s));
})()`, secret))
		if found {
			t.Errorf("%s: the secret is in the page", when)
		}
	}
	noSecret("after saving")
	b.click("Update now")
	b.waitText("tells the provider now")
	if e := b.text("net-ddns-error"); e != "" {
		t.Errorf("Update now: the page says %q", e)
	}
	// Opened again: the settings as stored, the secret field empty.
	b.gotoRoute("network")
	b.waitFor("the stored settings", `document.getElementById("net-ddns-provider").value === "rfc2136" && document.getElementById("net-ddns-server").value === "198.18.0.53"`, 15*time.Second)
	if st := b.text("net-ddns-secret-state"); !strings.Contains(st, "A secret is stored") {
		t.Errorf("opened again, the page says %q: want a secret stored", st)
	}
	if v := eval[string](b, `document.getElementById("net-ddns-secret").value`); v != "" {
		t.Errorf("the secret field holds %d characters: it must never be filled in", len(v))
	}
	noSecret("opened again")
	b.shot("ddns-stored")

	// Diagnostics by keyboard: a forbidden target, typed, Enter submits.
	b.typeInto("Target", "169.254.1.1")
	b.keys("Enter in the target", kb.Enter)
	b.waitFor("the refusal", `document.getElementById("net-test-result").innerText.includes("link-local")`, 15*time.Second)
	if r := b.text("net-test-result"); !strings.Contains(r, "169.254.1.1") {
		t.Errorf("the test's refusal %q does not name the target", r)
	}
	b.shot("test-refused")
	// The reachability test without an echo service: the 409's words.
	b.choose("Kind of test", "reachability")
	b.press("Run test")
	b.waitFor("the reachability refusal", `document.getElementById("net-test-result").innerText.includes("echo")`, 15*time.Second)
	checkAxe(t, b, "network-after")
}

// TestWizardShowsDescriptions: each wizard step and field shows the cell's
// own description; the network step explains the endpoint and that changing
// it means sending every device its config again.
func TestWizardShowsDescriptions(t *testing.T) {
	needChromium(t)
	c := startCell(t)
	b := newBrowser(t, c)
	b.open("#/")
	b.fill("Setup code", c.setupCode())
	b.click("Continue")
	b.waitFor("the admin step", `!!document.getElementById("setup-step-admin")`, 15*time.Second)
	if d := b.text("setup-step-admin-description"); !strings.Contains(d, "administrator") {
		t.Errorf("the admin step's description reads %q", d)
	}
	// The first two steps through the API; the page then shows the third.
	api := c.client()
	api.UseSetupCode(c.setupCode())
	for _, step := range []struct {
		name string
		data map[string]any
	}{
		{"admin", map[string]any{"username": adminUser, "password": adminPassword}},
		{"cell", map[string]any{"name": "home", "domain": "home.example.org"}},
	} {
		if _, err := api.SetupStep(context.Background(), step.name, step.data); err != nil {
			t.Fatalf("setup step %s: %v", step.name, err)
		}
	}
	// The code is still in the page's memory: the wizard goes on where the
	// cell is.
	b.gotoRoute("setup")
	b.waitFor("the network step", `!!document.getElementById("setup-step-network")`, 15*time.Second)
	if d := b.text("setup-step-network-description"); !strings.Contains(d, "endpoint") {
		t.Errorf("the network step's description reads %q: want it to name the endpoint", d)
	}
	hint := eval[string](b, `(() => { const i = document.getElementById("setup-endpoint"); const h = i && document.getElementById(i.getAttribute("aria-describedby")); return h ? h.innerText : ""; })()`)
	if !strings.Contains(hint, "sending every device its config again") {
		t.Errorf("the endpoint field's hint %q: want the cell's description of it", hint)
	}
	b.labelled("Endpoint (public name or address) (optional)")
	b.shot("wizard-network")
	checkAxe(t, b, "setup-network")
}
