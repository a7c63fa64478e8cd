package gobuild

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	want, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if root != want {
		t.Errorf("ModuleRoot() = %q, want %q", root, want)
	}
}

// TestBuild builds the smallest command of the module and checks the
// binary's name and mode, and that a package that does not exist is an
// error carrying go's own message.
func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	dir := filepath.Join(t.TempDir(), "bin")
	if err := Build(context.Background(), dir, "./test/podman/pause"); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: os.ModeDir | 0o755, filepath.Join(dir, "pause"): 0o755} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode()&(os.ModeDir|0o755) != want {
			t.Errorf("%s: mode %v, want at least %v", path, st.Mode(), want)
		}
	}

	err := Build(context.Background(), dir, "./no/such/package")
	if err == nil || !strings.Contains(err.Error(), "go build -trimpath -o ") || !strings.Contains(err.Error(), "no/such/package") {
		t.Errorf("building a missing package: err = %v, want go's message naming it", err)
	}
	if err := Build(context.Background(), dir); err == nil {
		t.Error("Build with no package succeeded")
	}
}
