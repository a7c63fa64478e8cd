package podenv

import (
	"context"
	"os"
	"path/filepath"

	"github.com/imds-proxy/imds-proxy/internal/gobuild"
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

// Build compiles proxy, proxy-init and entraemu (from ./cmd/proxy, ./cmd/init
// and ./test/emulator) into outDir with gobuild.Build, as the images build
// them, world-readable so the proxy can run as UID 1501.
func Build(ctx context.Context, outDir string) error {
	pkgs := make([]string, 0, len(binaries))
	for _, bin := range binaries {
		pkgs = append(pkgs, "./"+bin.pkg)
	}
	if err := gobuild.Build(ctx, outDir, pkgs...); err != nil {
		return err
	}
	// go build names each binary after the last element of its package
	// path; the harness knows them by the names the images give them.
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
