// Command hangd stands in for a cell daemon that hangs: it accepts
// connections on -listen and never answers them, so the process is alive and
// its port open, but /health never comes back. The watchdog test puts it in an
// update's root in place of the daemon.
package main

import (
	"flag"
	"io"
	"log"
	"net"
)

func main() {
	listen := flag.String("listen", "0.0.0.0:80", "address to accept connections on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("hangd: accepting on %s and never answering", *listen)
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		// Read the request and say nothing, until the client gives up.
		go func() { io.Copy(io.Discard, c); c.Close() }()
	}
}
