package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/pic-cell/cell/cell/setup"
)

// SetupCodeName is the daemon's own setup code file in the data directory: the
// default of -setup-code-file, and where a code the daemon makes is kept.
const SetupCodeName = "setup-code"

// maxSetupCodeFile bounds what is read of a setup code file.
const maxSetupCodeFile = 1024

// wizardGate is what setupGate needs of the wizard (cell/setup).
type wizardGate interface {
	SetupComplete() (bool, error)
	SetCode(code string) error
	SetHostnames(names ...string)
}

// setupGate gives the wizard its setup code and the host's name at start.
//
// Once setup is complete there is no code (the wizard refuses every change) and
// the daemon's own code file is removed. Otherwise the code is read from file
// (-setup-code-file: on the image the boot partition's, which the init copies to
// /run/cell/setup-code). Where there is none, the daemon keeps a code of its own
// in DATA/setup-code (mode 0600): made on the first start without one and
// written to the log once, at warn, so that `make run` shows it and, on the
// device, the console does (the log book echoes to stderr). The wizard keeps
// only the code's hash; at info the log names the file, never the code.
func setupGate(w wizardGate, file, dataDir string, log *slog.Logger) error {
	if host, err := os.Hostname(); err == nil {
		w.SetHostnames(host)
	}
	own := filepath.Join(dataDir, SetupCodeName)
	done, err := w.SetupComplete()
	if err != nil {
		return err
	}
	if done {
		if err := os.Remove(own); err == nil {
			log.Info("setup is complete: removed the setup code, which opens nothing any more", "file", own)
		} else if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("setup is complete, but the old setup code file stays", "file", own, "err", err)
		}
		return nil
	}
	if file == "" {
		file = own
	}
	for _, f := range []string{file, own} {
		code, err := readSetupCode(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			err = w.SetCode(code)
		}
		if err != nil {
			// A broken file must not keep the cell from starting: the code of
			// its own (below) opens the wizard instead.
			log.Error("setup code file unusable", "file", f, "err", err)
			continue
		}
		log.Info("setup is not complete: the setup wizard asks for the setup code in "+f, "file", f)
		return nil
	}
	code, err := setup.NewCode(rand.Reader)
	if err != nil {
		return err
	}
	if err := writeSetupCode(own, code); err != nil {
		return fmt.Errorf("setup code: %w", err)
	}
	if err := w.SetCode(code); err != nil {
		return err
	}
	log.Warn("setup is not complete: the setup wizard asks for this setup code (send it as the X-Setup-Code header); "+
		"it is also in "+own+" until setup is complete", "setup_code", code, "file", own)
	return nil
}

// readSetupCode reads a code file: the code on its first non-empty line.
func readSetupCode(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, maxSetupCodeFile+1))
	if err != nil {
		return "", err
	}
	if len(buf) > maxSetupCodeFile {
		return "", fmt.Errorf("longer than %d bytes: not a setup code", maxSetupCodeFile)
	}
	for _, line := range strings.Split(string(buf), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			return line, nil
		}
	}
	return "", errors.New("the file is empty")
}

// writeSetupCode writes the code to path with mode 0600, whole or not at all.
func writeSetupCode(path, code string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".setup-code-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(code + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
