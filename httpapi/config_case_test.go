package httpapi

import (
	"strings"
	"testing"
)

// A config key that matches a setting only by case is refused, not silently
// taken or dropped, and the config keeps its value.
func TestConfigKeysMatchExactly(t *testing.T) {
	e := newEnv(t)
	e.setup()
	admin := e.login("admin", adminPassword)
	r := admin.do("PUT", "/api/config", map[string]any{"cell": map[string]any{"Name": "attic"}})
	if r.status != 400 || !strings.Contains(string(r.body), "did you mean") {
		t.Fatalf("PUT /api/config with cell.Name: %d %s, want 400 naming cell.name", r.status, r.body)
	}
	var cfg struct {
		Cell struct{ Name string } `json:"cell"`
	}
	admin.must(200, "GET", "/api/config", nil).json(t, &cfg)
	if cfg.Cell.Name != "home" {
		t.Errorf("cell.name = %q after a refused change, want home", cfg.Cell.Name)
	}
}
