package docs

import (
	"bufio"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// envFuncs are the functions of package os (and syscall) that read or change
// the process environment.
var envFuncs = map[string]bool{
	"Getenv": true, "LookupEnv": true, "Environ": true, "ExpandEnv": true,
	"Setenv": true, "Unsetenv": true, "Clearenv": true,
}

// goFile is one parsed Go file of a package.
type goFile struct {
	name string // path relative to the module root, for messages
	test bool
	ast  *ast.File
}

// goPackage is one directory of the module with Go files.
type goPackage struct {
	path  string // relative to the module root, e.g. "pkg/imds"
	files []goFile
}

// module is the module under the root directory.
type module struct {
	path     string // module path from go.mod
	packages []goPackage
}

// loadModule parses every Go file of the module rooted at root. It skips
// hidden directories, testdata, vendor and node_modules, and directories
// holding their own go.mod (separate modules). Files are parsed whatever
// their build constraints, so a rule holds on every platform.
func loadModule(root string) (*module, error) {
	modPath, err := modulePath(filepath.Join(root, "go.mod"))
	if err != nil {
		return nil, err
	}
	m := &module{path: modPath}
	fset := token.NewFileSet()
	byDir := map[string]*goPackage{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if p != root {
				if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") ||
					name == "testdata" || name == "vendor" || name == "node_modules" {
					return filepath.SkipDir
				}
				if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return fmt.Errorf("parsing %s: %w", rel, err)
		}
		dir := filepath.ToSlash(filepath.Dir(rel))
		pkg := byDir[dir]
		if pkg == nil {
			pkg = &goPackage{path: dir}
			byDir[dir] = pkg
		}
		pkg.files = append(pkg.files, goFile{name: rel, test: strings.HasSuffix(p, "_test.go"), ast: f})
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, p := range byDir {
		m.packages = append(m.packages, *p)
	}
	sort.Slice(m.packages, func(i, j int) bool { return m.packages[i].path < m.packages[j].path })
	return m, nil
}

// modulePath reads the module directive of a go.mod file.
func modulePath(gomod string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(s.Text()), "module "); ok {
			if p := strings.Trim(strings.TrimSpace(rest), `"`); p != "" {
				return p, nil
			}
		}
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	return "", errors.New(gomod + ": no module directive")
}

// checkModule returns every way the module's packages break rules, one
// sentence each, sorted.
func checkModule(m *module, rules []rule) []string {
	var out []string
	exists := map[string]bool{}
	for _, p := range m.packages {
		exists[p.path] = true
		r, ok := ruleFor(rules, p.path)
		if !ok {
			out = append(out, fmt.Sprintf("package %s has no row in the dependency table", p.path))
			continue
		}
		for _, f := range p.files {
			out = append(out, checkFile(m.path, p.path, f, r)...)
		}
	}
	for _, r := range rules {
		found := false
		for path := range exists {
			if matches(r.pkg, path) {
				found = true
				break
			}
		}
		switch {
		case !found && !r.planned:
			out = append(out, fmt.Sprintf("the row for %s names no package of the module (mark it %s if it is yet to come)", r.pkg, plannedMark))
		case found && r.planned:
			out = append(out, fmt.Sprintf("package %s exists: drop %s from its row", r.pkg, plannedMark))
		}
	}
	sort.Strings(out)
	return out
}

// checkFile checks one file's imports and environment reads against r.
func checkFile(modPath, pkgPath string, f goFile, r rule) []string {
	var out []string
	names := map[string]string{} // local name -> import path, for os and syscall
	for _, spec := range f.ast.Imports {
		imp, err := strconv.Unquote(spec.Path.Value)
		if err != nil {
			continue // the parser accepted it, so this cannot happen
		}
		if rel, ok := moduleRelative(modPath, imp); ok {
			allowed := rel == pkgPath || matchesAny(r.allow, rel) ||
				f.test && matches("internal/...", rel)
			if !allowed {
				out = append(out, fmt.Sprintf("%s imports %s, which the row for %s does not allow", f.name, rel, r.pkg))
			}
			continue
		}
		if f.test {
			continue
		}
		if matchesAny(r.deny, imp) {
			out = append(out, fmt.Sprintf("%s imports %s, which the row for %s forbids", f.name, imp, r.pkg))
		}
		if r.readsEnv {
			continue
		}
		switch imp {
		case "flag":
			out = append(out, fmt.Sprintf("%s imports flag, but the row for %s says it reads no flags or environment", f.name, r.pkg))
		case "os", "syscall":
			name := imp
			if spec.Name != nil {
				name = spec.Name.Name
			}
			if name == "." {
				out = append(out, fmt.Sprintf("%s dot-imports %s, which hides environment reads", f.name, imp))
				continue
			}
			names[name] = imp
		}
	}
	if r.readsEnv || f.test || len(names) == 0 {
		return out
	}
	ast.Inspect(f.ast, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok || !envFuncs[sel.Sel.Name] {
			return true
		}
		if id, ok := sel.X.(*ast.Ident); ok {
			if imp, ok := names[id.Name]; ok {
				out = append(out, fmt.Sprintf("%s uses %s.%s, but the row for %s says it reads no environment", f.name, imp, sel.Sel.Name, r.pkg))
			}
		}
		return true
	})
	return out
}

// moduleRelative returns imp relative to the module root when it is one of
// the module's packages.
func moduleRelative(modPath, imp string) (string, bool) {
	if imp == modPath {
		return ".", true
	}
	rel, ok := strings.CutPrefix(imp, modPath+"/")
	return rel, ok
}
