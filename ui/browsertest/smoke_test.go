package browsertest

import (
	"strings"
	"testing"
)

// TestAppOverTheFront: the app loads through the front over HTTPS with the
// vault's certificate (Chromium trusts only its keys), a fresh cell shows
// the wizard whatever route was asked for, and nothing on the way logs an
// error or breaks the CSP.
func TestAppOverTheFront(t *testing.T) {
	needChromium(t)
	c := startCell(t)
	b := newBrowser(t, c)
	b.open("#/peers")
	b.shot("fresh-cell")
	if proto := eval[string](b, `location.protocol`); proto != "https:" {
		t.Errorf("protocol %q, want https:", proto)
	}
	if h1 := eval[string](b, `document.querySelector("main h1").textContent`); !strings.Contains(strings.ToLower(h1), "set up") {
		t.Errorf("a fresh cell at #/peers shows %q, want the setup wizard", h1)
	}
	if v := b.cspViolations(); len(v) > 0 {
		t.Errorf("CSP violations: %v", v)
	}
}
