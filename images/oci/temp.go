package oci

import (
	"context"
	"os"
	"path/filepath"
	"sync"
)

// TempArchives are the first-party archives built once per process into a
// temporary directory: the test suites that run the services (the daemon's,
// the browser's) share one build. The zero value builds from the module at
// Module (a path, relative to the working directory).
type TempArchives struct {
	Module string

	once sync.Once
	dir  string
	err  error
}

// Dir builds the archives the first time and returns their directory.
func (a *TempArchives) Dir() (string, error) {
	a.once.Do(func() {
		root, err := filepath.Abs(a.Module)
		if err != nil {
			a.err = err
			return
		}
		if a.dir, a.err = os.MkdirTemp("", "cell-images-"); a.err != nil {
			return
		}
		_, a.err = BuildFirstParty(context.Background(), root, a.dir)
	})
	return a.dir, a.err
}

// Remove deletes the directory, if one was made.
func (a *TempArchives) Remove() {
	if a.dir != "" {
		os.RemoveAll(a.dir)
	}
}
