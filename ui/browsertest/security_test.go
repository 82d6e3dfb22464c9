package browsertest

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
)

// otherOrigin serves body at / on a loopback port of its own: a page of
// another origin than the cell's front.
func otherOrigin(t *testing.T, body string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, body)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String() + "/"
}

// frameURLs are the URLs of the top page's child frames, as Chromium holds
// them (a frame whose load was blocked shows Chromium's error page, and its
// unreachable URL is the one asked for).
func frameURLs(b *browser) map[string]string {
	b.t.Helper()
	tree, err := chromedp.Call(b.ctx, page.GetFrameTree, cdp.Empty{})
	if err != nil {
		b.t.Fatal(err)
	}
	got := map[string]string{}
	for _, ch := range tree.FrameTree.ChildFrames {
		got[ch.Frame.Name] = ch.Frame.URL
	}
	return got
}

// TestFramedByAnotherOriginDoesNotRender: a page of another origin frames
// the app; the front's frame-ancestors 'none' (and X-Frame-Options DENY)
// keep it from rendering, while the same page frames a plain page of its
// own fine (so the check could fail). The headers are checked as sent, too.
func TestFramedByAnotherOriginDoesNotRender(t *testing.T) {
	needChromium(t)
	c := startCell(t)
	res, err := c.httpClient().Get(c.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("the app's Content-Security-Policy is %q, want default-src 'self' and frame-ancestors 'none'", csp)
	}
	if xfo := res.Header.Get("X-Frame-Options"); !strings.EqualFold(xfo, "DENY") {
		t.Errorf("X-Frame-Options %q, want DENY", xfo)
	}

	plain := otherOrigin(t, `<!doctype html><title>plain</title><p id="plain">a plain page</p>`)
	framer := otherOrigin(t, fmt.Sprintf(`<!doctype html><title>framer</title>
<iframe name="cell" src="%s" width="600" height="400"></iframe>
<iframe name="plain" src="%s" width="300" height="200"></iframe>`, c.url("/"), plain))

	b := newBrowser(t, c)
	b.allow(`frame-ancestors|X-Frame-Options|Refused to (display|frame)`)
	b.run("open the framing page", chromedp.Navigate(framer))
	var got map[string]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = frameURLs(b)
		if got["plain"] == plain && len(b.seen(`frame-ancestors|X-Frame-Options`)) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.shot("framed")
	if got["plain"] != plain {
		t.Fatalf("the control frame holds %q, want %q: framing itself does not work here", got["plain"], plain)
	}
	if strings.HasPrefix(got["cell"], c.url("")) {
		t.Errorf("the app framed by %s loaded in the frame (%q): want it blocked", framer, got["cell"])
	}
	// A cross-origin frame that loads is a target of its own (site
	// isolation): none may hold the app.
	targets, err := chromedp.CallBrowser(b.ctx, target.GetTargets, target.GetTargetsParams{})
	if err != nil {
		t.Fatal(err)
	}
	framed := 0
	for _, ti := range targets.TargetInfos {
		if ti.Type != "iframe" || !strings.HasPrefix(ti.URL, c.url("")) {
			continue
		}
		framed++
		// The frame keeps the URL it was asked for; its document is
		// Chromium's error page, not the app.
		fctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithTargetID(ti.TargetID))
		doc, err := chromedp.Run(fctx, chromedp.Evaluate[string](`location.href + " | " + document.title + " | main:" + !!document.getElementById("main")`))
		cancel()
		t.Logf("the framed app's document: %s (%v)", doc, err)
		if err != nil || strings.Contains(doc, "main:true") || strings.Contains(doc, "Personal Internet Cell") {
			t.Errorf("the app framed by another origin rendered: %s %v", doc, err)
		}
	}
	if framed == 0 {
		t.Errorf("no frame target for the app: the check above saw nothing")
	}
	// And Chromium says why.
	if seen := b.seen(`frame-ancestors|X-Frame-Options`); len(seen) == 0 {
		t.Errorf("Chromium reported no refusal of the frame (frame-ancestors / X-Frame-Options)")
	} else {
		t.Logf("refused: %s", seen[0])
	}
	t.Logf("frames: %v", got)
}

// TestCSPIsEnforced: the pages run under the front's CSP, and the browser
// does enforce it: an inline script a page could add is refused and reported
// (so the tests' CSP check sees a violation when there is one).
func TestCSPIsEnforced(t *testing.T) {
	needChromium(t)
	c := startCell(t)
	b := newBrowser(t, c)
	b.allow(`Content Security Policy|inline script`)
	b.open("#/")
	b.waitText("Set up your cell")
	if v := b.cspViolations(); len(v) > 0 {
		t.Fatalf("the wizard breaks the CSP: %v", v)
	}
	eval[bool](b, `(() => { const s = document.createElement("script"); s.textContent = "window.__inlineRan = true"; document.body.append(s); return true; })()`)
	b.waitFor("the violation reported", `window.__csp.length > 0`, 5*time.Second)
	if ran := eval[bool](b, `window.__inlineRan === true`); ran {
		t.Errorf("an inline script ran under the front's CSP")
	}
	t.Logf("reported: %v", b.cspViolations())
}
