package config

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/pic-cell/cell/cell/fault"
)

func TestValidateRefusesKeysThatMatchOnlyByCase(t *testing.T) {
	r := NewRegistry()
	ok := Doc{"cell": json.RawMessage(`{"name":"home","domain":"home.example.org"}`)}
	if _, err := r.Validate(ok); err != nil {
		t.Fatalf("a valid section: %v", err)
	}
	for _, raw := range []string{
		`{"Name":"home","domain":"home.example.org"}`,
		`{"name":"home","domain":"home.example.org","NAME":"x"}`,
		`{"name":"home","Domain":"home.example.org"}`,
	} {
		_, err := r.Validate(Doc{"cell": json.RawMessage(raw)})
		if !errors.Is(err, fault.ErrInvalid) || !strings.Contains(err.Error(), "did you mean") {
			t.Errorf("%s: %v, want invalid naming the right key", raw, err)
		}
	}
}
