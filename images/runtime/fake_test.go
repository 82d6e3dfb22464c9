package runtime_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pic-cell/cell/images/runtime"
)

func TestFakeSemantics(t *testing.T) {
	ctx := context.Background()
	f := runtime.NewFake(nil)
	f.AddArchive("/a.tar", runtime.Image{Ref: "pic.local/files:1.0.0", Digest: "sha256:1"})
	spec := runtime.Spec{ID: "files", Image: "pic.local/files:1.0.0"}
	if err := f.Ensure(ctx, spec); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("Ensure before Import = %v, want ErrNotFound", err)
	}
	if _, err := f.Import(ctx, "/a.tar"); err != nil {
		t.Fatal(err)
	}
	exits, _ := f.Exits(ctx)
	for i := 0; i < 2; i++ {
		if err := f.Ensure(ctx, spec); err != nil {
			t.Fatal(err)
		}
		if err := f.Start(ctx, "files"); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.RemoveImage(ctx, spec.Image); !errors.Is(err, runtime.ErrInUse) {
		t.Errorf("RemoveImage in use = %v, want ErrInUse", err)
	}
	f.Crash("files", 2)
	select {
	case e := <-exits:
		if e.ID != "files" || e.ExitCode != 2 {
			t.Errorf("exit = %+v, want files with 2", e)
		}
	case <-time.After(time.Second):
		t.Error("no exit")
	}
	if st, _ := f.Status(ctx, "files"); st.State != runtime.StateStopped || st.ExitCode != 2 {
		t.Errorf("Status after crash = %+v", st)
	}
	f.SetDown(true)
	if err := f.Start(ctx, "files"); !errors.Is(err, runtime.ErrUnavailable) {
		t.Errorf("Start while down = %v, want ErrUnavailable", err)
	}
	f.SetDown(false)
	if err := f.Start(ctx, "files"); err != nil {
		t.Fatal(err)
	}
	spec.Env = []string{"A=1"}
	if err := f.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := f.Remove(ctx, "files"); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.RemoveImage(ctx, "pic.local/files:1.0.0"); err != nil {
		t.Fatal(err)
	}
	got := f.Calls()
	want := []string{"Import /a.tar", "Ensure files", "Start files", "Start files", "Ensure files", "Remove files", "RemoveImage pic.local/files:1.0.0"}
	if len(got) != len(want) {
		t.Fatalf("calls = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("call %d = %q, want %q", i, got[i], want[i])
		}
	}
}

func TestSpecValidateAndHash(t *testing.T) {
	for _, c := range []struct {
		spec runtime.Spec
		ok   bool
	}{
		{runtime.Spec{ID: "files", Image: "x"}, true},
		{runtime.Spec{ID: "Files", Image: "x"}, false},
		{runtime.Spec{ID: "1files", Image: "x"}, false},
		{runtime.Spec{ID: "a-very-long-service-name-over-31-chars", Image: "x"}, false},
		{runtime.Spec{ID: "files"}, false},
		{runtime.Spec{ID: "files", Image: "x", Mounts: []runtime.Mount{{Source: "rel", Target: "/data"}}}, false},
		{runtime.Spec{ID: "files", Image: "x", NetNS: "netns"}, false},
	} {
		if err := c.spec.Validate(); (err == nil) != c.ok {
			t.Errorf("Validate(%+v) = %v, want ok %v", c.spec, err, c.ok)
		} else if err != nil && !errors.Is(err, runtime.ErrInvalid) {
			t.Errorf("Validate error %v does not wrap ErrInvalid", err)
		}
	}
	a := runtime.Spec{ID: "files", Image: "x"}
	b := a
	b.Env = []string{}
	if a.Hash("d1") != b.Hash("d1") {
		t.Error("nil and empty Env hash differently")
	}
	if a.Hash("d1") == a.Hash("d2") {
		t.Error("another image digest gives the same hash")
	}
	b.Args = []string{}
	if a.Hash("d1") == b.Hash("d1") {
		t.Error("empty Args (no command) hashes like nil Args (the image's)")
	}
}
