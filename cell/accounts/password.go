package accounts

import (
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/pic-cell/cell/cell/lowprio"
	"github.com/pic-cell/cell/storage"
	"golang.org/x/crypto/argon2"
)

// Password hashing: argon2id at m=19 MiB, t=2, p=1 (OWASP's minimum), stored as a PHC
// string. Hashing is capped at half the CPUs at once (at least one) and at most 16
// more may wait for a turn, so a login flood costs bounded memory and leaves a core
// for everything else. Those places are shared fairly per source (fair.go): no
// source holds more than its share of them, the next turn goes to the source that
// asked least lately, and when they are all taken a newcomer with fewer places
// takes one from the source with the most; the rest get 429 at once.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
	maxWaiting   = 16
)

// localSource is the source the hashes of accounts being created are counted
// under (the wizard's admin, a peer's one-time password): they come from a
// logged-in admin or the setup code, not from a login.
const localSource = "(local)"

// Hasher hashes and verifies passwords under the cap; setup and peers hash
// the passwords of the accounts they create through it.
type Hasher struct {
	memory uint32
	rand   io.Reader
	queue  *fairQueue
	dummy  string // a hash to verify against when the user does not exist
	// onHash, when set (tests), is called with the source before each hash under
	// the cap.
	onHash func(source string)
}

// NewHasher returns a hasher; memoryKiB zero means the production 19 MiB.
func NewHasher(memoryKiB uint32, rand io.Reader) *Hasher {
	if memoryKiB == 0 {
		memoryKiB = argonMemory
	}
	n := runtime.GOMAXPROCS(0) / 2
	if n < 1 {
		n = 1
	}
	h := &Hasher{memory: memoryKiB, rand: rand, queue: newFairQueue(n, maxWaiting, time.Now)}
	h.dummy = h.hashUnlimited("not a password of anyone's")
	return h
}

// Hash returns the PHC string of password.
func (h *Hasher) Hash(password string) (string, error) {
	if err := h.queue.acquire(localSource); err != nil {
		return "", err
	}
	defer h.queue.release(localSource)
	h.hooked(localSource)
	return h.hashUnlimited(password), nil
}

func (h *Hasher) hooked(source string) {
	if h.onHash != nil {
		h.onHash(source)
	}
}

func (h *Hasher) hashUnlimited(password string) string {
	salt := make([]byte, argonSaltLen)
	if _, err := io.ReadFull(h.rand, salt); err != nil {
		panic("cell: the random source failed: " + err.Error())
	}
	var key []byte
	lowprio.Run(func() { key = argon2.IDKey([]byte(password), salt, argonTime, h.memory, argonThreads, argonKeyLen) })
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, h.memory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// OneTime returns a new one-time password (128 random bits, as 26 lowercase
// base32 letters and digits, easy to type from a note) and what is stored of
// it (storage.OneTimeKey): no argon2id, which is for passwords people choose.
func (h *Hasher) OneTime() (password, key string) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(h.rand, b); err != nil {
		panic("cell: the random source failed: " + err.Error())
	}
	password = strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	return password, storage.OneTimeKey(password)
}

// Verify checks password against a PHC string, as an attempt from source (a
// sourceGroup); an empty phc verifies against a dummy so that a missing user costs
// the same time as a wrong password.
func (h *Hasher) Verify(source, phc, password string) (bool, error) {
	if err := h.queue.acquire(source); err != nil {
		return false, err
	}
	defer h.queue.release(source)
	h.hooked(source)
	ok := false
	lowprio.Run(func() {
		if phc == "" {
			verifyPHC(h.dummy, password)
			return
		}
		ok = verifyPHC(phc, password)
	})
	return ok, nil
}

func verifyPHC(phc, password string) bool {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var v int
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return false
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// checkPassword validates a new password's length.
