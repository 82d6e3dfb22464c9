package main

import "testing"

func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv("CELL_DATA", "/env/data")
	t.Setenv("CELL_LOG_LEVEL", "debug")
	f, err := parseFlags([]string{"-listen", "127.0.0.1:4000"})
	if err != nil {
		t.Fatal(err)
	}
	if f.data != "/env/data" || f.logLevel != "debug" || f.listen != "127.0.0.1:4000" {
		t.Fatalf("flags = %+v", f)
	}
	// The command line wins over the environment.
	f, _ = parseFlags([]string{"-data", "/cli/data"})
	if f.data != "/cli/data" {
		t.Fatalf("data = %s, want the flag's value", f.data)
	}
	t.Setenv("CELL_DATA", "")
	if _, err := parseFlags([]string{"-nonsense"}); err == nil {
		t.Fatal("an unknown flag was accepted")
	}
}

func TestDefaults(t *testing.T) {
	f, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.data != "./var" || f.listen != "127.0.0.1:3000" {
		t.Fatalf("defaults = %+v", f)
	}
}
