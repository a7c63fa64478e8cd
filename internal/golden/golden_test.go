package golden

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	errors, fatals []string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Name() string              { return "TestX" }
func (r *recorder) Errorf(f string, a ...any) { r.errors = append(r.errors, fmt.Sprintf(f, a...)) }
func (r *recorder) Fatal(a ...any)            { r.fatals = append(r.fatals, fmt.Sprint(a...)); panic(r) }
func (r *recorder) Fatalf(f string, a ...any) {
	r.fatals = append(r.fatals, fmt.Sprintf(f, a...))
	panic(r)
}

// check runs Check against a recorder in dir, recovering from its Fatal.
func check(t *testing.T, dir, name, got string) *recorder {
	t.Helper()
	r := &recorder{TB: t}
	t.Chdir(dir)
	func() {
		defer func() {
			if p := recover(); p != nil && p != any(r) {
				panic(p)
			}
		}()
		Check(r, name, got)
	}()
	return r
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "testdata"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "testdata", "a.golden"), []byte("same\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if r := check(t, dir, "a.golden", "same\n"); len(r.errors)+len(r.fatals) != 0 {
		t.Errorf("equal output failed: %v %v", r.errors, r.fatals)
	}
	r := check(t, dir, "a.golden", "other\n")
	if len(r.errors) != 1 || !strings.Contains(r.errors[0], "output differs from testdata/a.golden") ||
		!strings.Contains(r.errors[0], "got:\nother\n\nwant:\nsame\n") {
		t.Errorf("different output: %q", r.errors)
	}
	r = check(t, dir, "missing.golden", "x")
	if len(r.fatals) != 1 || !strings.Contains(r.fatals[0], "-update writes it") {
		t.Errorf("missing file: %q", r.fatals)
	}

	*update = true
	t.Cleanup(func() { *update = false })
	if r := check(t, dir, "sub/new.golden", "fresh\n"); len(r.errors)+len(r.fatals) != 0 {
		t.Errorf("-update failed: %v %v", r.errors, r.fatals)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "testdata", "sub", "new.golden")); err != nil || string(b) != "fresh\n" {
		t.Errorf("-update wrote %q, %v", b, err)
	}
}
