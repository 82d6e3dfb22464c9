package main

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"time"

	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/cell/reconcile"
	"github.com/pic-cell/cell/images/runtime"
	"github.com/pic-cell/cell/images/supervise"
	"github.com/pic-cell/cell/netstack/bridge"
)

// DefaultContainerd is containerd's socket on the appliance (and a Debian
// host's): the cell uses it when it is there.
const DefaultContainerd = "/run/containerd/containerd.sock"

// DefaultImages is where the firmware bundles the first-party OCI archives.
const DefaultImages = "/usr/share/pic/images"

// containerdSocket is the socket -containerd names: "" finds the default
// one, "none" turns the services off.
func containerdSocket(flag string) string {
	switch flag {
	case "none":
		return ""
	case "":
		if _, err := os.Stat(DefaultContainerd); err == nil {
			return DefaultContainerd
		}
		return ""
	}
	return flag
}

// imagesDir is -images, else the firmware's folder when it exists, else
// ./images/out (what `make images` writes on a development host).
func imagesDir(flag string) string {
	if flag != "" {
		return flag
	}
	if _, err := os.Stat(DefaultImages); err == nil {
		return DefaultImages
	}
	return filepath.Join("images", "out")
}

// connectRuntime reaches containerd at socket. On the appliance the init
// starts it beside the cell, so the cell waits for its socket a little; a
// socket that never answers leaves the cell without services (the routes
// say 503), never down.
func connectRuntime(socket, cgroupParent string, log *slog.Logger) runtime.Runtime {
	if socket == "" {
		log.Info("no containerd: the services are off (-containerd SOCKET turns them on)")
		return nil
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		rt, err := runtime.NewWithOptions(socket, log, runtime.Options{CgroupParent: cgroupParent})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = rt.Images(ctx)
			cancel()
			if err == nil {
				log.Info("containerd answers", "socket", socket)
				return rt
			}
			rt.Close()
		}
		if time.Now().After(deadline) {
			log.Error("containerd does not answer: the services are off until the cell restarts", "socket", socket, "err", err)
			return nil
		}
		if _, serr := os.Stat(socket); errors.Is(serr, fs.ErrNotExist) {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		time.Sleep(time.Second)
	}
}

// attachServices gives the loop the services' parts: the supervisor over rt
// and the bridge. Only tun mode has them: the containers join network
// namespaces on a bridge of the kernel's, which userspace mode has none of.
// It returns the runtime the cell may use (nil: no services).
func attachServices(n *reconcile.Network, rt runtime.Runtime, data, images string, book *logs.Book) runtime.Runtime {
	if rt == nil {
		return nil
	}
	if n.Links == nil {
		book.Logger("services").Warn("the services need the kernel network (-wg-mode tun): they are off")
		return nil
	}
	var unenforced []string
	if k, ok := rt.(interface{ Unenforced() []string }); ok {
		unenforced = k.Unenforced()
	}
	n.Services = reconcile.Services{DataDir: data, ImagesDir: images, Arch: goruntime.GOARCH, Unenforced: unenforced,
		Supervisor: supervise.New(supervise.Options{Runtime: rt, Log: book.Logger("services")}),
		Bridge:     bridge.New(book.Logger("services"))}
	return rt
}
