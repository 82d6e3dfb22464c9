// Package client is a typed Go client of the cell's HTTP API (package httpapi),
// written against the wire format only: it imports nothing but the standard
// library, and its request and response types mirror the JSON the API reads and
// writes. It is the contract for programs outside the daemon: the operator's CLI
// (cellctl), the end-to-end test suites, and anyone scripting a cell.
//
// # Use
//
//	c := client.New("https://192.168.1.20", client.WithPinnedCA(ca))
//	if err := c.Login(ctx, "admin", password); err != nil {
//		return err
//	}
//	p, err := c.CreatePeer(ctx, client.NewPeer{Name: "laptop"})
//	if client.IsCode(err, "name_taken") {
//		...
//	}
//
// A Client is one browser: a cookie jar holding the session cookie (pic_session)
// and the CSRF token of that session. Login fetches the token (GET
// /api/auth/csrf-token) right after logging in, and every POST, PUT, PATCH and
// DELETE carries it in X-CSRF-Token; Logout forgets it. A Client is safe for
// concurrent use.
//
// Before the cell is set up, its wizard's changes need the cell's one-time setup
// code instead: UseSetupCode makes the Client send it as X-Setup-Code on them.
//
// # HTTPS and the cell's CA
//
// A cell answers only over HTTPS, through its front, with certificates of its
// own CA (served at http://CELL/ca.crt). WithPinnedCA makes that CA the only
// root for the cell and refuses any other with a *CAMismatchError naming both
// fingerprints (Fingerprint: SHA-256, hex pairs and colons, as the vault shows
// it); WithRootCAs and WithTLSConfig set the roots or the whole TLS
// configuration. Without them the system's roots are used.
//
//	c := client.New("https://192.168.1.20", client.WithPinnedCA(ca))
//
// # Errors
//
// An answer outside 2xx is returned as a *Error holding the HTTP status and the
// API's {"error":{"code","message"}}; IsCode tests the code. A typed method also
// checks the success status the API documents for its route (201 for POST
// /api/peers, 202 for POST /api/system/update, 200 otherwise) and fails on any
// other. Failures of the connection are returned as the net/http errors they are.
//
// # Secrets
//
// The client logs nothing. Passwords go only into request bodies, the CSRF token
// and the setup code only into their headers, and none appears in an error or in
// the Client's %v.
// Secrets the API hands out (a new peer's one-time password, service passwords)
// are of type Secret, which prints as [redacted]; convert with string(s) to use one.
//
// # The escape hatch
//
// Do sends any request the typed methods do not cover (tests of odd bodies,
// endpoints added later), with the same cookies, CSRF token and error mapping.
package client
