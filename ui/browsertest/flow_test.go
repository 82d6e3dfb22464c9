package browsertest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// wizard completes setup through the pages as a person does: the setup code
// from the card, each step's fields by their labels, Finish, and lands on the
// sign-in page.
func wizard(b *browser, c *cell) {
	b.t.Helper()
	b.open("#/")
	b.waitText("Set up your cell")
	b.shot("setup-code")
	b.fill("Setup code", c.setupCode())
	b.click("Continue")

	b.fill("Admin username", adminUser)
	b.fill("Admin password", adminPassword)
	b.fill("Repeat the password", adminPassword)
	b.shot("setup-admin")
	b.click("Save and continue")

	b.fill("Cell name", "home")
	b.fill("Domain", "home.example.org")
	b.click("Save and continue")

	// Another cell's test may hold the default port.
	b.fill("WireGuard port (UDP)", fmt.Sprint(freeUDPPort(b.t)))
	b.shot("setup-network")
	b.click("Save and continue")

	b.click("Finish setup")
	b.waitFor("the sign-in page after setup", `location.hash.startsWith("#/login")`, 60*time.Second)
	b.rendered()
	b.shot("after-setup")
}

// login signs in through the sign-in page.
func login(b *browser, user, password string) {
	b.t.Helper()
	if !strings.HasPrefix(eval[string](b, `location.hash`), "#/login") {
		b.open("#/login")
	}
	b.fill("Username", user)
	b.fill("Password", password)
	b.click("Sign in")
	b.waitFor("signed in", `!location.hash.startsWith("#/login") && !!document.querySelector("nav, main h1")`, 20*time.Second)
	b.rendered()
}

// TestSetupAndLoginInTheBrowser: a fresh cell is set up through the wizard's
// pages with the code from its data folder, the admin signs in with the
// password chosen there, and the API agrees (setup complete, the admin's
// session works).
func TestSetupAndLoginInTheBrowser(t *testing.T) {
	needChromium(t)
	c := startCell(t)
	b := newBrowser(t, c)
	wizard(b, c)
	login(b, adminUser, adminPassword)
	b.shot("dashboard")
	if h := eval[string](b, `location.hash`); h != "#/dashboard" {
		t.Errorf("after sign-in the admin is at %q, want #/dashboard", h)
	}
	// The API agrees: setup is complete and the password is the one typed.
	api := c.client()
	c.login(api, adminUser, adminPassword)
	st, err := api.SetupStatus(t.Context())
	if err != nil || !st.Complete {
		t.Errorf("setup status after the wizard: %+v %v", st, err)
	}
	if v := b.cspViolations(); len(v) > 0 {
		t.Errorf("CSP violations: %v", v)
	}
}
