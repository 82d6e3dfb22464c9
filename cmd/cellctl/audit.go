package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"

	"github.com/pic-cell/cell/storage"
)

func init() {
	register("audit", "verify an audit export offline (audit verify [-pubkey HEX] FILE)", (*CLI).audit)
}

const auditUsage = "usage: cellctl audit verify [-pubkey HEX] FILE   (FILE: GET /api/audit/export?format=csv|json, - for stdin)"

// errAuditBad is returned when an export does not verify, so that the process exits
// non-zero after the report has been printed.
var errAuditBad = errors.New("the audit export does not verify")

// audit: `cellctl audit verify [-pubkey HEX] FILE`.
func (c *CLI) audit(args []string) error {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(c.Stderr, auditUsage)
		return errUsage
	}
	fs := c.newFlagSet("audit verify")
	pubHex := fs.String("pubkey", "", "the cell's audit key, hex ed25519 (the \"public_key\" of GET /api/audit/verify); without it only the chain is checked")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	// Accept the flag after the file too: `audit verify FILE -pubkey HEX`.
	var files []string
	for fs.NArg() > 0 {
		files = append(files, fs.Arg(0))
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
	}
	if len(files) != 1 {
		fmt.Fprintln(c.Stderr, auditUsage)
		return errUsage
	}
	var trusted ed25519.PublicKey
	if *pubHex != "" {
		k, err := hex.DecodeString(*pubHex)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("-pubkey must be %d bytes of hex (an ed25519 public key), got %q", ed25519.PublicKeySize, *pubHex)
		}
		trusted = k
	}
	var raw []byte
	var err error
	if files[0] == "-" {
		raw, err = io.ReadAll(c.Stdin)
	} else {
		raw, err = os.ReadFile(files[0])
	}
	if err != nil {
		return err
	}
	rep, err := verifyExport(raw, trusted)
	if err != nil {
		return fmt.Errorf("%s: %w", files[0], err)
	}
	rep.print(c.Stdout)
	if !rep.OK {
		return errAuditBad
	}
	return nil
}

// auditReport is the outcome of an offline check.
type auditReport struct {
	storage.Verification
	Format string
	// Trusted is false when no key was given and the file's own key was used.
	Trusted bool
	// Notes are warnings that do not make the export bad by themselves.
	Notes []string
}

func (r auditReport) print(w io.Writer) {
	if !r.Trusted {
		fmt.Fprintln(w, "WARNING: no -pubkey given: this checks only the hash chain, and the checkpoint against the public key embedded in the file, which is untrusted (whoever edits the file can replace key and signature). Pass -pubkey with the key GET /api/audit/verify shows to check that the cell signed it.")
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	cp := r.Checkpoint
	if r.Base != nil {
		fmt.Fprintf(w, "pruned: the log starts at entry %d (the entries before were pruned; base signed %s)\n", r.FirstSeq, r.Base.Time)
	}
	if r.OK {
		fmt.Fprintf(w, "ok: %d entries (%s), head %s, checkpoint size %d signed %s", r.Entries, r.Format, r.Head, cp.Size, cp.Time)
		if r.Trusted {
			fmt.Fprintln(w, " by the trusted key")
		} else {
			fmt.Fprintln(w, " by the file's own (untrusted) key")
		}
		return
	}
	if r.FirstBadSeq != nil && *r.FirstBadSeq > 0 {
		fmt.Fprintf(w, "BAD: first bad entry: seq %d: %s\n", *r.FirstBadSeq, r.Reason)
	} else {
		fmt.Fprintf(w, "BAD: checkpoint: %s\n", r.Reason)
	}
}

// verifyExport checks an export (CSV or JSON, told apart by the first byte) against
// its closing checkpoint, whose signature is checked with trusted or, when trusted is
// nil, with the key the file names (and the report says so).
func verifyExport(raw []byte, trusted ed25519.PublicKey) (auditReport, error) {
	var (
		rows []exportRow
		cp   storage.Checkpoint
		base *storage.Checkpoint
		err  error
		rep  auditReport
	)
	if t := bytes.TrimLeft(raw, " \t\r\n\ufeff"); len(t) > 0 && t[0] == '{' {
		rep.Format = "json"
		rows, base, cp, err = parseJSONExport(raw)
	} else {
		rep.Format = "csv"
		rows, base, cp, err = parseCSVExport(raw)
	}
	if err != nil {
		return rep, err
	}
	key := trusted
	rep.Trusted = trusted != nil
	if trusted == nil {
		k, err := hex.DecodeString(cp.PublicKey)
		if err != nil || len(k) != ed25519.PublicKeySize {
			// A key of the wrong shape verifies nothing: VerifySignature fails.
			k = make([]byte, 0)
		}
		key = k
	} else if cp.PublicKey != "" && cp.PublicKey != hex.EncodeToString(trusted) {
		rep.Notes = append(rep.Notes, "the file names the public key "+cp.PublicKey+", not the one given with -pubkey")
	}
	if base != nil && base.PublicKey != cp.PublicKey {
		rep.Notes = append(rep.Notes, "the base names the public key "+base.PublicKey+", not the checkpoint's")
	}

	// A row that does not decode is bad at its place in the sequence, unless an entry
	// before it already broke the chain: check the prefix first.
	firstBroken := slices.IndexFunc(rows, func(r exportRow) bool { return r.err != nil })
	if firstBroken >= 0 {
		pre := storage.NewVerifierFrom(base, nil)
		for _, r := range rows[:firstBroken] {
			pre.AddEntry(r.e)
		}
		res := pre.Result(nil)
		if res.OK {
			seq := res.FirstSeq + uint64(firstBroken)
			res.OK, res.FirstBadSeq, res.Reason = false, &seq, rows[firstBroken].err.Error()
		}
		res.Entries = uint64(len(rows))
		res.Checkpoint = &cp
		rep.Verification = res
		return rep, nil
	}
	v := storage.NewVerifierFrom(base, &cp)
	for _, r := range rows {
		v.AddEntry(r.e)
	}
	rep.Verification = v.Result(key)
	if last := rep.FirstSeq - 1 + rep.Entries; rep.OK && last > cp.Size {
		// The cell exports exactly the entries its checkpoint covers.
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d entries follow the checkpoint and are covered only by the chain", last-cp.Size))
	}
	return rep, nil
}

// exportRow is one decoded entry, or why it did not decode.
type exportRow struct {
	e   storage.Entry
	err error
}

func parseJSONExport(raw []byte) ([]exportRow, *storage.Checkpoint, storage.Checkpoint, error) {
	var doc struct {
		Base       *storage.Checkpoint `json:"base"`
		Entries    []json.RawMessage   `json:"entries"`
		Checkpoint *storage.Checkpoint `json:"checkpoint"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, nil, storage.Checkpoint{}, fmt.Errorf("not a JSON audit export: %w", err)
	}
	if doc.Checkpoint == nil {
		return nil, nil, storage.Checkpoint{}, errors.New("the export has no checkpoint: it cannot be checked for dropped entries")
	}
	rows := make([]exportRow, len(doc.Entries))
	for i, m := range doc.Entries {
		if err := json.Unmarshal(m, &rows[i].e); err != nil {
			rows[i].err = fmt.Errorf("entry %d of the file does not decode: %w", i+1, err)
		}
	}
	return rows, doc.Base, *doc.Checkpoint, nil
}

// checkpointOfRow reads a "checkpoint" or "base" row: kind, size, head, time,
// public key, signature.
func checkpointOfRow(rec []string, kind string) (storage.Checkpoint, error) {
	if len(rec) < 6 {
		return storage.Checkpoint{}, fmt.Errorf("the %s row has %d columns, want at least 6", rec[0], len(rec))
	}
	size, err := strconv.ParseUint(rec[1], 10, 64)
	if err != nil {
		return storage.Checkpoint{}, fmt.Errorf("the %s row's size %q is not a number", rec[0], rec[1])
	}
	return storage.Checkpoint{Kind: kind, Size: size, Head: rec[2], Time: rec[3], PublicKey: rec[4], Signature: rec[5]}, nil
}

func parseCSVExport(raw []byte) ([]exportRow, *storage.Checkpoint, storage.Checkpoint, error) {
	r := csv.NewReader(bytes.NewReader(raw))
	r.FieldsPerRecord = -1 // a damaged row is reported at its place, not as a parse failure
	recs, err := r.ReadAll()
	if err != nil {
		return nil, nil, storage.Checkpoint{}, fmt.Errorf("not a CSV audit export: %w", err)
	}
	if len(recs) == 0 || !slices.Equal(recs[0], storage.CSVHeader) {
		return nil, nil, storage.Checkpoint{}, fmt.Errorf("not a CSV audit export: the first row must be the header %q", storage.CSVHeader)
	}
	last := recs[len(recs)-1]
	if len(recs) < 2 || len(last) < 6 || last[0] != "checkpoint" {
		return nil, nil, storage.Checkpoint{}, errors.New("the export does not end with its checkpoint row: it is cut short or not an export")
	}
	cp, err := checkpointOfRow(last, "")
	if err != nil {
		return nil, nil, storage.Checkpoint{}, err
	}
	body := recs[1 : len(recs)-1]
	var base *storage.Checkpoint
	firstRow := 2 // the file's row number of body[0]
	if len(body) > 0 && len(body[0]) > 0 && body[0][0] == storage.KindBase {
		b, err := checkpointOfRow(body[0], storage.KindBase)
		if err != nil {
			return nil, nil, storage.Checkpoint{}, err
		}
		base, body, firstRow = &b, body[1:], 3
	}
	rows := make([]exportRow, len(body))
	for i, rec := range body {
		rows[i].e, rows[i].err = csvEntry(rec)
		if rows[i].err != nil {
			rows[i].err = fmt.Errorf("row %d of the file: %w", i+firstRow, rows[i].err)
		}
	}
	return rows, base, cp, nil
}

func csvEntry(rec []string) (storage.Entry, error) {
	if len(rec) != len(storage.CSVHeader) {
		return storage.Entry{}, fmt.Errorf("has %d columns, want %d", len(rec), len(storage.CSVHeader))
	}
	if rec[0] == "checkpoint" || rec[0] == storage.KindBase {
		return storage.Entry{}, fmt.Errorf("a %s row out of place", rec[0])
	}
	seq, err := strconv.ParseUint(rec[0], 10, 64)
	if err != nil {
		return storage.Entry{}, fmt.Errorf("seq %q is not a number", rec[0])
	}
	// The export neutralised every column but seq against spreadsheet formulas
	// (storage.CSVNeutral); the hash covers the text before that.
	rec = slices.Clone(rec)
	for i := 1; i < len(rec); i++ {
		rec[i] = storage.CSVUnneutral(rec[i])
	}
	var details map[string]string
	dec := json.NewDecoder(bytes.NewReader([]byte(rec[8])))
	if err := dec.Decode(&details); err != nil || dec.More() {
		return storage.Entry{}, fmt.Errorf("seq %d: details %q is not a JSON object of strings", seq, rec[8])
	}
	return storage.Entry{
		Seq: seq, Time: rec[1], Actor: rec[2], SourceIP: rec[3], Action: rec[4],
		TargetType: rec[5], TargetID: rec[6], Result: rec[7], Details: details,
		Prev: rec[9], Hash: rec[10],
	}, nil
}
