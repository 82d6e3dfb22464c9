//go:build tools

package tools

import (
	_ "filippo.io/age"
	_ "github.com/chromedp/chromedp"
	_ "github.com/containerd/containerd/v2/client"
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/contrib/seccomp"
	_ "github.com/containerd/containerd/v2/pkg/oci"
	_ "github.com/diskfs/go-diskfs"
	_ "github.com/gokrazy/gokrazy"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/google/go-containerregistry/pkg/v1/layout"
	_ "github.com/google/go-containerregistry/pkg/v1/mutate"
	_ "github.com/google/nftables"
	_ "github.com/julienschmidt/httprouter"
	_ "github.com/opencontainers/runc"
	_ "github.com/skip2/go-qrcode"
	_ "github.com/vishvananda/netlink"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/crypto/argon2"
	_ "golang.org/x/net/webdav"
	_ "golang.zx2c4.com/wireguard/device"
	_ "golang.zx2c4.com/wireguard/tun/netstack"
	_ "golang.zx2c4.com/wireguard/wgctrl"
)
