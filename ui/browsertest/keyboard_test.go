package browsertest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// keys sends key presses to whatever has the focus, as a keyboard does.
func (b *browser) keys(what, keys string) {
	b.t.Helper()
	b.run(what, chromedp.KeyEvent(keys))
}

// focusedIs is a JavaScript test of the focused element: a control whose
// label reads label, or a button or link named name.
func focusedIs(label, name string) string {
	return fmt.Sprintf(`(() => {
  const norm = (s) => (s || "").replace(/\s+/g, " ").trim().replace(/[:*]$/, "").trim().toLowerCase();
  const el = document.activeElement;
  if (!el || el === document.body) return false;
  if (%q && el.labels && el.labels.length) return norm(el.labels[0].textContent) === %q.toLowerCase();
  if (%q) return norm(el.getAttribute("aria-label") || el.textContent || el.value) === %q.toLowerCase();
  return false;
})()`, label, label, name, name)
}

// tabTo presses Tab until the focus is on the control labelled label or the
// button or link named name (one of them empty), failing if it never gets
// there: what a keyboard cannot reach, a keyboard user cannot use.
func (b *browser) tabTo(label, name string) {
	b.t.Helper()
	want := label + name
	test := focusedIs(label, name)
	for i := 0; i < 60; i++ {
		if eval[bool](b, test) {
			return
		}
		b.keys("Tab", kb.Tab)
	}
	b.fail("tab to "+want, fmt.Errorf("60 presses of Tab never reached it; the focus is on %s",
		eval[string](b, `(() => { const e = document.activeElement; return e ? e.outerHTML.slice(0, 200) : "nothing"; })()`)))
}

// typeInto tabs to the field labelled label, empties it and types text.
func (b *browser) typeInto(label, text string) {
	b.t.Helper()
	b.tabTo(label, "")
	b.keys("clear "+label, kb.End+strings.Repeat(kb.Backspace, 12))
	if v := eval[string](b, `document.activeElement.value`); v != "" {
		b.fail("clear "+label, fmt.Errorf("still holds %q", v))
	}
	b.keys("type into "+label, text)
}

// press tabs to the button or link named name and presses Enter on it.
func (b *browser) press(name string) {
	b.t.Helper()
	b.tabTo("", name)
	b.keys("Enter on "+name, kb.Enter)
}

// TestKeyboardOnly: the wizard and adding a peer with key presses only (Tab,
// typing, Enter), no clicks: each control is reached with Tab, each button
// works with Enter, and the focus lands where the next step is.
func TestKeyboardOnly(t *testing.T) {
	needChromium(t)
	c := startCell(t)
	b := newBrowser(t, c)
	b.open("#/")
	b.waitText("Your setup code")

	b.typeInto("Setup code", c.setupCode())
	b.press("Continue")
	b.waitText("The admin account")
	b.typeInto("Admin username", adminUser)
	b.typeInto("Admin password", adminPassword)
	b.typeInto("Repeat the password", adminPassword)
	b.press("Save and continue")
	b.waitFor("the cell step", `!!document.getElementById("setup-step-cell")`, 10*time.Second)
	b.typeInto("Cell name", "home")
	b.typeInto("Domain", "home.example.org")
	b.keys("Enter in the form", kb.Enter) // Enter in a field submits its form
	b.waitFor("the network step", `!!document.getElementById("setup-step-network")`, 10*time.Second)
	b.typeInto("WireGuard port (UDP)", fmt.Sprint(freeUDPPort(t)))
	b.press("Save and continue")
	b.waitText("Every step is filled in")
	b.press("Finish setup")
	b.waitFor("the sign-in page", `location.hash.startsWith("#/login") && !!document.getElementById("login-form")`, 60*time.Second)

	b.typeInto("Username", adminUser)
	b.typeInto("Password", adminPassword)
	b.keys("Enter to sign in", kb.Enter)
	b.waitFor("the dashboard", `location.hash === "#/dashboard" && !document.querySelector("main p.loading")`, 20*time.Second)

	// To the peers page by the navigation's link, then add one.
	b.press("Peers")
	b.waitFor("the peers page", `!!document.getElementById("peer-add-form")`, 20*time.Second)
	b.typeInto("Name", "laptop")
	b.press("Add peer")
	b.waitText("laptop is added")
	b.shot("peer-added-by-keyboard")
	// The focus follows: it is in the new peer's box (or on it), not lost on the body.
	if where := eval[string](b, `(() => { const e = document.activeElement; return !e || e === document.body ? "body" : (e.closest("#peer-shown") ? "shown" : e.id || e.tagName); })()`); where == "body" {
		t.Errorf("after adding a peer the focus is on the page's body: a keyboard user starts over")
	}

	api := c.client()
	c.login(api, adminUser, adminPassword)
	p, err := api.Peer(t.Context(), "laptop")
	if err != nil {
		t.Fatalf("the peer added from the keyboard: %v", err)
	}
	if !p.Enabled {
		t.Errorf("peer %+v: want enabled", p)
	}
	if n := eval[int](b, `window.__mousedowns`); n != 0 {
		t.Errorf("the page saw %d mouse presses: want none", n)
	}
}
