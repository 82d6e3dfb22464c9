// Command filesplaceholder stands in for ./images/files while that service is
// written: it answers /healthz on :8080 so that an image built from it runs.
package main

import (
	"log"
	"net/http"
)

func main() {
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	log.Fatal(http.ListenAndServe(":8080", nil))
}
