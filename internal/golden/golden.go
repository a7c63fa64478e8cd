// Package golden compares what a test produced with a file under the
// package's testdata/ directory, and rewrites that file instead when the
// test binary runs with -update:
//
//	go test ./pkg/imds -run TestTokenReply -update
//
// Review the rewritten files with git diff before committing them.
package golden

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ with the current output")

// Check fails t unless got equals the contents of testdata/name; with
// -update it writes got there first (creating the file), so the check
// passes and git shows the change.
func Check(t testing.TB, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the golden file: %v (go test -run '%s' -update writes it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -run '%s' -update rewrites it if the change is intended)\ngot:\n%s\nwant:\n%s", path, t.Name(), got, want)
	}
}
