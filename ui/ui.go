// Package ui is the browser admin and the peer portal: plain ES modules, HTML
// and CSS with no build step, embedded in the cell's binary and served at /
// (by the API's listener, and so through the front). Every page uses the
// public API with the session cookie and the CSRF header; nothing here reaches
// the cell any other way.
//
// No script or style is inline (the front's Content-Security-Policy is
// default-src 'self'), nothing is fetched from outside (the cell works
// offline), and a path that names no file is the app itself (index.html), so
// a reload of #/peers or a deep link lands on the app.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed static
var static embed.FS

// Files are the app's files, rooted at the served path.
func Files() fs.FS {
	f, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed above names it: a broken build
	}
	return f
}

// Handler serves the app: files by path, index.html for every other path
// without an extension. index.html is never cached (a new firmware's app
// loads at once); the rest revalidates by its modification time.
func Handler() http.Handler {
	files := Files()
	srv := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := path.Clean("/" + r.URL.Path)
		if p == "/" || path.Ext(p) == "" {
			w.Header().Set("Cache-Control", "no-store")
			http.ServeFileFS(w, r, files, "index.html")
			return
		}
		if _, err := fs.Stat(files, strings.TrimPrefix(p, "/")); err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		srv.ServeHTTP(w, r)
	})
}
