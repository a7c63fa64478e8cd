// Package gobuild compiles this module's commands for the test bed the way
// the images do (CGO_ENABLED=0 go build -trimpath), so every test, the
// sandbox, the soak and the Kubernetes harness run binaries built alike,
// with the go command found in one way.
package gobuild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// modulePath is the module this package belongs to; ModuleRoot looks for
// its go.mod.
const modulePath = "github.com/imds-proxy/imds-proxy"

// fallbackGo is where the Go toolchain lives on the machines this project
// targets when the go command is not on PATH (sudo resets PATH, for one).
const fallbackGo = "/usr/local/go/bin/go"

// ModuleRoot returns the directory holding the module's go.mod, found from
// this source file (tests) or by walking up from the working directory (a
// binary such as the sandbox run with `go run` from the repository).
func ModuleRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		// file is <root>/internal/gobuild/gobuild.go unless built with -trimpath.
		root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
		if isModuleRoot(root) {
			return root, nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isModuleRoot(dir) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no " + modulePath + " go.mod above the working directory")
		}
		dir = parent
	}
}

func isModuleRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	return err == nil && strings.Contains(string(b), "module "+modulePath+"\n")
}

// GoCommand returns the go command to run: the one on PATH, else
// /usr/local/go/bin/go.
func GoCommand() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return fallbackGo
}

// Build compiles the packages, given relative to the module root
// ("./cmd/proxy"), into outDir with one CGO_ENABLED=0 go build -trimpath.
// Each binary is named after the last element of its package path. outDir
// and the binaries are world-readable and executable, so they can run as
// any UID (the proxy runs as 1501, clients as 1000).
func Build(ctx context.Context, outDir string, pkgs ...string) error {
	if len(pkgs) == 0 {
		return errors.New("gobuild: no package to build")
	}
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	// MkdirAll keeps the mode of a directory that exists, and the umask
	// narrows a new one.
	if err := os.Chmod(outDir, 0o755); err != nil {
		return err
	}
	// With a directory (trailing slash) as -o, go build writes each
	// package's binary under its last path element.
	args := append([]string{"build", "-trimpath", "-o", outDir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, GoCommand(), args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}
