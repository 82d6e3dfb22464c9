package ui

import (
	"io"
	"io/fs"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	h := Handler()
	for _, c := range []struct {
		method, path string
		status       int
		contains     string
	}{
		{"GET", "/", 200, `<script type="module" src="/js/app.js">`},
		{"GET", "/peers", 200, `<main id="main"`}, // a deep link is the app
		{"GET", "/js/app.js", 200, "hashchange"},
		{"GET", "/app.css", 200, "--accent"},
		{"GET", "/js/nothing.js", 404, ""},
		{"GET", "/../ui.go", 404, ""}, // cleaned to /ui.go, which is no file of the app
		{"POST", "/", 405, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != c.status || !strings.Contains(string(body), c.contains) {
			t.Errorf("%s %s: %d %.80q, want %d containing %q", c.method, c.path, rec.Code, body, c.status, c.contains)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("index.html Cache-Control %q, want no-store (a new firmware's app loads at once)", rec.Header().Get("Cache-Control"))
	}
}

// The front's CSP is default-src 'self': no inline script, no inline style,
// no handler attribute, nothing from another origin.
func TestNoInlineOrForeignCode(t *testing.T) {
	bad := []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`),          // an inline script
		regexp.MustCompile(`\sstyle\s*=`),                            // an inline style attribute
		regexp.MustCompile(`<style`),                                 // an inline style sheet
		regexp.MustCompile(`\son[a-z]+\s*=\s*["']`),                  // a handler attribute
		regexp.MustCompile(`(?:src|href)\s*=\s*["']?(?:https?:)?//`), // another origin
		regexp.MustCompile(`innerHTML\s*=`),                          // HTML parsed from data
		regexp.MustCompile(`\beval\(|new Function\(`),
	}
	err := fs.WalkDir(Files(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(Files(), p)
		if err != nil {
			return err
		}
		for _, re := range bad {
			if loc := re.FindIndex(b); loc != nil {
				t.Errorf("%s: %q breaks the CSP or the no-outside-code rule", p, b[loc[0]:min(loc[1]+20, len(b))])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Every module is preloaded by index.html: a module missing from the list
// costs the first load a round trip per import level.
func TestEveryModulePreloaded(t *testing.T) {
	index, err := fs.ReadFile(Files(), "index.html")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = fs.WalkDir(Files(), "js", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".js") {
			return err
		}
		n++
		if !strings.Contains(string(index), `<link rel="modulepreload" href="/`+p+`">`) {
			t.Errorf("index.html does not preload %s", p)
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("walked %d modules: %v", n, err)
	}
}
