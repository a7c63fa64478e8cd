// Package docs holds the design documents of imds-proxy. Its tests keep
// architecture.md true (the dependency table in it is parsed and checked
// against the imports of every package of the module) and every file of the
// repository self-contained: none cites notes that are not in it.
package docs

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestArchitecture fails when a package breaks the dependency table of
// architecture.md: an import its row does not allow or forbids, an
// environment read where the row says none, a package without a row, or a
// row without a package.
func TestArchitecture(t *testing.T) {
	doc, err := os.ReadFile("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := parseRules(string(doc))
	if err != nil {
		t.Fatalf("architecture.md: %v", err)
	}
	m, err := loadModule("..")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.packages) < 10 {
		t.Fatalf("found only %d packages under the module root; is the test running in docs/?", len(m.packages))
	}
	for _, v := range checkModule(m, rules) {
		t.Error(v)
	}
	if t.Failed() {
		t.Log("Fix the import, or change the dependency table in docs/architecture.md (and its picture) if the design changed.")
	}
}

// fixtureRules is the table the fixture modules are checked against.
const fixtureRules = "| Package | Owns | May import from this module | Must not import | Reads env |\n" +
	"|---|---|---|---|---|\n" +
	"| `cmd/...` | commands | `cmd/...`, `pkg/a`, `pkg/b` | — | yes |\n" +
	"| `pkg/a` | a | `pkg/b`, `internal/logging` | `flag`, `github.com/spf13/...` | no |\n" +
	"| `pkg/b` | b | — | `os/exec` | no |\n" +
	"| `internal/logging` | (planned) logging | — | — | no |\n" +
	"| `internal/...` | test bed | `internal/...`, `pkg/...` | — | yes |\n"

// writeModule writes a module named example.com/m with the given files
// (path relative to the root -> content) under a temporary directory.
func writeModule(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	files["go.mod"] = "module example.com/m\n\ngo 1.26\n"
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// goSrc returns a Go file of package pkg importing imports and with body.
func goSrc(pkg string, imports []string, body string) string {
	var b strings.Builder
	b.WriteString("package " + pkg + "\n\n")
	for _, imp := range imports {
		if strings.Contains(imp, " ") {
			b.WriteString("import " + imp + "\n") // aliased: `name "path"`
			continue
		}
		b.WriteString("import \"" + imp + "\"\n")
	}
	return b.String() + "\n" + body + "\n"
}

// cleanFixture is a module that keeps fixtureRules.
func cleanFixture() map[string]string {
	return map[string]string{
		"cmd/x/main.go":           goSrc("main", []string{"example.com/m/pkg/a", "flag", "os"}, "func main() { _ = a.A; flag.Parse(); _ = os.Getenv(\"X\") }"),
		"pkg/a/a.go":              goSrc("a", []string{"example.com/m/pkg/b", "os"}, "var A = b.B\nfunc f() { _, _ = os.Open(\"x\") }"),
		"pkg/a/a_test.go":         goSrc("a", []string{"example.com/m/internal/emu", "flag", "os"}, "var u = flag.Bool(\"update\", false, \"\")\nvar _ = emu.E\nvar _ = os.Getenv(\"T\")"),
		"pkg/a/x_test.go":         goSrc("a_test", []string{"example.com/m/pkg/a"}, "var _ = a.A"),
		"pkg/b/b.go":              goSrc("b", nil, "var B = 1"),
		"internal/emu/e.go":       goSrc("emu", []string{"example.com/m/pkg/a", "os"}, "var E = a.A\nvar _ = os.Environ()"),
		"pkg/a/testdata/bad.go":   goSrc("bad", []string{"example.com/m/cmd/x"}, ""),
		"nested/go.mod":           "module example.com/nested\n",
		"nested/n.go":             goSrc("n", []string{"example.com/m/cmd/x"}, ""),
		".hidden/h.go":            goSrc("h", []string{"example.com/m/cmd/x"}, ""),
		"pkg/a/node_modules/x.go": goSrc("x", []string{"example.com/m/cmd/x"}, ""),
	}
}

// TestCheckModule shows the checker failing on each kind of violation, with
// the exact message, and passing on a module that keeps the rules.
func TestCheckModule(t *testing.T) {
	rules, err := parseRules(fixtureRules)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change map[string]string // files added to or replacing cleanFixture's
		want   []string
	}{
		{
			name: "clean",
			want: nil,
		},
		{
			name:   "pkg imports cmd",
			change: map[string]string{"pkg/b/bad.go": goSrc("b", []string{"example.com/m/cmd/x"}, "")},
			want:   []string{"pkg/b/bad.go imports cmd/x, which the row for pkg/b does not allow"},
		},
		{
			name:   "pkg imports the test bed",
			change: map[string]string{"pkg/a/bad.go": goSrc("a", []string{"example.com/m/internal/emu"}, "")},
			want:   []string{"pkg/a/bad.go imports internal/emu, which the row for pkg/a does not allow"},
		},
		{
			name:   "dependency against the arrow",
			change: map[string]string{"pkg/b/bad.go": goSrc("b", []string{"example.com/m/pkg/a"}, "")},
			want:   []string{"pkg/b/bad.go imports pkg/a, which the row for pkg/b does not allow"},
		},
		{
			name:   "forbidden module, by subtree pattern",
			change: map[string]string{"pkg/a/bad.go": goSrc("a", []string{"github.com/spf13/cobra"}, "")},
			want:   []string{"pkg/a/bad.go imports github.com/spf13/cobra, which the row for pkg/a forbids"},
		},
		{
			name:   "forbidden standard package",
			change: map[string]string{"pkg/b/bad.go": goSrc("b", []string{"os/exec"}, "")},
			want:   []string{"pkg/b/bad.go imports os/exec, which the row for pkg/b forbids"},
		},
		{
			name:   "flag in a package that reads no flags",
			change: map[string]string{"pkg/b/bad.go": goSrc("b", []string{"flag"}, "var _ = flag.Parse")},
			want:   []string{"pkg/b/bad.go imports flag, but the row for pkg/b says it reads no flags or environment"},
		},
		{
			name:   "aliased os reading the environment",
			change: map[string]string{"pkg/b/bad.go": goSrc("b", []string{`sys "os"`}, "func f() { _, _ = sys.LookupEnv(\"A\"); _ = sys.Environ() }")},
			want: []string{
				"pkg/b/bad.go uses os.Environ, but the row for pkg/b says it reads no environment",
				"pkg/b/bad.go uses os.LookupEnv, but the row for pkg/b says it reads no environment",
			},
		},
		{
			name:   "syscall.Getenv",
			change: map[string]string{"pkg/b/bad.go": goSrc("b", []string{"syscall"}, "func f() { _, _ = syscall.Getenv(\"A\") }")},
			want:   []string{"pkg/b/bad.go uses syscall.Getenv, but the row for pkg/b says it reads no environment"},
		},
		{
			name:   "dot-imported os",
			change: map[string]string{"pkg/b/bad.go": goSrc("b", []string{`. "os"`}, "var _ = Getpid")},
			want:   []string{"pkg/b/bad.go dot-imports os, which hides environment reads"},
		},
		{
			name:   "a local variable named like os is not os",
			change: map[string]string{"pkg/b/ok.go": goSrc("b", nil, "type e struct{}\nfunc (e) Getenv(string) string { return \"\" }\nfunc f() { var os e; _ = os.Getenv(\"A\") }")},
			want:   nil,
		},
		{
			name:   "a package without a row",
			change: map[string]string{"pkg/c/c.go": goSrc("c", nil, "")},
			want:   []string{"package pkg/c has no row in the dependency table"},
		},
		{
			name:   "a planned package that exists",
			change: map[string]string{"internal/logging/l.go": goSrc("logging", nil, "")},
			want:   []string{"package internal/logging exists: drop (planned) from its row"},
		},
		{
			name:   "build constraints do not hide a file",
			change: map[string]string{"pkg/b/b_windows.go": "//go:build windows\n\n" + goSrc("b", []string{"example.com/m/pkg/a"}, "")},
			want:   []string{"pkg/b/b_windows.go imports pkg/a, which the row for pkg/b does not allow"},
		},
		{
			name:   "test files may not import commands either",
			change: map[string]string{"pkg/b/b_test.go": goSrc("b", []string{"example.com/m/cmd/x"}, "")},
			want:   []string{"pkg/b/b_test.go imports cmd/x, which the row for pkg/b does not allow"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := cleanFixture()
			for k, v := range tt.change {
				files[k] = v
			}
			m, err := loadModule(writeModule(t, files))
			if err != nil {
				t.Fatal(err)
			}
			if got := checkModule(m, rules); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("violations:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestCheckModuleStaleRow: a row whose package is gone is reported.
func TestCheckModuleStaleRow(t *testing.T) {
	rules, err := parseRules(fixtureRules + "| `pkg/gone` | renamed long ago | — | — | no |\n")
	if err != nil {
		t.Fatal(err)
	}
	m, err := loadModule(writeModule(t, cleanFixture()))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"the row for pkg/gone names no package of the module (mark it (planned) if it is yet to come)"}
	if got := checkModule(m, rules); !reflect.DeepEqual(got, want) {
		t.Errorf("violations:\n got %q\nwant %q", got, want)
	}
}

func TestLoadModuleErrors(t *testing.T) {
	if _, err := loadModule(t.TempDir()); err == nil {
		t.Error("a directory without go.mod loaded")
	}
	root := writeModule(t, map[string]string{"pkg/a/a.go": "package a\nimport (\n"})
	if _, err := loadModule(root); err == nil || !strings.Contains(err.Error(), "parsing pkg/a/a.go") {
		t.Errorf("a file that does not parse: err = %v, want one naming pkg/a/a.go", err)
	}
	root = writeModule(t, map[string]string{})
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("go 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadModule(root); err == nil || !strings.Contains(err.Error(), "no module directive") {
		t.Errorf("go.mod without module: err = %v", err)
	}
}

func TestParseRules(t *testing.T) {
	const header = "| Package | Owns | May import from this module | Must not import | Reads env |\n|---|---|---|---|---|\n"
	got, err := parseRules("# Title\n\ntext | with a pipe |\n\n" + header +
		"| `pkg/a` | the a package, with `code` and | pipes | — | `flag`, `os/exec` | no |\n")
	if err == nil {
		t.Fatalf("a row with a stray pipe parsed: %+v", got)
	}

	got, err = parseRules("intro\n\n" + header +
		"| `pkg/a` | a, with `code` in prose | `pkg/b`, `internal/...` | `flag`,`github.com/x/...` | no |\n" +
		"|  `cmd/...`  | (planned) commands | — |  | yes |\n" +
		"\n| `pkg/after` | not in the table | — | — | no |\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []rule{
		{pkg: "pkg/a", allow: []string{"pkg/b", "internal/..."}, deny: []string{"flag", "github.com/x/..."}},
		{pkg: "cmd/...", planned: true, readsEnv: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rules:\n got %+v\nwant %+v", got, want)
	}

	bad := []struct{ name, doc, wantErr string }{
		{"no table", "# nothing here\n", "no table with the header"},
		{"other table", "| a | b |\n|---|---|\n| `x` | y |\n", "no table with the header"},
		{"header only", header, "has no rows"},
		{"no delimiter", strings.SplitN(header, "\n", 2)[0] + "\n| `pkg/a` | a | — | — | no |\n", "not followed by a |---| delimiter row"},
		{"bad delimiter", strings.SplitN(header, "\n", 2)[0] + "\n|---|x|---|---|---|\n", "delimiter row"},
		{"too few cells", header + "| `pkg/a` | a | — | no |\n", "4 cells, want 5"},
		{"too many cells", header + "| `pkg/a` | a | — | — | no | extra |\n", "6 cells, want 5"},
		{"bare package", header + "| pkg/a | a | — | — | no |\n", "want backquoted patterns"},
		{"two packages", header + "| `pkg/a`, `pkg/b` | a | — | — | no |\n", "exactly one package pattern"},
		{"no package", header + "| — | a | — | — | no |\n", "exactly one package pattern"},
		{"empty owns", header + "| `pkg/a` |  | — | — | no |\n", "is empty"},
		{"prose in allow", header + "| `pkg/a` | a | `pkg/b` and more | — | no |\n", "want a comma after"},
		{"unterminated", header + "| `pkg/a` | a | `pkg/b | — | no |\n", "unterminated backquote"},
		{"trailing comma", header + "| `pkg/a` | a | `pkg/b`, | — | no |\n", "want backquoted patterns"},
		{"external allow", header + "| `pkg/a` | a | `github.com/x/y` | — | no |\n", "not a path inside this module"},
		{"bad env", header + "| `pkg/a` | a | — | — | maybe |\n", `want yes or no`},
		{"absolute pattern", header + "| `/pkg/a` | a | — | — | no |\n", "not an import path pattern"},
		{"dotdot pattern", header + "| `pkg/../cmd` | a | — | — | no |\n", "not an import path pattern"},
		{"glob pattern", header + "| `pkg/*` | a | — | — | no |\n", "not an import path pattern"},
		{"inner dots", header + "| `pkg/.../x` | a | — | — | no |\n", "not an import path pattern"},
		{"empty pattern", header + "| `` | a | — | — | no |\n", "not an import path pattern"},
		{"duplicate", header + "| `pkg/a` | a | — | — | no |\n| `pkg/a` | again | — | — | no |\n", "already has a row (line 3)"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := parseRules(tt.doc)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseRules = %+v, %v; want an error containing %q", rules, err, tt.wantErr)
			}
		})
	}
}

func TestRuleFor(t *testing.T) {
	rules := []rule{{pkg: "internal/..."}, {pkg: "internal/logging"}, {pkg: "cmd/..."}, {pkg: "cmd/proxy/..."}}
	for path, want := range map[string]string{
		"internal/podenv":        "internal/...",
		"internal/podenv/x":      "internal/...",
		"internal":               "internal/...",
		"internal/logging":       "internal/logging",
		"internal/logging/x":     "internal/...",
		"cmd/proxy":              "cmd/proxy/...",
		"cmd/proxy/app":          "cmd/proxy/...",
		"cmd/init/app":           "cmd/...",
		"cmdx":                   "",
		"internalx/logging":      "",
		"pkg/imds":               "",
		"cmd/proxyx/app":         "cmd/...",
		"internal/logging/../x":  "internal/...",
		"internal/logging_extra": "internal/...",
	} {
		r, ok := ruleFor(rules, path)
		if got := r.pkg; got != want || ok != (want != "") {
			t.Errorf("ruleFor(%q) = %q, %v; want %q", path, got, ok, want)
		}
	}
}

// FuzzParseRules: parseRules never panics, and what it accepts is well
// formed: one row per package, every pattern valid and taken from the input.
func FuzzParseRules(f *testing.F) {
	doc, err := os.ReadFile("architecture.md")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(doc))
	f.Add(fixtureRules)
	f.Add("| Package | Owns | May import from this module | Must not import | Reads env |\n|-|-|-|-|-|\n| `a` | b | `c/...` | `d` | yes |\n")
	f.Add("|\n||\n| ` | ` |\n")
	f.Fuzz(func(t *testing.T, doc string) {
		rules, err := parseRules(doc)
		if err != nil {
			return
		}
		if len(rules) == 0 {
			t.Fatal("no error and no rules")
		}
		seen := map[string]bool{}
		for _, r := range rules {
			if seen[r.pkg] {
				t.Fatalf("two rows for %q", r.pkg)
			}
			seen[r.pkg] = true
			all := append(append([]string{r.pkg}, r.allow...), r.deny...)
			for _, p := range all {
				if checkPattern(p) != nil || !strings.Contains(doc, "`"+p+"`") {
					t.Fatalf("accepted pattern %q is invalid or not in the input", p)
				}
			}
		}
	})
}
