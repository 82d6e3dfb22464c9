package release

import "testing"

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
		err  bool
	}{
		{"1.0.0", "1.0.0", 0, false},
		{"1.0", "1.0.0", 0, false},
		{"1.10.0", "1.9.3", 1, false},
		{"0.9.9", "1.0", -1, false},
		{"2", "1.99.99", 1, false},
		{"1.0.0-rc1", "1.0.0", 0, true},
		{"", "1", 0, true},
		{"v1", "1", 0, true},
	}
	for _, tt := range tests {
		got, err := CompareVersions(tt.a, tt.b)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d, error %v", tt.a, tt.b, got, err, tt.want, tt.err)
		}
	}
}
