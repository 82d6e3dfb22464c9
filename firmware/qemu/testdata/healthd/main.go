// Command healthd stands in for the cell daemon in image tests that are about the
// firmware, not the daemon: it answers GET /health like the daemon does, and can
// be told never to become healthy (-unhealthy) to exercise a rollback.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	listen := flag.String("listen", "0.0.0.0:80", "address to serve on")
	version := flag.String("version", "", "version to report")
	unhealthy := flag.Bool("unhealthy", false, "exit at once, as a broken daemon would")
	flag.Parse()
	if *unhealthy {
		log.Print("healthd: told to be unhealthy")
		os.Exit(1)
	}
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"ok":true,"version":%q}`+"\n", *version)
	})
	log.Fatal(http.ListenAndServe(*listen, nil))
}
