package server

import "testing"

// BenchmarkVerifyDefault is the cost a login pays once (then the cache
// answers): argon2id at the production parameters.
func BenchmarkVerifyDefault(b *testing.B) {
	h, err := hashPassword("pw", DefaultArgon2)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if ok, _ := verifyPassword(h, "pw"); !ok {
			b.Fatal("no match")
		}
	}
}
