package browsertest

import (
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/pic-cell/cell/httpapi/client"
)

// overflow is how far the page is wider than the screen (0: it fits; a
// table may scroll inside its own box, the page may not scroll sideways),
// and the widest offending element.
const overflow = `(() => {
  const over = document.documentElement.scrollWidth - window.innerWidth;
  let worst = "";
  if (over > 0) {
    let max = window.innerWidth;
    for (const el of document.querySelectorAll("body *")) {
      const r = el.getBoundingClientRect();
      if (r.right > max && !el.closest(".table-wrap")) { max = r.right; worst = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.className ? "." + String(el.className).split(" ").join(".") : ""); }
    }
  }
  return JSON.stringify({ over, worst });
})()`

// TestPhoneScreen: on a phone's screen (390×844, touch, the device's pixel
// ratio) every page fits the width: nothing makes the page scroll sideways.
// The screenshots are the phone's view of each page.
func TestPhoneScreen(t *testing.T) {
	needChromium(t)
	c := startCell(t)
	api := c.setUp()
	created, err := api.CreatePeer(t.Context(), client.NewPeer{Name: "phone", Description: "Alex's phone with a rather long description"})
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, c)
	b.run("phone screen", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(3), chromedp.EmulateMobile, chromedp.EmulateTouch))
	check := func(page string) {
		t.Helper()
		b.waitFor("the page "+page+" idle", `!document.querySelector("[aria-busy=true], main p.loading")`, 15e9)
		got := eval[string](b, overflow)
		b.shot("phone-" + page)
		if got != `{"over":0,"worst":""}` {
			t.Errorf("on a phone, %s is wider than the screen: %s", page, got)
		}
	}
	b.open("#/login")
	check("login")
	login(b, adminUser, adminPassword)
	for _, r := range adminRoutes {
		b.gotoRoute(r)
		check(r)
	}
	b.click("Sign out")
	b.waitFor("signed out", `location.hash.startsWith("#/login")`, 10e9)
	b.rendered()
	login(b, created.Username, string(created.OneTimePassword))
	changePassword(b, string(created.OneTimePassword), "phone-own-pass-0b1d")
	b.gotoRoute("portal")
	check("portal")
}
