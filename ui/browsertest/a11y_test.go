package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pic-cell/cell/httpapi/client"
)

// axeViolation is one rule axe-core found broken, with the nodes that break it.
type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target  []any  `json:"target"`
		Summary string `json:"failureSummary"`
	} `json:"nodes"`
}

// axe runs axe-core (testdata/axe.min.js, injected with DevTools: the app's
// CSP does not apply to it) on the page as it is now, and returns the
// violations of impact serious or critical, and the count of all of them.
func axe(b *browser) (bad []axeViolation, all int) {
	b.t.Helper()
	if !eval[bool](b, `typeof window.axe === "object"`) {
		src, err := os.ReadFile("testdata/axe.min.js")
		if err != nil {
			b.t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		_, err = chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](string(src)))
		cancel()
		if err != nil {
			b.t.Fatalf("injecting axe-core: %v", err)
		}
	}
	raw := eval[string](b, `axe.run(document, {resultTypes: ["violations"]}).then((r) => JSON.stringify(r.violations))`)
	var vs []axeViolation
	if err := json.Unmarshal([]byte(raw), &vs); err != nil {
		b.t.Fatalf("axe's answer: %v", err)
	}
	for _, v := range vs {
		if v.Impact == "serious" || v.Impact == "critical" {
			bad = append(bad, v)
		}
	}
	return bad, len(vs)
}

func (v axeViolation) String() string {
	var nodes []string
	for i, n := range v.Nodes {
		if i == 5 {
			nodes = append(nodes, fmt.Sprintf("… %d more", len(v.Nodes)-5))
			break
		}
		nodes = append(nodes, fmt.Sprintf("%v: %s", n.Target, strings.ReplaceAll(n.Summary, "\n", " ")))
	}
	return fmt.Sprintf("%s (%s) %s\n\t\t%s", v.ID, v.Impact, v.Help, strings.Join(nodes, "\n\t\t"))
}

// checkAxe fails the test on the page's serious and critical violations.
func checkAxe(t *testing.T, b *browser, page string) {
	t.Helper()
	// Let a page that loads in parts settle (its calls answered).
	b.waitFor("the page "+page+" idle", `!document.querySelector("[aria-busy=true], main p.loading")`, 15*time.Second)
	time.Sleep(300 * time.Millisecond)
	bad, all := axe(b)
	b.shot("axe-" + page)
	for _, v := range bad {
		t.Errorf("axe on %s: %s", page, v)
	}
	t.Logf("axe on %s: %d violations, %d serious or critical", page, all, len(bad))
}

// gotoRoute navigates within the app (a hash change, so axe stays loaded)
// and waits until the new page replaced the old one. The marking and the
// navigation are one script, so the app cannot navigate in between; at the
// route already, a query the pages ignore makes the hash change anyway.
func (b *browser) gotoRoute(route string) {
	b.t.Helper()
	eval[bool](b, fmt.Sprintf(`(() => {
  for (const c of document.querySelector("main").children) c.__btOld = true;
  const want = %q;
  location.hash = location.hash === want ? want + "?bt=" + Date.now() : want;
  return true;
})()`, "#/"+route))
	b.waitFor("the page "+route, `(() => { const m = document.querySelector("main"); return m.children.length > 0 && !Array.from(m.children).some((c) => c.__btOld) && !m.querySelector(":scope > p.loading"); })()`, 20*time.Second)
}

// adminRoutes are the admin's pages (pages/index.js), in the navigation's order.
var adminRoutes = []string{"dashboard", "peers", "routing", "dns", "network", "services", "containers", "audit", "logs", "vault", "system", "account"}

// TestAccessibilityAxe: axe-core finds no serious or critical violation on
// any page: the wizard, the sign-in, every admin page, and the peer's
// password page and portal.
func TestAccessibilityAxe(t *testing.T) {
	needChromium(t)
	c := startCell(t)
	b := newBrowser(t, c)
	b.open("#/")
	b.waitText("Set up your cell")
	checkAxe(t, b, "setup")

	api := c.setUp()
	b.open("#/login")
	checkAxe(t, b, "login")
	login(b, adminUser, adminPassword)
	for _, r := range adminRoutes {
		b.gotoRoute(r)
		checkAxe(t, b, r)
	}

	// The peer: its one-time password first (the password page, which holds
	// it until it chose its own), then its portal.
	created, err := api.CreatePeer(t.Context(), client.NewPeer{Name: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	b.click("Sign out")
	b.waitFor("signed out", `location.hash.startsWith("#/login")`, 10*time.Second)
	b.rendered()
	login(b, created.Username, string(created.OneTimePassword))
	b.waitFor("the demand to choose a password", `!!document.getElementById("must-change")`, 10*time.Second)
	checkAxe(t, b, "peer-account")
	changePassword(b, string(created.OneTimePassword), "peer-own-pass-9d2f")
	b.gotoRoute("portal")
	checkAxe(t, b, "portal")
}

// changePassword replaces the signed-in user's password on the password page.
func changePassword(b *browser, current, next string) {
	b.t.Helper()
	if h := eval[string](b, `location.hash`); !strings.HasPrefix(h, "#/account") {
		b.gotoRoute("account")
	}
	must := eval[bool](b, `!!document.getElementById("must-change")`)
	label := "Current password"
	if must {
		label = "One-time password"
	}
	b.fill(label, current)
	b.fill("New password", next)
	b.fill("Repeat the new password", next)
	b.click("Change password")
	b.waitText("Your password is changed")
	if must {
		// The app then takes the user on to their start page by itself.
		b.waitFor("the start page after the password", `!document.getElementById("password-form") && !document.querySelector("main > p.loading")`, 20*time.Second)
	}
}
