// Command probe is the program of the test image: a static HTTP server that
// answers /healthz and reports what a container may do, so tests can check
// the sandbox from outside.
//
//	probe              probe serve :8080 (the image's entrypoint)
//	probe serve ADDR   serve /healthz, /status (the process's Cap lines), /exit?code=N
//	probe caps         print CapEff and whether / is writable, then exit 0
//	probe exit N       exit with status N at once
//	probe spam N       write N lines of 100 bytes to stdout, then serve :8080
package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func capLines() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "error: " + err.Error()
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Cap") || strings.HasPrefix(sc.Text(), "NoNewPrivs") || strings.HasPrefix(sc.Text(), "Seccomp:") {
			b.WriteString(sc.Text() + "\n")
		}
	}
	return b.String()
}

func rootWritable() string {
	if err := os.WriteFile("/probe-write-test", []byte("x"), 0o644); err != nil {
		return "rootfs: read-only (" + err.Error() + ")"
	}
	return "rootfs: writable"
}

func main() {
	if len(os.Args) < 2 {
		os.Args = append(os.Args, "serve", ":8080")
	}
	switch os.Args[1] {
	case "caps":
		fmt.Print(capLines())
		fmt.Println(rootWritable())
		host, _ := os.Hostname()
		fmt.Printf("hostname: %s\nuid: %d gid: %d\n", host, os.Getuid(), os.Getgid())
	case "spam":
		n, _ := strconv.Atoi(os.Args[2])
		line := strings.Repeat("x", 90)
		for i := 0; i < n; i++ {
			fmt.Printf("%08d %s\n", i, line)
		}
		fmt.Println("spam done")
		http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
		_ = http.ListenAndServe(":8080", nil)
	case "exit":
		n, _ := strconv.Atoi(os.Args[2])
		fmt.Fprintf(os.Stderr, "exiting with %d\n", n)
		os.Exit(n)
	case "serve":
		addr := ":8080"
		if len(os.Args) > 2 {
			addr = os.Args[2]
		}
		fmt.Printf("probe serving on %s\n", addr)
		fmt.Print(capLines())
		http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
		http.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, capLines())
			fmt.Fprintln(w, rootWritable())
		})
		http.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
			n, _ := strconv.Atoi(r.URL.Query().Get("code"))
			fmt.Fprintln(w, "bye")
			go func() { time.Sleep(50 * time.Millisecond); os.Exit(n) }()
		})
		if err := http.ListenAndServe(addr, nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(64)
	}
}
