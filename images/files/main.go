// Command files is the "files" service container of a Personal Internet
// Cell: WebDAV for the household, with a home per account, a shared folder,
// quotas, and an admin API through which the cell manages the accounts.
//
// # The container contract
//
// The image builder (images/oci) puts this binary, built static
// (CGO_ENABLED=0, -ldflags "-s -w"), at /files; containerd runs it as uid/gid
// 65534 on a read-only root file system. It needs no arguments; the flags and
// their defaults:
//
//	-listen :8080                       WebDAV and /healthz, plain HTTP (the cell's front,
//	                                    Caddy, terminates TLS for https://files.<domain>/
//	                                    and sets X-Forwarded-For/-Proto)
//	-admin :8081                        the admin API
//	-data /data                         the volume, read-write; the only place written
//	-token-file /run/pic/admin-token    the admin bearer token, one line; reread when it changes
//	-log-level info                     debug, info, warn or error; slog text on stderr
//	-argon2-memory-kib 19456            argon2id memory of new hashes (tests lower it)
//
// On :8080, GET /healthz answers 200 "ok" without authentication once the
// data directory is usable. Everything else is WebDAV with HTTP Basic
// authentication (realm "files"). An account sees its home at / and the
// household's shared folder at /shared/ (every account reads and writes it);
// other homes are unreachable. On disk (see package server):
// /data/homes/<username>/, /data/shared/, /data/accounts.json (written
// atomically), /data/removed/<username>-<unix seconds>/ (homes of deleted
// accounts), /data/tmp/ (uploads in progress).
//
// Quotas: each account has a quota in bytes (0 = unlimited) over its home. A
// write that would pass it fails with 507 Insufficient Storage and leaves
// no partial file (uploads land in /data/tmp and are renamed into place when
// complete; a body whose Content-Length is already too big is refused before
// it is read). The shared folder counts against nobody's quota.
//
// Passwords are stored as argon2id PHC strings (m=19 MiB, t=2, p=1).
// Successful verifications are cached in memory under
// HMAC-SHA256(per-process key, username NUL password) until the account
// changes, because WebDAV clients authenticate every request. Ten failed
// logins per username and client address within a minute make that pair
// wait (429).
//
// The admin API on :8081 needs "Authorization: Bearer <token>" (401
// otherwise); errors are JSON {"error":"..."}; bodies are capped at 64 KiB
// and unknown fields are refused:
//
//	GET    /admin/v1/accounts            200 {"accounts":[{"username":"alice","quota_bytes":0,"usage_bytes":123}]}
//	PUT    /admin/v1/accounts/{username} {"password":"...","quota_bytes":0} → 204; creates or updates,
//	                                     idempotent; an empty password keeps an existing account's
//	DELETE /admin/v1/accounts/{username} 204, or 404; the home moves to /data/removed/
//	GET    /admin/v1/usage               200 {"total_bytes":N,"shared_bytes":N}
//
// Usernames match ^[a-z0-9][a-z0-9._-]{0,62}$ (else 400). Package
// images/accounts is the cell's client of this API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pic-cell/cell/images/files/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "files:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", ":8080", "WebDAV and /healthz address")
	admin := flag.String("admin", ":8081", "admin API address")
	data := flag.String("data", "/data", "data directory (the volume)")
	tokenFile := flag.String("token-file", "/run/pic/admin-token", "file holding the admin bearer token")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	argonMem := flag.Uint("argon2-memory-kib", uint(server.DefaultArgon2.MemoryKiB), "argon2id memory (KiB) of new password hashes")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	params := server.DefaultArgon2
	params.MemoryKiB = uint32(*argonMem)
	srv, err := server.New(server.Config{DataDir: *data, TokenFile: *tokenFile, Argon2: params, Logger: log})
	if err != nil {
		return err
	}
	defer srv.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	servers := []*http.Server{
		{Addr: *listen, Handler: srv.Handler(), ReadHeaderTimeout: 20 * time.Second, IdleTimeout: 2 * time.Minute},
		{Addr: *admin, Handler: srv.AdminHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second},
	}
	errc := make(chan error, len(servers))
	for _, hs := range servers {
		ln, err := net.Listen("tcp", hs.Addr)
		if err != nil {
			return err
		}
		log.Info("listening", "addr", ln.Addr().String())
		go func() { errc <- hs.Serve(ln) }()
	}
	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("shutting down")
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, hs := range servers {
		hs.Shutdown(shutCtx)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
