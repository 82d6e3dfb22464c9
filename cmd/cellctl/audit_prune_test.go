package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/pic-cell/cell/cell/audit"
	"github.com/pic-cell/cell/httpapi"
	"github.com/pic-cell/cell/storage"
)

// prunedExport is the CSV and JSON export, as the API streams them, of a log of
// n entries (some with text a spreadsheet would run as a formula) pruned to keep.
func prunedExport(t *testing.T, n, keep int) (csvData, jsonData []byte, pub string, first uint64) {
	t.Helper()
	db, log := auditLog(t)
	hostile := []string{`=HYPERLINK("http://evil.example","x")`, "+1", "-1+2", "@SUM(A1)", "\tx", "\rx", "'q", "line\nbreak"}
	if err := db.Update(func(tx *storage.Tx) error {
		for i := range n {
			h := hostile[i%len(hostile)]
			if _, err := db.Audit().AppendTx(tx, log.Stamp(storage.Entry{Actor: h, SourceIP: "127.0.0.1", Action: "test", TargetType: "peer", TargetID: h,
				Result: "ok", Details: map[string]string{"i": fmt.Sprint(i)}})); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := log.Prune(audit.Retention{KeepDays: 365, MaxEntries: keep}); err != nil {
		t.Fatal(err)
	}
	var c, j bytes.Buffer
	if err := httpapi.WriteCSV(&c, log.ExportTo); err != nil {
		t.Fatal(err)
	}
	if err := httpapi.WriteJSON(&j, log.ExportTo); err != nil {
		t.Fatal(err)
	}
	b, _, _ := db.Audit().Base()
	return c.Bytes(), j.Bytes(), hex.EncodeToString(log.PublicKey()), b.Size + 1
}

// TestAuditVerifyPrunedExport: an export of a pruned log carries its signed base
// and verifies from it, CSV (with its neutralising quotes) and JSON; an entry
// tampered with, the base row dropped or re-signed by another key, and a row
// removed at the start are each caught.
func TestAuditVerifyPrunedExport(t *testing.T) {
	csvData, jsonData, pub, first := prunedExport(t, 1200, 1000)
	if first != 201 { // 1200 entries, the newest 1000 kept
		t.Fatalf("first kept entry %d, want 201", first)
	}
	for name, data := range map[string][]byte{"csv": csvData, "json": jsonData} {
		out, err := runVerify(t, data, "-pubkey", pub)
		if err != nil || !strings.Contains(out, "ok: 1000 entries ("+name+")") || !strings.Contains(out, "the log starts at entry 201") {
			t.Fatalf("%s export of a pruned log: %v\n%s", name, err, out)
		}
	}
	recs := readCSV(t, csvData)
	if recs[1][0] != "base" || recs[2][0] != "201" {
		t.Fatalf("rows after the header: %v, %v", recs[1][:2], recs[2][:2])
	}
	formulas := 0
	for _, r := range recs[2 : len(recs)-1] {
		for _, f := range r[1:] {
			if f != "" && strings.ContainsRune("=+-@\t\r", rune(f[0])) {
				t.Fatalf("a field a spreadsheet would run: %q", f)
			}
			if strings.HasPrefix(f, "'=") {
				formulas++
			}
		}
	}
	if formulas == 0 {
		t.Fatal("no neutralised formula in the export")
	}

	cases := map[string]func([][]string) [][]string{
		"tampered entry": func(r [][]string) [][]string { r[10][6] = "'=other"; return r },
		"base row dropped": func(r [][]string) [][]string {
			return append(r[:1:1], r[2:]...)
		},
		"first kept entry dropped": func(r [][]string) [][]string { return append(r[:2:2], r[3:]...) },
		"base moved": func(r [][]string) [][]string {
			r[1][1] = fmt.Sprint(first) // claims one more pruned; the signature no longer covers it
			return r
		},
		"quote taken off a formula": func(r [][]string) [][]string {
			for _, row := range r[2:] {
				for i := 1; i < len(row); i++ {
					if strings.HasPrefix(row[i], "''") {
						row[i] = row[i][1:] // now reads as the text 'q without its own quote: not what was hashed
						return r
					}
				}
			}
			t.Fatal("no doubled quote")
			return r
		},
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := runVerify(t, writeCSV(t, mod(readCSV(t, csvData))), "-pubkey", pub)
			if err == nil || !strings.Contains(out, "BAD") {
				t.Fatalf("verify passed: %v\n%s", err, out)
			}
		})
	}
}
