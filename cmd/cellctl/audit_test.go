package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pic-cell/cell/cell/audit"
	"github.com/pic-cell/cell/cell/logs"
	"github.com/pic-cell/cell/httpapi"
	"github.com/pic-cell/cell/storage"
)

// export is an audit export made in process by a real cell, as the API makes it.
type export struct {
	csv, json []byte
	entries   []storage.Entry
	cp        storage.Checkpoint
	pub       string // hex of the cell's audit key
}

// auditLog is an audit log alone over a new database: a whole cell would add
// entries of its own (the vault making its CA) before the test's.
func auditLog(t *testing.T) (*storage.DB, *audit.Log) {
	t.Helper()
	db, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	book, err := logs.Open(logs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(db, book.Logger("audit"), time.Now, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return db, log
}

func makeExport(t *testing.T, n int) export {
	t.Helper()
	_, log := auditLog(t)
	c := struct{ Audit *audit.Log }{log}
	var err error
	for i := 1; i <= n; i++ {
		_, err := c.Audit.Record(storage.Entry{
			Actor: "admin", SourceIP: "127.0.0.1", Action: "config.update", TargetType: "config",
			TargetID: "cell", Result: "ok", Details: map[string]string{"cell.name": fmt.Sprintf("n%d", i), "changed": "cell.name"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var ex export
	ex.cp, err = c.Audit.Export(func(e storage.Entry) error {
		ex.entries = append(ex.entries, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(ex.entries); got != n || ex.cp.Size != uint64(n) {
		t.Fatalf("export has %d entries and checkpoint size %d, want %d", got, ex.cp.Size, n)
	}
	if ex.csv, err = httpapi.EncodeCSV(ex.entries, ex.cp); err != nil {
		t.Fatal(err)
	}
	if ex.json, err = json.Marshal(map[string]any{"entries": ex.entries, "checkpoint": ex.cp}); err != nil {
		t.Fatal(err)
	}
	ex.pub = hex.EncodeToString(c.Audit.PublicKey())
	return ex
}

// runVerify runs `cellctl audit verify` in process on data written to a file.
func runVerify(t *testing.T, data []byte, flags ...string) (string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.export")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cli := &CLI{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut}
	err := cli.Run(append(append([]string{"audit", "verify"}, flags...), path))
	return out.String() + errOut.String(), err
}

func readCSV(t *testing.T, b []byte) [][]string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func writeCSV(t *testing.T, recs [][]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.WriteAll(recs)
	if err := w.Error(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// flip returns s with the middle byte's lowest bit flipped.
func flip(s string) string {
	b := []byte(s)
	b[len(b)/2] ^= 0x01
	return string(b)
}

func TestAuditVerifyGoodExport(t *testing.T) {
	ex := makeExport(t, 50)
	tests := []struct {
		name      string
		data      []byte
		flags     []string
		wantInOut []string
	}{
		{"csv with key", ex.csv, []string{"-pubkey", ex.pub}, []string{"ok: 50 entries (csv)", "by the trusted key"}},
		{"json with key", ex.json, []string{"-pubkey", ex.pub}, []string{"ok: 50 entries (json)", "by the trusted key"}},
		{"csv without key", ex.csv, nil, []string{"WARNING: no -pubkey given", "checks only the hash chain", "untrusted", "ok: 50 entries (csv)"}},
		{"json without key", ex.json, nil, []string{"WARNING: no -pubkey given", "ok: 50 entries (json)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runVerify(t, tt.data, tt.flags...)
			if err != nil {
				t.Fatalf("verify: err %v, want nil; output:\n%s", err, out)
			}
			for _, w := range tt.wantInOut {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if tt.flags != nil && strings.Contains(out, "WARNING") {
				t.Errorf("with -pubkey the output warns of an untrusted key:\n%s", out)
			}
		})
	}
	// The flag may also follow the file.
	path := filepath.Join(t.TempDir(), "a.csv")
	os.WriteFile(path, ex.csv, 0o600)
	var out bytes.Buffer
	if err := (&CLI{Stdout: &out, Stderr: &out}).Run([]string{"audit", "verify", path, "-pubkey", ex.pub}); err != nil || !strings.Contains(out.String(), "by the trusted key") {
		t.Errorf("verify FILE -pubkey: err %v, output:\n%s", err, out.String())
	}
}

// TestAuditVerifyFlippedField flips a byte in every column of one entry, in both
// formats, and wants that entry named as the first bad one.
func TestAuditVerifyFlippedField(t *testing.T) {
	ex := makeExport(t, 50)
	const seq = 17
	for col, name := range httpapi.CSVHeader {
		t.Run("csv/"+name, func(t *testing.T) {
			recs := readCSV(t, ex.csv)
			if recs[seq][0] != strconv.Itoa(seq) {
				t.Fatalf("row %d holds seq %s, want %d", seq, recs[seq][0], seq)
			}
			recs[seq][col] = flip(recs[seq][col])
			out, err := runVerify(t, writeCSV(t, recs), "-pubkey", ex.pub)
			want := fmt.Sprintf("first bad entry: seq %d:", seq)
			if !errors.Is(err, errAuditBad) || !strings.Contains(out, want) {
				t.Errorf("err %v (want errAuditBad), output lacks %q:\n%s", err, want, out)
			}
		})
	}
	fields := []string{"time", "actor", "source_ip", "action", "target_type", "target_id", "result", "prev", "hash"}
	for _, f := range fields {
		t.Run("json/"+f, func(t *testing.T) {
			var doc struct {
				Entries    []map[string]any   `json:"entries"`
				Checkpoint storage.Checkpoint `json:"checkpoint"`
			}
			if err := json.Unmarshal(ex.json, &doc); err != nil {
				t.Fatal(err)
			}
			doc.Entries[seq-1][f] = flip(doc.Entries[seq-1][f].(string))
			raw, _ := json.Marshal(doc)
			out, err := runVerify(t, raw, "-pubkey", ex.pub)
			want := fmt.Sprintf("first bad entry: seq %d:", seq)
			if !errors.Is(err, errAuditBad) || !strings.Contains(out, want) {
				t.Errorf("err %v (want errAuditBad), output lacks %q:\n%s", err, want, out)
			}
		})
	}
}

// TestAuditVerifyStructural removes, reorders and duplicates rows and damages the
// checkpoint.
func TestAuditVerifyStructural(t *testing.T) {
	ex := makeExport(t, 50)
	other, _, _ := ed25519.GenerateKey(nil)
	otherHex := hex.EncodeToString(other)
	tests := []struct {
		name  string
		edit  func(recs [][]string) [][]string // recs[0] is the header, recs[len-1] the checkpoint
		flags []string
		want  string
	}{
		{"drop last 5 entries", func(r [][]string) [][]string {
			return append(r[:46:46], r[len(r)-1])
		}, []string{"-pubkey", ex.pub}, "first bad entry: seq 46: the log has 45 entries but the signed checkpoint says 50"},
		{"drop last 5 entries, no key", func(r [][]string) [][]string {
			return append(r[:46:46], r[len(r)-1])
		}, nil, "first bad entry: seq 46:"},
		{"delete entry 20", func(r [][]string) [][]string {
			return append(r[:20:20], r[21:]...)
		}, []string{"-pubkey", ex.pub}, "first bad entry: seq 20: expected entry 20, found 21"},
		{"swap entries 30 and 31", func(r [][]string) [][]string {
			r[30], r[31] = r[31], r[30]
			return r
		}, []string{"-pubkey", ex.pub}, "first bad entry: seq 30:"},
		{"duplicate entry 10", func(r [][]string) [][]string {
			return append(r[:11:11], r[10:]...)
		}, []string{"-pubkey", ex.pub}, "first bad entry: seq 11:"},
		{"wrong key", func(r [][]string) [][]string { return r }, []string{"-pubkey", otherHex}, "BAD: checkpoint: the checkpoint's signature does not verify"},
		{"checkpoint head changed", func(r [][]string) [][]string {
			r[len(r)-1][2] = flip(r[len(r)-1][2])
			return r
		}, []string{"-pubkey", ex.pub}, "BAD: checkpoint: the checkpoint's signature does not verify"},
		{"checkpoint size lowered, no key", func(r [][]string) [][]string {
			r[len(r)-1][1] = "40"
			return r
		}, nil, "BAD: checkpoint: the checkpoint's signature does not verify"},
		{"details not JSON", func(r [][]string) [][]string {
			r[5][8] = `{"cell.name":`
			return r
		}, []string{"-pubkey", ex.pub}, "first bad entry: seq 5: row 6 of the file: seq 5: details"},
		{"details not JSON after a broken chain", func(r [][]string) [][]string {
			r[3][6] = "other"
			r[5][8] = `{"cell.name":`
			return r
		}, []string{"-pubkey", ex.pub}, "first bad entry: seq 3: hash does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runVerify(t, writeCSV(t, tt.edit(readCSV(t, ex.csv))), tt.flags...)
			if !errors.Is(err, errAuditBad) {
				t.Errorf("err = %v, want errAuditBad", err)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("output lacks %q:\n%s", tt.want, out)
			}
		})
	}
}

// TestAuditVerifyResignedByForger shows what -pubkey is for: a forger who drops
// entries and signs a new checkpoint with a key of their own passes the chain-only
// check (which says so), and fails against the cell's key.
func TestAuditVerifyResignedByForger(t *testing.T) {
	ex := makeExport(t, 50)
	pub, priv, _ := ed25519.GenerateKey(nil)
	kept := ex.entries[:40]
	cp := storage.Checkpoint{Size: 40, Head: kept[39].Hash, Time: ex.cp.Time, PublicKey: hex.EncodeToString(pub)}
	cp.Signature = hex.EncodeToString(ed25519.Sign(priv, cp.SignedMessage()))
	forged, err := httpapi.EncodeCSV(kept, cp)
	if err != nil {
		t.Fatal(err)
	}
	out, err := runVerify(t, forged)
	if err != nil || !strings.Contains(out, "WARNING: no -pubkey given") || !strings.Contains(out, "ok: 40 entries") {
		t.Errorf("chain-only check of a consistent forgery: err %v, want nil with the warning; output:\n%s", err, out)
	}
	out, err = runVerify(t, forged, "-pubkey", ex.pub)
	if !errors.Is(err, errAuditBad) || !strings.Contains(out, "BAD: checkpoint") || !strings.Contains(out, "note: the file names the public key "+cp.PublicKey) {
		t.Errorf("forgery against the cell's key: err %v, want errAuditBad; output:\n%s", err, out)
	}
}

func TestAuditVerifyUsage(t *testing.T) {
	ex := makeExport(t, 3)
	path := filepath.Join(t.TempDir(), "a.csv")
	os.WriteFile(path, ex.csv, 0o600)
	tests := []struct {
		name string
		args []string
		want string // in the error
	}{
		{"no subcommand", []string{"audit"}, "usage"},
		{"no file", []string{"audit", "verify"}, "usage"},
		{"two files", []string{"audit", "verify", path, path}, "usage"},
		{"bad key", []string{"audit", "verify", "-pubkey", "abcd", path}, "-pubkey must be 32 bytes"},
		{"missing file", []string{"audit", "verify", filepath.Join(t.TempDir(), "nope")}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := (&CLI{Stdout: &out, Stderr: &out}).Run(tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	bad := []struct {
		name string
		data string
		want string
	}{
		{"not an export", "hello\n", "the first row must be the header"},
		{"no checkpoint row", strings.Join(httpapi.CSVHeader, ",") + "\n", "does not end with its checkpoint row"},
		{"json without checkpoint", `{"entries":[]}`, "no checkpoint"},
		{"broken json", `{"entries":[`, "not a JSON audit export"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runVerify(t, []byte(tt.data))
			if err == nil || errors.Is(err, errAuditBad) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want a parse error containing %q; output:\n%s", err, tt.want, out)
			}
		})
	}
}
