// Command healthd stands in for the cell daemon in image tests that are about the
// firmware, not the daemon: it answers GET /health like the daemon does, can be
// told never to become healthy (-unhealthy) to exercise a rollback, and offers the
// device's update install on POST /update (no login: test images only) through
// the same firmware/update.Device the daemon's API uses.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/pic-cell/cell/firmware/update"
)

func main() {
	listen := flag.String("listen", "0.0.0.0:80", "address to serve on")
	unhealthy := flag.Bool("unhealthy", false, "exit at once, as a broken daemon would")
	healthyAfter := flag.Duration("healthy-after", 0, "answer /health with 503 for this long after start, as a slow daemon would")
	flag.Parse()
	start := time.Now()
	if *unhealthy {
		log.Print("healthd: told to be unhealthy")
		os.Exit(1)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	dev, err := update.OpenDevice(logger)
	if err != nil {
		log.Printf("healthd: no firmware: %v", err)
	}
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	http.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		if time.Since(start) < *healthyAfter {
			writeJSON(w, 503, map[string]any{"ok": false})
			return
		}
		writeJSON(w, 200, map[string]any{"ok": true})
	})
	if dev != nil {
		http.HandleFunc("GET /info", func(w http.ResponseWriter, r *http.Request) {
			info, err := dev.Info()
			if err != nil {
				writeJSON(w, 500, map[string]string{"error": err.Error()})
				return
			}
			writeJSON(w, 200, info)
		})
		http.HandleFunc("GET /update", func(w http.ResponseWriter, r *http.Request) {
			st, err := dev.Status()
			if err != nil {
				writeJSON(w, 500, map[string]string{"error": err.Error()})
				return
			}
			writeJSON(w, 200, st)
		})
		http.HandleFunc("POST /update", func(w http.ResponseWriter, r *http.Request) {
			m, err := dev.Install(r.Context(), r.Body, dev.MaxBundle())
			if err != nil {
				writeJSON(w, 400, map[string]string{"error": err.Error()})
				return
			}
			writeJSON(w, 200, m)
		})
	}
	log.Fatal(http.ListenAndServe(*listen, nil))
}
