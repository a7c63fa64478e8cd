package podenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Names of the binaries Build writes into its output directory.
const (
	ProxyBin    = "proxy"
	InitBin     = "proxy-init"
	EmulatorBin = "entraemu"
)

// binaries lists each binary with the package it is built from, relative
// to the module root.
var binaries = []struct{ name, pkg string }{
	{ProxyBin, "cmd/proxy"},
	{InitBin, "cmd/init"},
	{EmulatorBin, "test/emulator"},
}

// ModuleRoot returns the directory holding the module's go.mod, found from
// this source file (tests) or by walking up from the working directory (a
// binary such as the sandbox run with `go run` from the repository).
func ModuleRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		// file is <root>/internal/podenv/build.go unless built with -trimpath.
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
			return "", fmt.Errorf("no imds-proxy go.mod above the working directory")
		}
		dir = parent
	}
}

func isModuleRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	return err == nil && strings.Contains(string(b), "module github.com/imds-proxy/imds-proxy\n")
}

// Build compiles proxy, proxy-init and entraemu (from ./cmd/proxy, ./cmd/init
// and ./test/emulator) into outDir with CGO_ENABLED=0 go build -trimpath,
// as the images do. outDir and the binaries are made world-readable and
// executable so the proxy can run as UID 1501. It uses the go command on
// PATH, else /usr/local/go/bin/go.
func Build(ctx context.Context, outDir string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(outDir, 0o755); err != nil {
		return err
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = "/usr/local/go/bin/go"
	}
	// One go build for the three packages: it writes each binary under the
	// last element of its package path, renamed afterwards.
	args := []string{"build", "-trimpath", "-o", outDir + "/"}
	for _, bin := range binaries {
		args = append(args, "./"+bin.pkg)
	}
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	for _, bin := range binaries {
		built := filepath.Join(outDir, filepath.Base(bin.pkg))
		if built == filepath.Join(outDir, bin.name) {
			continue
		}
		if err := os.Rename(built, filepath.Join(outDir, bin.name)); err != nil {
			return err
		}
	}
	return nil
}
