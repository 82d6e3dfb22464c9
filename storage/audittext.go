package storage

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds of an entry's text, in bytes after cleaning: the short fields (actor,
// source, action, target type and id, result) and each detail's value.
const (
	MaxTextLen   = 128
	MaxDetailLen = 1024
)

// Clean returns e with every text field cleaned by CleanText (details' keys and
// values too), so that what a client typed (a user name, a peer's name) is stored
// without control characters and within bounds. Append cleans every entry; the
// hash covers the cleaned text.
func (e Entry) Clean() Entry {
	e.Actor = CleanText(e.Actor, MaxTextLen)
	e.SourceIP = CleanText(e.SourceIP, MaxTextLen)
	e.Action = CleanText(e.Action, MaxTextLen)
	e.TargetType = CleanText(e.TargetType, MaxTextLen)
	e.TargetID = CleanText(e.TargetID, MaxTextLen)
	e.Result = CleanText(e.Result, MaxTextLen)
	dirty := false
	for k, v := range e.Details {
		if !isClean(k, MaxTextLen) || !isClean(v, MaxDetailLen) {
			dirty = true
			break
		}
	}
	if dirty {
		d := make(map[string]string, len(e.Details))
		for k, v := range e.Details {
			d[CleanText(k, MaxTextLen)] = CleanText(v, MaxDetailLen)
		}
		e.Details = d
	}
	return e
}

// isClean reports whether s is printable ASCII within max bytes: the common case,
// which CleanText returns as it is.
func isClean(s string, max int) bool {
	if len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// CleanText makes s safe to store and show: invalid UTF-8 becomes U+FFFD, control
// and format characters (CR, LF, NUL, the bidi overrides, zero-width ones) are
// written as escapes (\x0a, \u202e), and the result is cut at max bytes on a
// character boundary, ending in "…" when cut.
func CleanText(s string, max int) string {
	if isClean(s, max) {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), max+8))
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r < 0x80 && (r < 0x20 || r == 0x7f):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029':
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		if b.Len() > max+8 {
			break
		}
	}
	out := b.String()
	if len(out) <= max {
		return out
	}
	const more = "…"
	cut := max - len(more)
	for cut > 0 && !utf8.RuneStart(out[cut]) {
		cut--
	}
	return out[:cut] + more
}
