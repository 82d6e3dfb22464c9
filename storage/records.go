package storage

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The custom records of the cell's DNS zone (migration 4):
//
//	dns_records/
//	    <id, 8 bytes big-endian>  -> DNSRecord (JSON)
var bucketDNSRecords = []byte("dns_records")

func migrateDNSRecords(tx *bolt.Tx) error {
	_, err := tx.CreateBucketIfNotExists(bucketDNSRecords)
	return err
}

// DNSRecord is a record an admin added to the cell's zone. Peers' and services'
// names are not stored here: they are derived from the peers and services.
type DNSRecord struct {
	ID        uint64    `json:"id"`
	Name      string    `json:"name"` // relative to the zone ("www", "@" for the apex)
	Type      string    `json:"type"` // A, AAAA, CNAME, TXT, MX, SRV
	Value     string    `json:"value"`
	TTL       uint32    `json:"ttl"`
	CreatedAt time.Time `json:"created_at"`
}

// DNSRecords is the typed store of the zone's custom records.
type DNSRecords struct{ db *DB }

// DNSRecords returns the store.
func (db *DB) DNSRecords() DNSRecords { return DNSRecords{db} }

// ListTx returns every record inside tx, by id.
func (s DNSRecords) ListTx(tx *Tx) ([]DNSRecord, error) {
	out := []DNSRecord{}
	err := tx.Bucket(bucketDNSRecords).ForEach(func(k, v []byte) error {
		var r DNSRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("dns record %d: %w", readU64(k), err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// List returns every record, by id.
func (s DNSRecords) List() ([]DNSRecord, error) {
	var out []DNSRecord
	err := s.db.bolt.View(func(tx *bolt.Tx) (err error) {
		out, err = s.ListTx(tx)
		return err
	})
	return out, err
}

// Create stores r with the next id (set on return); within (the caller's
// checks against the rest of the zone, its audit entry) runs in the same
// transaction.
func (s DNSRecords) Create(r *DNSRecord, within Within) error {
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDNSRecords)
		id, err := b.NextSequence()
		if err != nil {
			return err
		}
		r.ID = id
		raw, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := b.Put(u64(id), raw); err != nil {
			return err
		}
		s.db.changed(tx, Change{Kind: ChangeRecord, Key: strconv.FormatUint(id, 10)})
		return within.run(tx)
	})
}

// Delete removes the record id and returns it.
func (s DNSRecords) Delete(id uint64, within Within) (DNSRecord, error) {
	var r DNSRecord
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDNSRecords)
		raw := b.Get(u64(id))
		if raw == nil {
			return fmt.Errorf("dns record %d: %w", id, ErrNotFound)
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		if err := b.Delete(u64(id)); err != nil {
			return err
		}
		s.db.changed(tx, Change{Kind: ChangeRecord, Key: strconv.FormatUint(id, 10)})
		return within.run(tx)
	})
	return r, err
}
